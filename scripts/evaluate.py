"""Evaluate a trained checkpoint or a base model on held-out levels: success rate, mean reward, mean
turns and format-error rate per env, greedy and sampled, as JSON and a Markdown table.

    python scripts/evaluate.py --checkpoint runs/compare/bandit/DrGRPO-Soft-seed0 --out eval/soft
    python scripts/evaluate.py --model embedded --envs bandit,sokoban,frozenlake --num-seeds 64 --out eval/base

``--checkpoint`` takes a run dir (its ``hf_model`` export, or its newest checkpoint when that one is
newer or there is no export), its ``hf_model`` or ``checkpoints`` dir, or one ``global_step_<k>`` dir;
the run's Hydra overrides (``.hydra/overrides.yaml``) rebuild the same model and agent settings.
The levels are seeds ``es_manager.val_seed_start + i`` for ``i < --num-seeds`` (the trainer's
validation levels, never used for training). Greedy plays one episode per level;
sampled plays ``--samples`` per level at ``--temperature`` with a fixed sampling seed.
``format_error_rate`` = turns with a missing or invalid action / turns played.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from agents.backends import SamplingParams, make_backend  # noqa: E402
from agents.model import resolve_model_location  # noqa: E402
from agents.rollout import RolloutEngine  # noqa: E402
from algos.training.checkpoint import (  # noqa: E402
    TRAINER_STATE_FILE,
    checkpoint_state_dict,
    checkpoints,
    load_weights,
)
from algos.training.export import export_step, exported_model  # noqa: E402
from algos.training.policy import load_policy  # noqa: E402
from algos.training.schema import TINY_RANDOM_MODEL, TurnRLConfig, register_schema, validate  # noqa: E402

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
EMBEDDED = "embedded"
MODES = ("greedy", "sampled")
METRICS = {  # result key -> RolloutBatch.metrics key
    "success_rate": "rollout/success_rate",
    "mean_reward": "rollout/mean_reward",
    "mean_turns": "rollout/mean_turns",
    "format_error_rate": "rollout/format_error_rate",
}
_EVAL_STREAM = 2  # sampling stream distinct from the trainer's train (0) and validation (1) streams
# Run overrides that do not describe the policy or the agent (the env is chosen per evaluation).
_RUN_ONLY_PREFIXES = ("hydra.", "trainer.", "logger", "system.", "env=")

register_schema()


@dataclass
class Policy:
    """A loaded policy and the Hydra overrides that describe it (model path, agent settings)."""

    model: torch.nn.Module
    tokenizer: object
    overrides: list[str]
    description: str
    trained_env: str | None = None
    """The checkpoint's env: its ``env.*`` overrides apply only when evaluating on it."""


def find_weights(path: Path) -> tuple[Path, Path]:
    """(run dir, weights) for ``--checkpoint``: weights are an ``hf_model`` export or a ``global_step_<k>``
    dir. A run dir gives its export unless its newest checkpoint holds a later step."""
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
    return yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["env"]["name"]


def model_overrides(model: str) -> list[str]:
    """``--model``: embedded (the default SmolLM2), tiny-random, or a local folder / hub name."""
    return [f"actor_rollout_ref.model.path={'null' if model == EMBEDDED else model}"]


def compose_config(overrides: list[str]) -> TurnRLConfig:
    """The validated config of ``conf/`` with ``overrides`` (the last value of a key wins)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return validate(compose(config_name="config", overrides=overrides))


def load_eval_policy(checkpoint: Path | None, model: str | None, extra: list[str] = ()) -> Policy:
    """The policy of ``checkpoint`` (its export, or its run's model with the checkpoint's weights), else the
    base ``model``."""
    trained_env, step_dir = None, None
    if checkpoint is not None:
        run_dir, weights = find_weights(checkpoint)
        trained_env = run_env(run_dir)
        if exported_model(weights) is not None:  # a model folder: load it as the model path
            overrides = [*run_overrides(run_dir), f"actor_rollout_ref.model.path='{weights}'", *extra]
            description = f"{run_dir.name} @ {weights.name} (step {export_step(weights)})"
        else:
            step_dir = weights
            overrides = [*run_overrides(run_dir), *extra]
            description = f"{run_dir.name} @ {step_dir.name}"
    else:
        overrides = [*model_overrides(model or EMBEDDED), *extra]
        description = f"base model {model or EMBEDDED}"
    config = compose_config([f"env={trained_env or 'bandit'}", *overrides])
    policy, tokenizer = load_policy(config.actor_rollout_ref.model, config.seed)
    if step_dir is not None:
        load_weights(policy, checkpoint_state_dict(step_dir))
    return Policy(policy.eval(), tokenizer, overrides, description, trained_env)


def make_engine(policy: Policy, env: str) -> tuple[RolloutEngine, TurnRLConfig]:
    """A rollout engine for ``env`` with the policy's agent settings and generation backend."""
    overrides = [item for item in policy.overrides
                 if env == policy.trained_env or not item.lstrip("+~").startswith("env.")]
    config = compose_config([f"env={env}", *overrides])
    path = config.actor_rollout_ref.model.path
    model_dir = None if path == TINY_RANDOM_MODEL else resolve_model_location(path)
    rollout = config.actor_rollout_ref.rollout
    backend = make_backend(rollout.name, policy.model, policy.tokenizer, model_dir, kv_cache_gib=rollout.kv_cache_gib,
                           multi_turn=config.agent_proxy.max_turn > 1)
    backend.update_weights(policy.model)
    return RolloutEngine(config.agent_config(), policy.tokenizer, backend), config


def sampling(mode: str, config: TurnRLConfig, temperature: float, seed: int) -> SamplingParams:
    max_new_tokens = config.actor_rollout_ref.rollout.response_length
    if mode == "greedy":
        return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)
    return SamplingParams(temperature=temperature, top_p=config.actor_rollout_ref.rollout.top_p,
                          max_new_tokens=max_new_tokens, seed=seed)


@torch.no_grad()
def evaluate(policy: Policy, envs: list[str], num_seeds: int, modes: list[str] = MODES, samples: int = 4,
             temperature: float = 1.0, seed: int = 0) -> list[dict]:
    """One result per (env, mode): episodes played and the four metrics, averaged over episodes."""
    if num_seeds < 1 or samples < 1:
        raise ValueError(f"num_seeds={num_seeds}, samples={samples} are invalid; allowed: ints >= 1")
    unknown = [mode for mode in modes if mode not in MODES]
    if unknown:
        raise ValueError(f"modes {unknown} are unknown; allowed: {list(MODES)}")
    results = []
    for env in envs:
        engine, config = make_engine(policy, env)
        first = config.es_manager.val_seed_start
        for mode in modes:
            per_level = 1 if mode == "greedy" else samples
            batch = engine.play(list(range(first, first + num_seeds)), per_level,
                                sampling(mode, config, temperature, seed), (_EVAL_STREAM, MODES.index(mode)),
                                f"{env} {mode}")
            results.append({"env": env, "mode": mode, "episodes": len(batch), "levels": num_seeds,
                            "first_seed": first,
                            **{name: batch.metrics[key] for name, key in METRICS.items()}})
    return results


def markdown_table(results: list[dict], description: str) -> str:
    lines = [f"Policy: {description}", "", "| env | mode | episodes | success rate | mean reward | mean turns | "
             "format-error rate |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['env']} | {r['mode']} | {r['episodes']} | {r['success_rate']:.3f} | "
                     f"{r['mean_reward']:.3f} | {r['mean_turns']:.2f} | {r['format_error_rate']:.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--checkpoint", type=Path, help="run dir, its hf_model/ or checkpoints/ dir, or a global_step_<k> dir")
    source.add_argument("--model", help=f"base model: {EMBEDDED} (default), {TINY_RANDOM_MODEL}, a folder or hub name")
    parser.add_argument("--envs", help="comma-separated envs (default: the run's env; all three for a base model)")
    parser.add_argument("--num-seeds", type=int, default=32, help="held-out levels per env (default 32)")
    parser.add_argument("--modes", default="greedy,sampled", help="greedy, sampled or both (default)")
    parser.add_argument("--samples", type=int, default=4, help="sampled episodes per level (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra override for the agent, e.g. agent_proxy.max_turn=5 (repeatable)")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix: writes .json and .md")
    args = parser.parse_args(argv)
    try:
        policy = load_eval_policy(args.checkpoint, args.model, args.override)
        if args.envs:
            envs = args.envs.split(",")
        else:
            envs = [policy.trained_env] if policy.trained_env else ["bandit", "sokoban", "frozenlake"]
        results = evaluate(policy, envs, args.num_seeds, args.modes.split(","), args.samples, args.temperature,
                           args.seed)
    except ValueError as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"policy": policy.description, "overrides": policy.overrides, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown_table(results, policy.description)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"written: {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
