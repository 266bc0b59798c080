"""The policy model a run starts from (training) or scores (evaluation).

Evaluation loads a trained run's policy: ``find_weights`` picks a run's ``hf_model`` export or its newest
checkpoint, the run's Hydra overrides (``.hydra/overrides.yaml``) rebuild the same model and agent
settings, and ``policy_engine`` plays the policy on any env through the rollout engine.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.backends import make_backend
from agents.model import build_tiny_model, load_model_and_tokenizer, load_tokenizer, resolve_model_location
from agents.rollout import RolloutEngine
from algos.training.checkpoint import checkpoint_state_dict, load_weights
from algos.training.compose import compose_config
from algos.training.layout import TRAINER_STATE_FILE, checkpoints, export_step, exported_model
from algos.training.lora import adapter_base, apply_lora, load_adapter
from algos.training.schema import TINY_RANDOM_MODEL, ModelConfig, TurnRLConfig

EMBEDDED = "embedded"
# Run overrides that do not describe the policy or the agent (the env is chosen per evaluation).
_RUN_ONLY_PREFIXES = ("hydra.", "trainer.", "logger", "system.", "env=")


def load_policy(model: ModelConfig, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``model.path``: ``tiny-random`` builds a random 2-layer model (tests), an adapter folder (a LoRA
    run's ``hf_model/adapter``) its base model with those adapters, else agents' loader (null = the
    embedded SmolLM2-135M-Instruct, a local folder, or a hub name). ``model.lora_rank > 0`` adds fresh
    adapters (``algos.training.lora``)."""
    base = adapter_base(model.path, model)
    if base is not None:
        policy, tokenizer = load_policy(base, seed)
        return load_adapter(policy, model.path), tokenizer
    if model.path == TINY_RANDOM_MODEL:
        tokenizer = load_tokenizer(None)
        policy = build_tiny_model(tokenizer, seed=seed)
    else:
        policy, tokenizer = load_model_and_tokenizer(model.path, dtype=model.dtype)
    return apply_lora(policy, model), tokenizer


@dataclass
class Policy:
    """A loaded policy and the Hydra overrides that describe it (model path, agent settings)."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    overrides: list[str]
    description: str
    trained_env: str | None = None
    """The checkpoint's env: its ``env.*`` overrides apply only when evaluating on it."""


def find_weights(path: Path) -> tuple[Path, Path]:
    """(run dir, weights) of a run dir, its ``hf_model`` or ``checkpoints`` dir, or a ``global_step_<k>`` dir:
    weights are an ``hf_model`` export or a ``global_step_<k>`` dir. A run dir gives its export unless its
    newest checkpoint holds a later step."""
    path = Path(path).resolve()
    if (path / TRAINER_STATE_FILE).is_file():
        weights = path
    else:
        found = checkpoints(path / "checkpoints") or checkpoints(path)
        export = exported_model(path)
        if export is not None and (not found or found[-1][0] <= export_step(export)):
            weights = export
        elif found:
            weights = found[-1][1]
        else:
            raise ValueError(f"--checkpoint {path}: no hf_model export and no complete global_step_<k> "
                             "checkpoint in it or in its checkpoints/ folder")
    run_dir = next((parent for parent in weights.parents if (parent / ".hydra").is_dir()), None)
    if run_dir is None:
        raise ValueError(f"--checkpoint {weights}: no run dir with .hydra/overrides.yaml above it")
    return run_dir, weights


def run_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides that shape the policy and agent (not its dirs or logging)."""
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return [item for item in overrides if not item.lstrip("+~").startswith(_RUN_ONLY_PREFIXES)]


def run_env(run_dir: Path) -> str:
    """The env a run trained on (its resolved ``env.name``)."""
    return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["env"]["name"]


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options :func:`load_eval_policy` reads: ``--checkpoint`` or ``--model``, and
    repeatable ``--override KEY=VALUE``."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path,
                        help="run dir, its hf_model/ or checkpoints/ dir, or a global_step_<k> dir")
    source.add_argument("--model", help=f"base model: {EMBEDDED} (default), {TINY_RANDOM_MODEL}, a folder or hub name")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override for the agent, e.g. agent_proxy.max_turn=5 (repeatable)")


def load_eval_policy(checkpoint: Path | None, model: str | None, extra: Sequence[str] = ()) -> Policy:
    """The policy of ``checkpoint`` (its export, or its run's model with the checkpoint's weights), else the
    base ``model``: ``embedded`` (the default SmolLM2), ``tiny-random``, or a local folder / hub name."""
    trained_env, step_dir = None, None
    if checkpoint is not None:
        run_dir, weights = find_weights(checkpoint)
        trained_env = run_env(run_dir)
        if exported_model(weights) is not None:  # a model folder: load it as the model path
            overrides = [*run_overrides(run_dir), f"actor_rollout_ref.model.path='{weights}'",
                         "actor_rollout_ref.model.lora_rank=0", *extra]  # a LoRA run exports merged weights
            description = f"{run_dir.name} @ {weights.name} (step {export_step(weights)})"
        else:
            step_dir = weights
            overrides = [*run_overrides(run_dir), *extra]
            description = f"{run_dir.name} @ {step_dir.name}"
    else:
        model = model or EMBEDDED
        overrides = [f"actor_rollout_ref.model.path={'null' if model == EMBEDDED else model}", *extra]
        description = f"base model {model}"
    config = compose_config([f"env={trained_env or 'bandit'}", *overrides])
    policy, tokenizer = load_policy(config.actor_rollout_ref.model, config.seed)
    if step_dir is not None:
        load_weights(policy, checkpoint_state_dict(step_dir))
    return Policy(policy.eval(), tokenizer, overrides, description, trained_env)


def policy_engine(policy: Policy, env: str) -> tuple[RolloutEngine, TurnRLConfig]:
    """A rollout engine for ``env`` with the policy's agent settings and generation backend, and its config."""
    overrides = [item for item in policy.overrides
                 if env == policy.trained_env or not item.lstrip("+~").startswith("env.")]
    config = compose_config([f"env={env}", *overrides])
    path = config.actor_rollout_ref.model.path
    model_dir = None if path == TINY_RANDOM_MODEL else resolve_model_location(path)
    rollout = config.actor_rollout_ref.rollout
    backend = make_backend(rollout.name, policy.model, policy.tokenizer, model_dir, kv_cache_gib=rollout.kv_cache_gib)
    backend.update_weights(policy.model)
    return RolloutEngine(config.agent_config(show_progress=True), policy.tokenizer, backend), config

