"""What the critic costs: one ``algo=ppo`` training step next to one ``algo=drgrpo_soft`` step on the same batch.

    python scripts/bench_critic.py [--out benchmarks/critic.json] [--steps 2] [--threads 1]

A Bandit batch (``recorded_batch.RECORDED_BANDIT_BATCH``: 4 groups x 4 episodes, at most 48 new tokens,
temperature 1) is played once by the embedded SmolLM2-135M and saved; then each algorithm runs
``--steps`` training steps in its own process on that same batch (a fixed rollout, so no generation
time), and the last step's ``timing/*`` metrics and the process's peak resident memory, over the
training steps (from after the model loads: ``memory.reset_peak_rss``) and over its life, are reported. The critic is a second SmolLM2-135M trunk with its own AdamW state.
Writes JSON, prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

from algos.training.compose import compose_config
from algos.training.recorded_batch import (
    RECORDED_BANDIT_BATCH,
    add_child_arguments,
    gib_text,
    record_batch,
    run_variants,
    train_on_batch,
)

REPO = Path(__file__).resolve().parents[1]
ALGOS = ("drgrpo_soft", "ppo")


def config(algo: str, steps: int):
    return compose_config([*RECORDED_BANDIT_BATCH, f"algo={algo}", f"trainer.total_training_steps={steps}"])


def train(algo: str, batch_path: Path, steps: int, out: Path) -> None:
    """``steps`` steps of ``algo`` on the recorded batch; the last step's metrics and the peak RSS."""
    _, result, peaks = train_on_batch(config(algo, steps), batch_path)
    metrics = {key: value for key, value in result["metrics"].items() if key.startswith(("timing/", "critic/"))}
    out.write_text(json.dumps({"metrics": metrics, **peaks}))


def markdown(report: dict) -> str:
    rows = report["results"]
    base = rows["drgrpo_soft"]
    lines = ["| algo | step s | update s | critic values s | critic update s | training peak RSS GiB | "
             "process peak RSS GiB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for algo in ALGOS:
        m = rows[algo]["metrics"]
        lines.append(f"| {algo} | {m['timing/step_s']:.1f} | {m['timing/update_s']:.1f} | "
                     f"{m.get('timing/critic_values_s', 0.0):.1f} | {m.get('timing/critic_update_s', 0.0):.1f} | "
                     f"{gib_text(rows[algo]['train_peak_rss_gib'])} | {rows[algo]['peak_rss_gib']:.2f} |")
    ppo = rows["ppo"]
    extra = (None if ppo["train_peak_rss_gib"] is None or base["train_peak_rss_gib"] is None
             else ppo["train_peak_rss_gib"] - base["train_peak_rss_gib"])
    lines.append(f"\nppo / drgrpo_soft: step time {ppo['metrics']['timing/step_s'] / base['metrics']['timing/step_s']:.2f}x, "
                 f"training peak RSS {'n/a' if extra is None else f'{extra:+.2f} GiB'}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "critic.json")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    add_child_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.role == "record":
        return record_batch(config("drgrpo_soft", 1), args.batch)
    if args.role == "train":
        return train(args.variant, args.batch, args.steps, args.result)
    results = run_variants(Path(__file__), ALGOS, ["--threads", str(args.threads), "--steps", str(args.steps)])
    report = {
        "command": " ".join(["python", "scripts/bench_critic.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "settings": {"overrides": RECORDED_BANDIT_BATCH, "steps": args.steps, "threads": args.threads,
                     "dtype": "float32", "model": "embedded SmolLM2-135M-Instruct",
                     "gradient_checkpointing":
                         compose_config(RECORDED_BANDIT_BATCH).actor_rollout_ref.model.enable_gradient_checkpointing},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
