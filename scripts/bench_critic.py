"""What the critic costs: one ``algo=ppo`` training step next to one ``algo=drgrpo_soft`` step on the same batch.

    python scripts/bench_critic.py [--out benchmarks/critic.json] [--steps 2] [--threads 1]

A Bandit batch (4 groups x 4 episodes, at most 48 new tokens, temperature 1) is played once by the
embedded SmolLM2-135M (fp32, hf backend, no format warm-up) and saved; then each algorithm runs
``--steps`` training steps in its own process on that same batch (a fixed rollout, so no generation
time), and the last step's ``timing/*`` metrics and the process's peak resident memory (``ru_maxrss``:
model loads included) are reported. The critic is a second SmolLM2-135M trunk with its own AdamW state.
Writes JSON, prints Markdown.
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
from algos.training.memory import peak_rss_gib
from algos.training.recorded_batch import FixedRollout, load_batch, save_batch

REPO = Path(__file__).resolve().parents[1]

ALGOS = ("drgrpo_soft", "ppo")
RUN = ["env=bandit", "logger=console", "logger.progress_bar=false", "es_manager.train.env_groups=4",
       "es_manager.train.group_size=4", "actor_rollout_ref.rollout.response_length=48",
       "actor_rollout_ref.rollout.name=hf", "trainer.test_freq=-1", "format_warmup.steps=0"]


def config(algo: str, steps: int):
    return compose_config([*RUN, f"algo={algo}", f"trainer.total_training_steps={steps}"])


def record(path: Path) -> None:
    """Play one training rollout with the embedded model and save it."""
    from algos.training.trainer import Trainer

    trainer = Trainer(config("drgrpo_soft", 1), Path(tempfile.mkdtemp(prefix="bench_critic_record-")))
    trainer.setup()
    save_batch(trainer.play_train_groups(1), path)


def step(algo: str, batch_path: Path, steps: int, out: Path) -> None:
    """``steps`` steps of ``algo`` on the recorded batch; the last step's metrics and the peak RSS."""
    from algos.training.trainer import Trainer

    batch = load_batch(batch_path)
    run_dir = Path(tempfile.mkdtemp(prefix=f"bench_critic_{algo}-"))
    result = Trainer(config(algo, steps), run_dir, rollout_engine=FixedRollout(batch)).fit()
    metrics = {key: value for key, value in result["metrics"].items() if key.startswith(("timing/", "critic/"))}
    peak_gib = peak_rss_gib()
    out.write_text(json.dumps({"metrics": metrics, "peak_rss_gib": peak_gib}))


def markdown(report: dict) -> str:
    rows = report["results"]
    base = rows["drgrpo_soft"]
    lines = ["| algo | step s | update s | critic values s | critic update s | peak RSS GiB |",
             "|---|---:|---:|---:|---:|---:|"]
    for algo in ALGOS:
        m = rows[algo]["metrics"]
        lines.append(f"| {algo} | {m['timing/step_s']:.1f} | {m['timing/update_s']:.1f} | "
                     f"{m.get('timing/critic_values_s', 0.0):.1f} | {m.get('timing/critic_update_s', 0.0):.1f} | "
                     f"{rows[algo]['peak_rss_gib']:.2f} |")
    ppo = rows["ppo"]
    lines.append(f"\nppo / drgrpo_soft: step time {ppo['metrics']['timing/step_s'] / base['metrics']['timing/step_s']:.2f}x, "
                 f"peak RSS +{ppo['peak_rss_gib'] - base['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "critic.json")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--role", choices=["main", "record", "step"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--algo", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.role == "record":
        return record(args.batch)
    if args.role == "step":
        return step(args.algo, args.batch, args.steps, args.result)
    work = Path(tempfile.mkdtemp(prefix="bench_critic-"))
    batch = work / "batch.pt"
    child = [sys.executable, __file__, "--threads", str(args.threads), "--steps", str(args.steps), "--batch", str(batch)]
    subprocess.run([*child, "--role", "record"], check=True)
    results = {}
    for algo in ALGOS:  # one process each: the peak RSS is that algorithm's alone
        subprocess.run([*child, "--role", "step", "--algo", algo, "--result", str(work / f"{algo}.json")], check=True)
        results[algo] = json.loads((work / f"{algo}.json").read_text())
    report = {
        "command": " ".join(["python", "scripts/bench_critic.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "settings": {"overrides": RUN, "steps": args.steps, "threads": args.threads, "dtype": "float32",
                     "model": "embedded SmolLM2-135M-Instruct"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(markdown(report))


if __name__ == "__main__":
    main()
