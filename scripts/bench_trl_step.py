"""Step-time benchmark (not a test): one TurnRL training step next to one TRL ``GRPOTrainer`` step.

Same model (embedded SmolLM2-135M, fp32), same batch (4 Bandit prompts x 4 generations = 16 completions,
at most 48 new tokens, temperature 1), one optimizer step at lr 2e-5, no KL, 2 torch threads, CPU.
Each side runs 3 steps; the reported time is the median of steps 2-3 (step 1 includes warm-up).
Goal: TurnRL step time <= 0.8x TRL's::

    python scripts/bench_trl_step.py [--backends hf vllm] [--out benchmarks/trl_step.json] [--report R.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import envs
from agents.model import default_model_dir
from agents.prompts import SYSTEM_PROMPT, intro_message, turn_message
from algos.training.compose import compose_config

REPO = Path(__file__).resolve().parents[1]

THREADS = 2
STEPS = 3
PROMPTS = 4
GENERATIONS = 4
MAX_NEW_TOKENS = 48
LR = 2e-5
TURNRL_RUN = [
    "env=bandit",
    "logger=console",
    f"es_manager.train.env_groups={PROMPTS}",
    f"es_manager.train.group_size={GENERATIONS}",
    f"actor_rollout_ref.rollout.response_length={MAX_NEW_TOKENS}",
    f"actor_rollout_ref.actor.lr={LR}",
    "trainer.test_freq=-1",
    "algo=drgrpo",
    f"trainer.total_training_steps={STEPS}",
    "format_warmup.steps=0",  # the same raw model as TRL's side; the warm-up is not part of a step
]


def bandit_prompts() -> list[list[dict[str, str]]]:
    """The first chat of a Bandit episode for seeds 0..PROMPTS-1, built with TurnRL's own prompt text."""
    chats = []
    for seed in range(PROMPTS):
        env = envs.make("bandit")
        observation, _ = env.reset(seed=seed)
        user = intro_message(env.instructions, env.action_names, 1) + turn_message(
            1, observation, 1, False, MAX_NEW_TOKENS)
        chats.append([{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}])
    return chats


def dragon_reward(completions: list, **_: object) -> list[float]:
    """Cheap stand-in reward: 1 when the reply names the Dragon arm, else 0."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [1.0 if "Dragon" in text else 0.0 for text in texts]


def time_trl() -> list[float]:
    """Seconds per ``GRPOTrainer`` step; TRL's per_device_train_batch_size counts completions."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN003, ANN201
            self.seconds.append(time.perf_counter() - self._start)

    timer = StepTimer()
    dataset = Dataset.from_dict({"prompt": bandit_prompts() * STEPS})
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="bench_trl-"), per_device_train_batch_size=PROMPTS * GENERATIONS,
        num_generations=GENERATIONS, max_completion_length=MAX_NEW_TOKENS, learning_rate=LR, beta=0.0,
        max_steps=STEPS, logging_steps=1, report_to="none", use_cpu=True, bf16=False, temperature=1.0,
        gradient_accumulation_steps=1, save_strategy="no", model_init_kwargs={"dtype": torch.float32},
        dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=str(default_model_dir()), reward_funcs=dragon_reward, args=args,
                          train_dataset=dataset, callbacks=[timer])
    trainer.train()
    return timer.seconds


def time_turnrl(backend: str) -> list[float]:
    """Seconds per TurnRL ``Trainer`` step (``timing/step_s``) with the given rollout backend."""
    config = compose_config([*TURNRL_RUN, f"actor_rollout_ref.rollout.name={backend}"])
    from algos.training.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix=f"bench_turnrl_{backend}-"))
    Trainer(config, run_dir).fit()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["timing/step_s"] for row in rows if row["step"] > 0]


def steady(seconds: list[float]) -> float:
    """Median of steps 2..STEPS; step 1 pays for warm-up."""
    return statistics.median(seconds[1:])


def markdown(result: dict) -> str:
    trl = result["median_s"]["trl"]
    lines = [
        "# One training step: TurnRL vs TRL GRPOTrainer (CPU)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']}; {THREADS} torch threads; load before: `{result['uptime_before']}`, "
        f"after: `{result['uptime_after']}`.",
        "",
        "Batch: 4 Bandit prompts x 4 generations = 16 completions, <= 48 new tokens, temperature 1, "
        "fp32, lr 2e-5, no KL, one optimizer step. Time = median of steps 2-3.",
        "",
        "| trainer | rollout | step times (s) | median s/step | ratio vs TRL | goal |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| TRL GRPOTrainer | HF generate | {', '.join(f'{s:.1f}' for s in result['steps_s']['trl'])} | "
        f"{trl:.1f} | 1.00 | |",
    ]
    for backend in result["turnrl_backends"]:
        key = f"turnrl_{backend}"
        lines.append(f"| TurnRL Trainer | {backend} | {', '.join(f'{s:.1f}' for s in result['steps_s'][key])} | "
                     f"{result['median_s'][key]:.1f} | {result['ratio_vs_trl'][key]:.2f} | <= 0.80 |")
    return "\n".join(lines) + "\n"


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["hf", "vllm"], choices=["hf", "vllm"])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "trl_step.json")
    parser.add_argument("--report", type=Path, default=None, help="Markdown report; default: --out with .md")
    args = parser.parse_args()
    args.report = args.report or args.out.with_suffix(".md")
    torch.set_num_threads(THREADS)
    result: dict = {
        "command": " ".join(["python", "scripts/bench_trl_step.py", *sys.argv[1:]]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs",
        "uptime_before": uptime(),
        "settings": {"prompts": PROMPTS, "generations": GENERATIONS, "max_new_tokens": MAX_NEW_TOKENS, "lr": LR,
                     "steps": STEPS, "threads": THREADS, "dtype": "float32", "kl_beta": 0.0,
                     "turnrl_overrides": TURNRL_RUN},
        "turnrl_backends": [],
        "steps_s": {},
        "median_s": {},
        "ratio_vs_trl": {},
    }
    result["steps_s"]["trl"] = time_trl()
    result["median_s"]["trl"] = steady(result["steps_s"]["trl"])
    for backend in args.backends:
        key = f"turnrl_{backend}"
        torch.set_num_threads(THREADS)
        result["steps_s"][key] = time_turnrl(backend)
        result["median_s"][key] = steady(result["steps_s"][key])
        result["ratio_vs_trl"][key] = result["median_s"][key] / result["median_s"]["trl"]
        result["turnrl_backends"].append(backend)
        result["uptime_after"] = uptime()
        args.out.write_text(json.dumps(result, indent=1))  # partial results survive a later failure
        args.report.write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
