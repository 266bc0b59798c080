"""What LoRA saves: training steps of the embedded model, full fine-tuning next to LoRA rank 8 and 32.

    python scripts/bench_lora.py [--out benchmarks/lora.json] [--threads 1] [--steps 2]

A Bandit batch (``recorded_batch.RECORDED_BANDIT_BATCH``: 4 groups x 4 episodes, at most 48 new tokens,
temperature 1) is played once by the embedded SmolLM2-135M and saved; then each variant runs ``--steps``
``algo=drgrpo_soft`` steps on it in its own process (a fixed rollout: no generation time) and writes a
checkpoint. Two steps, because full fine-tuning's AdamW moments exist only from the first optimizer step
on and stay resident through every later forward/backward. Reported: the last step's ``timing/step_s``
and ``timing/update_s``; the process's peak resident memory over the training steps (counted from after
the model load, whose transient is the same for every variant: ``memory.reset_peak_rss``) and over its
whole life; the checkpoint's size on disk and the trainable parameter count. Writes JSON, prints Markdown.
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
from algos.training.lora import trainable_parameters
from algos.training.recorded_batch import (
    RECORDED_BANDIT_BATCH,
    add_child_arguments,
    gib_text,
    ratio_text,
    record_batch,
    run_variants,
    train_on_batch,
)

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"full": 0, "lora_r8": 8, "lora_r32": 32}
RUN = [*RECORDED_BANDIT_BATCH, "algo=drgrpo_soft", "trainer.save_freq=1"]


def config(lora_rank: int, steps: int = 1):
    return compose_config([*RUN, f"trainer.total_training_steps={steps}",
                           f"actor_rollout_ref.model.lora_rank={lora_rank}"])


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def train(variant: str, steps: int, batch_path: Path, out: Path) -> None:
    """``steps`` steps of ``variant`` on the recorded batch: timings, peak RSS and checkpoint size."""
    trainer, result, peaks = train_on_batch(config(VARIANTS[variant], steps), batch_path)
    metrics = {key: value for key, value in result["metrics"].items() if key.startswith(("timing/", "rollout/logprob"))}
    out.write_text(json.dumps({
        "metrics": metrics, **peaks,
        "checkpoint_mib": folder_bytes(trainer.ckpt_dir / f"global_step_{steps}") / 2**20,
        "trainable_parameters": trainable_parameters(trainer.engine.module),
    }))


def markdown(report: dict) -> str:
    rows = report["results"]
    full = rows["full"]
    lines = ["| variant | trainable params | step s | update s | training peak RSS GiB | process peak RSS GiB | "
             "checkpoint MiB | training RSS / full | process RSS / full | ckpt / full |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for variant in VARIANTS:
        row, m = rows[variant], rows[variant]["metrics"]
        lines.append(f"| {variant} | {row['trainable_parameters']:,} | {m['timing/step_s']:.1f} | "
                     f"{m['timing/update_s']:.1f} | {gib_text(row['train_peak_rss_gib'])} | {row['peak_rss_gib']:.2f} | "
                     f"{row['checkpoint_mib']:.1f} | {ratio_text(row['train_peak_rss_gib'], full['train_peak_rss_gib'])} | "
                     f"{row['peak_rss_gib'] / full['peak_rss_gib']:.2f} | "
                     f"{row['checkpoint_mib'] / full['checkpoint_mib']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "lora.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant (>= 2 shows AdamW's share)")
    add_child_arguments(parser)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.role == "record":
        return record_batch(config(0), args.batch)
    if args.role == "train":
        return train(args.variant, args.steps, args.batch, args.result)
    results = run_variants(Path(__file__), VARIANTS, ["--threads", str(args.threads), "--steps", str(args.steps)])
    report = {
        "command": " ".join(["python", "scripts/bench_lora.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "settings": {"overrides": RUN, "steps": args.steps, "threads": args.threads, "dtype": "float32",
                     "gradient_checkpointing": compose_config(RUN).actor_rollout_ref.model.enable_gradient_checkpointing,
                     "model": "embedded SmolLM2-135M-Instruct", "lora": "lora_alpha 16, target_modules all-linear"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
