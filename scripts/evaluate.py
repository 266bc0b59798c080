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
from pathlib import Path

import torch

from agents.backends import SamplingParams
from algos.training.policy import Policy, add_policy_arguments, load_eval_policy, policy_engine
from algos.training.schema import TurnRLConfig

MODES = ("greedy", "sampled")
METRICS = {  # result key -> RolloutBatch.metrics key
    "success_rate": "rollout/success_rate",
    "mean_reward": "rollout/mean_reward",
    "mean_turns": "rollout/mean_turns",
    "format_error_rate": "rollout/format_error_rate",
}
_EVAL_STREAM = 2  # sampling stream distinct from the trainer's train (0) and validation (1) streams


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
        engine, config = policy_engine(policy, env)
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
    add_policy_arguments(parser)
    parser.add_argument("--envs", help="comma-separated envs (default: the run's env; all three for a base model)")
    parser.add_argument("--num-seeds", type=int, default=32, help="held-out levels per env (default 32)")
    parser.add_argument("--modes", default="greedy,sampled", help="greedy, sampled or both (default)")
    parser.add_argument("--samples", type=int, default=4, help="sampled episodes per level (default 4)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
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
