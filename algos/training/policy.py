"""The policy model a run starts from (training) or scores (evaluation)."""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.model import build_tiny_model, load_model_and_tokenizer, load_tokenizer
from algos.training.schema import TINY_RANDOM_MODEL, ModelConfig


def load_policy(model: ModelConfig, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``model.path``: ``tiny-random`` builds a random 2-layer model (tests), else agents' loader
    (null = the embedded SmolLM2-135M-Instruct, a local folder, or a hub name)."""
    if model.path == TINY_RANDOM_MODEL:
        tokenizer = load_tokenizer(None)
        return build_tiny_model(tokenizer, seed=seed), tokenizer
    return load_model_and_tokenizer(model.path, dtype=model.dtype)
