"""What LoRA saves: training steps of the embedded model, full fine-tuning next to LoRA rank 8 and 32.

    python scripts/bench_lora.py [--out benchmarks/lora.json] [--threads 1] [--steps 2]

A Bandit batch (4 groups x 4 episodes, at most 48 new tokens, temperature 1) is played once by the
embedded SmolLM2-135M (fp32, hf backend, no format warm-up) and saved; then each variant runs ``--steps``
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
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from algos.training.compose import compose_config
from algos.training.lora import trainable_parameters
from algos.training.memory import peak_rss_gib, reset_peak_rss
from algos.training.recorded_batch import FixedRollout, load_batch, save_batch

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"full": 0, "lora_r8": 8, "lora_r32": 32}
RUN = ["env=bandit", "logger=console", "logger.progress_bar=false", "es_manager.train.env_groups=4",
       "es_manager.train.group_size=4", "actor_rollout_ref.rollout.response_length=48", "algo=drgrpo_soft",
       "actor_rollout_ref.rollout.name=hf", "trainer.test_freq=-1", "format_warmup.steps=0",
       "trainer.save_freq=1"]


def config(lora_rank: int, steps: int = 1):
    return compose_config([*RUN, f"trainer.total_training_steps={steps}",
                           f"actor_rollout_ref.model.lora_rank={lora_rank}"])


def record(path: Path) -> None:
    """Play one training rollout with the embedded model and save it."""
    from algos.training.trainer import Trainer

    trainer = Trainer(config(0), Path(tempfile.mkdtemp(prefix="bench_lora_record-")))
    trainer.setup()
    save_batch(trainer.play_train_groups(1), path)


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def train(variant: str, steps: int, batch_path: Path, out: Path) -> None:
    """``steps`` steps of ``variant`` on the recorded batch: timings, peak RSS and checkpoint size."""
    from algos.training.trainer import Trainer

    batch = load_batch(batch_path)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench_lora_{variant}-"))
    trainer = Trainer(config(VARIANTS[variant], steps), run_dir, rollout_engine=FixedRollout(batch))
    trainer.setup()
    lifetime_peak = peak_rss_gib()
    reset_peak_rss()
    result = trainer.fit()
    metrics = {key: value for key, value in result["metrics"].items() if key.startswith(("timing/", "rollout/logprob"))}
    out.write_text(json.dumps({
        "metrics": metrics,
        "train_peak_rss_gib": peak_rss_gib(),
        "peak_rss_gib": max(lifetime_peak, peak_rss_gib()),
        "checkpoint_mib": folder_bytes(run_dir / "checkpoints" / f"global_step_{steps}") / 2**20,
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
                     f"{m['timing/update_s']:.1f} | {row['train_peak_rss_gib']:.2f} | {row['peak_rss_gib']:.2f} | "
                     f"{row['checkpoint_mib']:.1f} | {row['train_peak_rss_gib'] / full['train_peak_rss_gib']:.2f} | "
                     f"{row['peak_rss_gib'] / full['peak_rss_gib']:.2f} | "
                     f"{row['checkpoint_mib'] / full['checkpoint_mib']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "lora.json")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="training steps per variant (>= 2 shows AdamW's share)")
    parser.add_argument("--role", choices=["main", "record", "train"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.role == "record":
        return record(args.batch)
    if args.role == "train":
        return train(args.variant, args.steps, args.batch, args.result)
    work = Path(tempfile.mkdtemp(prefix="bench_lora-"))
    batch = work / "batch.pt"
    child = [sys.executable, __file__, "--threads", str(args.threads), "--steps", str(args.steps),
             "--batch", str(batch)]
    subprocess.run([*child, "--role", "record"], check=True)
    results = {}
    for variant in VARIANTS:  # one process each: the peak RSS is that variant's alone
        subprocess.run([*child, "--role", "train", "--variant", variant, "--result", str(work / f"{variant}.json")],
                       check=True)
        results[variant] = json.loads((work / f"{variant}.json").read_text())
    report = {
        "command": " ".join(["python", "scripts/bench_lora.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "settings": {"overrides": RUN, "steps": args.steps, "threads": args.threads, "dtype": "float32",
                     "model": "embedded SmolLM2-135M-Instruct", "lora": "lora_alpha 16, target_modules all-linear"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
