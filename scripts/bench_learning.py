"""Learning benchmark (not a test): does an env's validation success rise, with confidence intervals?

Trains ``--seeds`` runs of ``scripts/train.py bench=<env>`` (the settings in ``conf/bench/<env>.yaml``:
held-out validation on 64 levels before RL and every ``trainer.test_freq`` steps), ``--parallel`` at a
time with one torch thread each, each seed on training levels of its own (``train_levels_start``), then
reports per validation step the success rate over seeds x levels with a 95% interval (bootstrap over
seeds, then levels: ``algos.statistics``), the wall time, the time per step split into rollout /
log-prob / update, and the peak RSS. Writes
``benchmarks/learning_<env>.json``, ``.md`` and the curve ``.png``::

    python scripts/bench_learning.py --env frozenlake --seeds 0 1 2 --steps 60 [--parallel 2] [overrides ...]

``--train-levels N`` trains each seed on a fixed pool of N levels (``es_manager.train_num_levels``) and
validates on that pool instead of the held-out levels: whether RL learns what it sees, apart from whether
that carries over to new levels.

A run that already finished (its ``metrics.jsonl`` reaches the last step) is not rerun, so an
interrupted benchmark resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import numpy as np

import envs
from agents.rollout import actions_per_traj
from algos.statistics import aggregate_across_runs, hierarchical_bootstrap_ci
from algos.training.compose import compose_config
from algos.training.schema import TurnRLConfig
from algos.training.tracking import METRICS_FILE, read_metrics, validation_levels, validation_scores
from envs.reference_policies import random_actions_success, repeated_action_success

REPO = Path(__file__).resolve().parents[1]
ENVS = ("bandit", "frozenlake", "sokoban")
LEVELS_PER_SEED = 100_000


def train_levels_start(seed: int) -> int:
    """First training level of seed ``seed``'s run: ``10000 + 100000 * seed``, so seeds train on different
    levels (independent runs) and never on the held-out validation levels (123, 124, ...)."""
    return 10_000 + LEVELS_PER_SEED * seed


def run_seed(env: str, seed: int, steps: int, run_dir: Path, overrides: list[str], train_levels: int | None = None
             ) -> float:
    """Train one seed in a subprocess (one torch thread); its wall time in seconds (0 if already done).
    A run dir started with other settings (env, seed, its training levels, overrides) is refused, not
    resumed or reported as done: ``SystemExit`` naming both settings."""
    settings = {"env": env, "seed": seed, "train_seed_start": train_levels_start(seed), "overrides": overrides}
    pool = [] if train_levels is None else [f"es_manager.train_num_levels={train_levels}",
                                            f"es_manager.val_seed_start={settings['train_seed_start']}",
                                            f"es_manager.val.env_groups={train_levels}"]
    settings |= {"train_num_levels": train_levels} if pool else {}
    settings_file = run_dir / "bench_settings.json"
    if settings_file.is_file() and (started := json.loads(settings_file.read_text())) != settings:
        raise SystemExit(f"{run_dir} was started with {started}, not {settings}: pass another --runs-dir")
    done = [row for row in read_metrics(run_dir / METRICS_FILE) if row["step"] == steps]
    if done:
        return float(json.loads((run_dir / "wall_s.json").read_text())) if (run_dir / "wall_s.json").is_file() else 0.0
    command = [sys.executable, str(REPO / "scripts" / "train.py"), f"bench={env}", f"seed={seed}", "logger=console",
               "logger.progress_bar=false", f"trainer.total_training_steps={steps}", "trainer.save_freq=10",
               "trainer.resume=auto", f"hydra.run.dir={run_dir}",
               f"es_manager.train_seed_start={settings['train_seed_start']}", *pool, *overrides]
    environment = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings))
    start = time.perf_counter()
    with (run_dir.parent / f"{run_dir.name}.log").open("a") as log:
        subprocess.run(command, cwd=REPO, env=environment, stdout=log, stderr=subprocess.STDOUT, check=True)
    wall = time.perf_counter() - start
    (run_dir / "wall_s.json").write_text(json.dumps(wall))
    return wall


def summarise(env: str, runs: dict[int, Path], walls: dict[int, float], overrides: list[str],
              train_levels: int | None = None) -> dict:
    """The benchmark record: per-step intervals over seeds x levels, rliable aggregates of the first and
    last validation, timings and memory."""
    scores = {seed: validation_scores(path) for seed, path in runs.items()}
    common = sorted(set.intersection(*(set(s) for s in scores.values())))
    curve = [{"step": step, **hierarchical_bootstrap_ci(np.stack([scores[seed][step] for seed in runs])).as_dict()}
             for step in common]
    rows = {seed: [row for row in read_metrics(path / METRICS_FILE) if row["step"] > 0] for seed, path in runs.items()}
    every = [row for seed_rows in rows.values() for row in seed_rows]
    timing = {key: float(np.mean([row[f"timing/{key}"] for row in every])) for key in
              ("rollout_s", "log_prob_s", "update_s", "step_s")}
    first, last = (np.stack([scores[seed][step] for seed in runs]) for step in (common[0], common[-1]))
    return {
        "env": env, "seeds": sorted(runs), "overrides": overrides, "date": date.today().isoformat(),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "levels": int(first.shape[1]),
        "validated_on": "held-out levels" if train_levels is None else f"the {train_levels} training levels",
        "validation": curve, "wall_min": {seed: walls[seed] / 60 for seed in runs},
        "run_min": {seed: run_minutes(path) for seed, path in runs.items()},
        "time_per_step_s": timing, "peak_rss_gib": max(row["timing/peak_rss_gib"] for row in every),
        "train_success": {seed: [row["rollout/success_rate"] for row in seed_rows] for seed, seed_rows in rows.items()},
        "first_vs_last": aggregate_across_runs({f"step {common[0]}": first, f"step {common[-1]}": last}),
    }


def board_blind_references(config: TurnRLConfig, runs: dict[int, Path], episodes: int = 500) -> dict:
    """What play that ignores the board scores on each run's validation levels with the runs' action budget
    (``envs.reference_policies``), ``config`` being the runs' composed config: uniformly random valid actions
    (``episodes`` a level; 95% CI over seeds, then levels, as the curve's) and the best single action repeated
    (per seed, its best action's mean)."""
    game = envs.make(config.env.name, **config.env.kwargs)
    budget = actions_per_traj(config.agent_config(), game)
    levels = {seed: validation_levels(path) for seed, path in runs.items()}
    if missing := [str(runs[seed]) for seed, found in levels.items() if not found]:
        raise SystemExit(f"no validation episodes in {missing}: the references are computed on validated levels")
    random = np.stack([random_actions_success(game, levels[seed], budget, episodes, seed=seed) for seed in runs])
    repeated = [float(repeated_action_success(game, levels[seed], budget).mean(axis=1).max()) for seed in runs]
    game.close()
    return {"actions_per_episode": budget, "random_episodes_per_level": episodes,
            "uniformly random valid actions": hierarchical_bootstrap_ci(random).as_dict(),
            "best single action repeated": float(np.mean(repeated))}


def run_minutes(run_dir: Path) -> float:
    """A run's own time from its metrics: format warm-up + training steps + validations, in minutes. Model
    loads and restarts are left out, so a run stopped and resumed counts what it computed, once."""
    rows = read_metrics(run_dir / METRICS_FILE)
    return sum(row.get(key, 0.0) for row in rows
               for key in ("format_warmup/seconds", "timing/step_s", "timing/val_s")) / 60


def plot(record: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in record["validation"]]
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(steps, [row["estimate"] for row in record["validation"]], marker="o", label="validation success")
    axis.fill_between(steps, [row["low"] for row in record["validation"]], [row["high"] for row in record["validation"]],
                      alpha=0.3, label="95% CI (seeds, then levels)")
    axis.set(xlabel="training step", ylabel="success rate", ylim=(0, 1),
             title=f"{record['env']}: {len(record['seeds'])} seeds x {record['levels']} levels "
                   f"({record.get('validated_on', 'held-out levels')})")
    if "references" in record:
        axis.axhline(record["references"]["uniformly random valid actions"]["estimate"], color="grey",
                     linestyle="--", label="uniformly random valid actions")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(record: dict) -> str:
    lines = [f"# Learning benchmark: {record['env']}", "",
             f"{record['date']}, {record['machine']}. Seeds {record['seeds']}, {record['levels']} validation "
             f"levels a seed ({record.get('validated_on', 'held-out levels')}; a level's score is its episodes' mean "
             f"success). "
             f"Overrides: `{' '.join(record['overrides']) or '(none)'}`", "",
             "| step | validation success (mean over seeds x levels) | 95% CI | n |", "| --- | --- | --- | --- |"]
    lines += [f"| {row['step']} | {row['estimate']:.3f} | [{row['low']:.3f}, {row['high']:.3f}] | {row['n']} |"
              for row in record["validation"]]
    if "references" in record:
        random, best = (record["references"][key] for key in ("uniformly random valid actions",
                                                                "best single action repeated"))
        lines += ["", f"Board-blind play on the same levels ({record['references']['actions_per_episode']} actions an "
                  f"episode): uniformly random valid actions {random['estimate']:.3f} [{random['low']:.3f}, "
                  f"{random['high']:.3f}]; the best single action repeated {best:.3f}."]
    timing = record["time_per_step_s"]
    lines += ["", f"Time per step {timing['step_s']:.1f} s (rollout {timing['rollout_s']:.1f}, log-probs "
              f"{timing['log_prob_s']:.1f}, update {timing['update_s']:.1f}); per run: warm-up + steps + "
              f"validations {', '.join(f'{m:.1f}' for m in record['run_min'].values())} min, wall time of this "
              f"invocation {', '.join(f'{m:.1f}' for m in record['wall_min'].values())} min; peak RSS "
              f"{record['peak_rss_gib']:.2f} GiB."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", choices=ENVS, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="default: conf/bench/<env>.yaml's")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one torch thread each)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: benchmarks/runs/learning_<env>[_pool<N>]")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/learning_<env>[_pool<N>].json")
    parser.add_argument("--train-levels", type=int, default=None,
                        help="train on a fixed pool of N levels and validate on it (default: new levels, held-out)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        print(f"note: {len(args.seeds)} seed(s); claims need >= 3", file=sys.stderr)
    config = compose_config([f"bench={args.env}", *args.overrides])
    steps = args.steps or config.trainer.total_training_steps
    name = f"learning_{args.env}" + ("" if args.train_levels is None else f"_pool{args.train_levels}")
    runs_dir = args.runs_dir or REPO / "benchmarks" / "runs" / name
    runs = {seed: runs_dir / f"seed{seed}" for seed in args.seeds}
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        walls = dict(zip(runs, pool.map(lambda seed: run_seed(args.env, seed, steps, runs[seed], args.overrides,
                                                                 args.train_levels), runs),
                         strict=True))
    record = summarise(args.env, runs, walls, args.overrides, args.train_levels)
    record["references"] = board_blind_references(config, runs)
    out = args.out or REPO / "benchmarks" / f"{name}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(record))
    plot(record, out.with_suffix(".png"))
    print(markdown(record))


if __name__ == "__main__":
    main()
