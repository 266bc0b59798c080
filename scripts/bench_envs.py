"""Benchmark the TurnRL envs on one core: levels generated per second, steps per second, Sokoban difficulty.

    python scripts/bench_envs.py [--out benchmarks/envs.json] [--levels 5000] [--steps 50000] [--difficulty-levels 1000]

Everything runs in this single-threaded process and is timed in CPU seconds (`time.process_time`), so
other load on the machine does not distort it. Levels/s: `reset(seed=s)` with a new seed each time
(the env's whole reset, gymnasium seeding included). Steps/s: uniformly random actions, resetting when an
episode ends, minus the time of those resets. Sokoban difficulty: the BFS-optimal solution length
(`envs.sokoban.solve`) of seeds 0..N-1. Writes JSON and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

import envs
from envs.sokoban import solve

# Benchmark name -> (env name, kwargs).
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bandit": ("bandit", {}),
    "sokoban 6x6, 1 box": ("sokoban", {}),
    "sokoban 8x8, 2 boxes": ("sokoban", {"preset": "large"}),
    "frozenlake 4x4": ("frozenlake", {}),
}


def levels_per_second(name: str, kwargs: dict[str, Any], num_levels: int) -> float:
    env = envs.make(name, **kwargs)
    start = time.process_time()
    for seed in range(num_levels):
        env.reset(seed=seed)
    return num_levels / (time.process_time() - start)


def steps_per_second(name: str, kwargs: dict[str, Any], num_steps: int) -> float:
    """Random actions; the time of the resets between episodes (replayed alone) is subtracted."""
    env = envs.make(name, **kwargs)
    actions = np.random.default_rng(0).integers(env.action_space.n, size=num_steps).tolist()
    seed = 0
    start = time.process_time()
    env.reset(seed=seed)
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            seed += 1
            env.reset(seed=seed)
    with_resets = time.process_time() - start
    start = time.process_time()
    for reset_seed in range(seed + 1):
        env.reset(seed=reset_seed)
    return num_steps / (with_resets - (time.process_time() - start))


def sokoban_difficulty(kwargs: dict[str, Any], num_levels: int) -> dict[str, Any]:
    """Mean, median, max and histogram of the optimal solution length of seeds 0..num_levels-1."""
    env = envs.make("sokoban", **kwargs)
    lengths = []
    for seed in range(num_levels):
        env.reset(seed=seed)
        solution = solve(env.room)
        if solution is None:
            raise AssertionError(f"sokoban {kwargs} seed {seed} is unsolvable")
        lengths.append(len(solution))
    return {
        "levels": num_levels,
        "mean": statistics.mean(lengths),
        "median": statistics.median(lengths),
        "max": max(lengths),
        "histogram": dict(sorted(Counter(lengths).items())),
    }


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| env | levels/s | steps/s | optimal moves: mean / median / max |",
        "|---|---:|---:|---|",
    ]
    for case, row in results.items():
        difficulty = row.get("difficulty")
        moves = f"{difficulty['mean']:.2f} / {difficulty['median']:g} / {difficulty['max']}" if difficulty else "-"
        lines.append(f"| {case} | {row['levels_per_s']:,.0f} | {row['steps_per_s']:,.0f} | {moves} |")
    for case, row in results.items():
        if "difficulty" in row:
            histogram = ", ".join(f"{length}: {count}" for length, count in row["difficulty"]["histogram"].items())
            levels = row["difficulty"]["levels"]
            lines.append(f"\n{case}, optimal solution length over {levels} levels (length: count): {histogram}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/envs.json"))
    parser.add_argument("--levels", type=int, default=5000, help="resets timed per env")
    parser.add_argument("--steps", type=int, default=50000, help="steps timed per env")
    parser.add_argument("--difficulty-levels", type=int, default=1000, help="Sokoban levels solved per preset")
    args = parser.parse_args()

    results: dict[str, dict[str, Any]] = {}
    for case, (name, kwargs) in CASES.items():
        row: dict[str, Any] = {"env": name, "kwargs": kwargs}
        row["levels_per_s"] = levels_per_second(name, kwargs, args.levels)
        row["steps_per_s"] = steps_per_second(name, kwargs, args.steps)
        if name == "sokoban":
            row["difficulty"] = sokoban_difficulty(kwargs, args.difficulty_levels)
        results[case] = row
        print(f"{case}: {row['levels_per_s']:,.0f} levels/s, {row['steps_per_s']:,.0f} steps/s", file=sys.stderr)

    report = {
        "command": " ".join(["python", *sys.argv]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version(), "timer": "time.process_time, one thread"},
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
