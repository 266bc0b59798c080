"""Learning benchmark (not a test): Bandit with the real default model on CPU.

Goal: success rate >= 0.9 by step 30, in under 20 minutes on 2 cores, peak RSS <= 4 GiB (met together
with glibc's default allocator: BENCHMARKS.md). The model
config's format warm-up runs first (it teaches the reply format with balanced random arms, not which
arm is better); validation before step 1 measures where RL starts. Records the curve, time per step
and peak RSS as a Markdown report::

    python scripts/bench_learning.py --steps 30 [--out benchmarks/learning.md] [hydra overrides ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agents.backends.hardware import vllm_is_faster_here  # noqa: E402
from algos.training.schema import register_schema, validate  # noqa: E402

BANDIT_RUN = [  # 4 levels x 8 pulls per step, answer-only replies, sampled validation every 10 steps
    "env=bandit",
    "logger=console",
    "agent_proxy.enable_think=false",
    "es_manager.train.env_groups=4",
    "es_manager.train.group_size=8",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8",
    "actor_rollout_ref.rollout.response_length=16",  # a reply is <answer>arm</answer>: <= 10 tokens
    "actor_rollout_ref.actor.lr=5e-5",
    "trainer.val_before_train=true",  # the success rate after the format warm-up, before any RL
    "trainer.test_freq=10",
    "es_manager.val.env_groups=8",
    "es_manager.val.group_size=4",
    "actor_rollout_ref.rollout.val_kwargs.do_sample=true",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--algo", default="drgrpo")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "learning.md")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. actor_rollout_ref.actor.lr=1e-5")
    args = parser.parse_args()

    register_schema()
    overrides = [*BANDIT_RUN, f"algo={args.algo}", f"trainer.total_training_steps={args.steps}", *args.overrides]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        config = validate(compose(config_name="config", overrides=overrides))
    from algos.training.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix="bench_learning-"))
    sampler = PeakRSS()
    start = time.perf_counter()
    Trainer(config, run_dir).fit()
    wall = time.perf_counter() - start
    sampler.stop()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    backend = config.actor_rollout_ref.rollout.name
    if backend == "auto":
        backend = "vllm" if vllm_is_faster_here() else "hf"
    args.out.write_text(report(rows, wall, overrides, run_dir, sampler.peak_gib, backend))
    args.out.with_suffix(".json").write_text(json.dumps(
        {"overrides": overrides, "backend": backend, "wall_s": wall, "peak_rss_with_children_gib": sampler.peak_gib,
         "steps": rows}, indent=1))
    print(f"report: {args.out} (+ .json)")


class PeakRSS:
    """Samples the resident memory of this process plus its children (the vLLM engine) every
    ``interval_s`` seconds; ``peak_gib`` is the largest sample so far."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.peak_gib = 0.0
        self.interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._done.wait(self.interval_s):
            processes = [me, *me.children(recursive=True)]
            total = 0
            for process in processes:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_gib = max(self.peak_gib, total / 2**30)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def report(rows: list[dict], wall_s: float, overrides: list[str], run_dir: Path, peak_with_children: float,
           backend: str) -> str:
    """Markdown: the settings, the headline numbers against the goals, and the per-step curve."""
    start = next((row for row in rows if row["step"] == 0), {})
    steps = [row for row in rows if row["step"] > 0]
    success = [row["rollout/success_rate"] for row in steps]
    reached = next((row["step"] for row in steps if row["rollout/success_rate"] >= 0.9), None)
    step_s = sum(row["timing/step_s"] for row in steps) / len(steps)
    peak = max(row["timing/peak_rss_gib"] for row in steps)
    lines = [
        "# Learning benchmark: Bandit, SmolLM2-135M, CPU",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs. Rollout backend: {backend}. "
        f"Overrides: `{' '.join(overrides)}`. Run dir: {run_dir}",
        "",
        "| measure | value | goal |",
        "| --- | --- | --- |",
        f"| format warm-up: reply NLL, time | {start.get('format_warmup/loss_start', float('nan')):.2f} -> "
        f"{start.get('format_warmup/loss_end', float('nan')):.2f}, "
        f"{start.get('format_warmup/seconds', 0.0):.0f} s | |",
        f"| success before RL (sampled validation, step 0) | {start.get('val/success_rate', float('nan')):.2f} | |",
        f"| first step with training success >= 0.9 | {reached} | <= 30 |",
        f"| final training success rate | {success[-1]:.2f} | >= 0.9 |",
        f"| total wall time (load, warm-up, {len(steps)} steps, validation) | {wall_s / 60:.1f} min | < 20 min |",
        f"| time per step | {step_s:.1f} s | |",
        f"| peak RSS, trainer process | {peak:.2f} GiB | <= 4 GiB |",
        f"| peak RSS, trainer + child processes (a vLLM engine), sampled 1/s | {peak_with_children:.2f} GiB | |",
        "",
        "| step | reward | success | format errors | val success | s/step |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        val = f"{row['val/success_rate']:.2f}" if "val/success_rate" in row else ""
        if row["step"] == 0:
            lines.append(f"| 0 (before RL) | | | | {val} | |")
            continue
        lines.append(f"| {row['step']} | {row['reward']:.3f} | {row['rollout/success_rate']:.2f} | "
                     f"{row['rollout/format_error_rate']:.2f} | {val} | {row['timing/step_s']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
