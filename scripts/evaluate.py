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
``format_error_rate`` = turns with a missing or invalid action / turns played. Each result has ``n`` (levels)
and ``success_rate_ci`` / ``mean_reward_ci``: 95% percentile bootstrap intervals over levels of the
per-level mean (``algos.statistics.bootstrap_ci``); ``--out``.json also holds one row per episode
(``episodes``: env, mode, level seed, member, success, reward, turns).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from agents.backends import SamplingParams
from agents.console import say
from agents.rollout import RolloutBatch
from algos.statistics import bootstrap_ci
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


def level_intervals(batch: RolloutBatch, per_level: int) -> dict[str, dict]:
    """95% bootstrap CIs over levels of the per-level mean success and reward (episodes are level-major)."""
    success = batch.success.float().view(-1, per_level).mean(dim=1).numpy()
    reward = batch.episode_reward.view(-1, per_level).mean(dim=1).numpy()
    return {"success_rate_ci": bootstrap_ci(success).as_dict(), "mean_reward_ci": bootstrap_ci(reward).as_dict()}


def episode_rows(batch: RolloutBatch, env: str, mode: str, per_level: int) -> list[dict]:
    return [{"env": env, "mode": mode, "seed": int(batch.seeds[b]), "member": b % per_level,
             "success": bool(batch.success[b]), "reward": float(batch.episode_reward[b]),
             "num_turns": int(batch.num_turns[b]), "turns": batch.turns[b][1:]} for b in range(len(batch))]


@torch.no_grad()
def evaluate(policy: Policy, envs: list[str], num_seeds: int, modes: list[str] = MODES, samples: int = 4,
             temperature: float = 1.0, seed: int = 0, episodes: list[dict] | None = None) -> list[dict]:
    """One result per (env, mode): episodes played, the four metrics averaged over episodes, and the
    CIs over levels; per-episode rows are appended to ``episodes`` when given."""
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
            tic = time.perf_counter()
            batch = engine.play(list(range(first, first + num_seeds)), per_level,
                                sampling(mode, config, temperature, seed), (_EVAL_STREAM, MODES.index(mode)),
                                f"{env} {mode}")
            intervals = level_intervals(batch, per_level)
            results.append({"env": env, "mode": mode, "episodes": len(batch), "levels": num_seeds, "n": num_seeds,
                            "first_seed": first, **{name: batch.metrics[key] for name, key in METRICS.items()},
                            **intervals})
            if episodes is not None:
                episodes.extend(episode_rows(batch, env, mode, per_level))
            ci = intervals["success_rate_ci"]
            say(f"{env} {mode}: {len(batch)} episodes on {num_seeds} levels in {time.perf_counter() - tic:.0f} s, "
                f"success {ci['estimate']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]")
    return results


def markdown_table(results: list[dict], description: str) -> str:
    lines = [f"Policy: {description}", "", "Means over episodes; [95% CI]: bootstrap over the n levels.", "",
             "| env | mode | n levels | episodes | success rate [95% CI] | mean reward [95% CI] | mean turns | "
             "format-error rate |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, w = r["success_rate_ci"], r["mean_reward_ci"]
        lines.append(f"| {r['env']} | {r['mode']} | {r['n']} | {r['episodes']} | {r['success_rate']:.3f} "
                     f"[{s['low']:.3f}, {s['high']:.3f}] | {r['mean_reward']:.3f} [{w['low']:.3f}, {w['high']:.3f}] | "
                     f"{r['mean_turns']:.2f} | {r['format_error_rate']:.3f} |")
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
        episodes: list[dict] = []
        results = evaluate(policy, envs, args.num_seeds, args.modes.split(","), args.samples, args.temperature,
                           args.seed, episodes)
    except ValueError as error:
        parser.error(str(error))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"policy": policy.description, "overrides": policy.overrides, "results": results, "episodes": episodes}
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    table = markdown_table(results, policy.description)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"written: {args.out.with_suffix('.json')}, {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
