"""Agents: the policy model, generation backends and the multi-turn rollout engine."""

from agents.backends import Backend, HFBackend, SamplingParams, make_backend
from agents.config import AgentConfig
from agents.model import build_tiny_model, default_model_dir, load_model_and_tokenizer, load_tokenizer
from agents.parsing import ParsedReply, parse_reply
from agents.rollout import RolloutBatch, RolloutEngine

__all__ = [
    "AgentConfig",
    "Backend",
    "HFBackend",
    "ParsedReply",
    "RolloutBatch",
    "RolloutEngine",
    "SamplingParams",
    "build_tiny_model",
    "default_model_dir",
    "load_model_and_tokenizer",
    "load_tokenizer",
    "make_backend",
    "parse_reply",
]
