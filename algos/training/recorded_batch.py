"""One recorded rollout replayed at every step: benchmarks that compare update variants on the same batch.

A benchmark script records one batch in a child process, then trains each variant on it in a child
process of its own (:func:`run_variants`), so each variant's peak memory is its own. The batch is saved
as its fields (tensors and plain types), so it loads weights-only: no file read here can run code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from agents.rollout import RolloutBatch
from algos.training.memory import peak_rss_gib, reset_peak_rss

if TYPE_CHECKING:  # the trainer is imported when a child process needs it, not by the bench scripts' parents
    from algos.training.schema import TurnRLConfig
    from algos.training.trainer import Trainer

RECORDED_BANDIT_BATCH = ["env=bandit", "logger=console", "logger.progress_bar=false", "es_manager.train.env_groups=4",
                         "es_manager.train.group_size=4", "actor_rollout_ref.rollout.response_length=48",
                         "actor_rollout_ref.rollout.name=hf", "trainer.test_freq=-1", "format_warmup.steps=0"]
"""The benchmarks' batch: 4 Bandit levels x 4 episodes of the embedded model (fp32, hf backend, temperature
1, <= 48 new tokens, no format warm-up)."""


def save_batch(batch: RolloutBatch, path: Path) -> None:
    torch.save(vars(batch), path)


def load_batch(path: Path) -> RolloutBatch:
    return RolloutBatch(**torch.load(path, weights_only=True))


class FixedRollout:
    """A rollout engine whose every rollout is ``batch``; weight pushes are no-ops."""

    def __init__(self, batch: RolloutBatch) -> None:
        self.batch, self.backend = batch, self

    def update_weights(self, model: torch.nn.Module) -> None:
        pass

    def rollout(self, step: int, params: object, *args: object, **kwargs: object) -> RolloutBatch:
        return self.batch


def record_batch(config: TurnRLConfig, path: Path) -> None:
    """Play one training rollout under ``config`` (a composed TurnRL config) and save it to ``path``."""
    from algos.training.trainer import Trainer

    trainer = Trainer(config, Path(tempfile.mkdtemp(prefix="recorded_batch-")))
    trainer.setup()
    save_batch(trainer.play_train_groups(1), path)


def train_on_batch(config: TurnRLConfig, batch_path: Path) -> tuple[Trainer, dict[str, Any], dict[str, float | None]]:
    """``trainer.total_training_steps`` steps of ``config`` on the recorded batch: ``(trainer, fit result,
    peaks)`` with ``peaks["peak_rss_gib"]`` over the process's life and ``peaks["train_peak_rss_gib"]``
    over the training steps alone (counted from after the model load and warm-up: ``reset_peak_rss``), or
    None where the peak cannot be restarted (no ``/proc/self/clear_refs``): never the lifetime figure."""
    from algos.training.trainer import Trainer

    run_dir = Path(tempfile.mkdtemp(prefix="recorded_batch_train-"))
    trainer = Trainer(config, run_dir, rollout_engine=FixedRollout(load_batch(batch_path)))
    trainer.setup()
    before = peak_rss_gib()
    restarted = reset_peak_rss()
    result = trainer.fit()
    after = peak_rss_gib()
    return trainer, result, {"train_peak_rss_gib": after if restarted else None, "peak_rss_gib": max(before, after)}


def gib_text(value: float | None) -> str:
    """A peak in GiB for a table; "n/a" for a peak that was not measured (None)."""
    return "n/a" if value is None else f"{value:.2f}"


def ratio_text(value: float | None, reference: float | None) -> str:
    """``value / reference`` for a table; "n/a" when either was not measured (None)."""
    return "n/a" if value is None or reference is None else f"{value / reference:.2f}"


def run_variants(script: Path, variants: Iterable[str], child_args: list[str]) -> dict[str, dict]:
    """Run ``script --role record --batch B`` once, then ``script --role train --variant V --batch B
    --result R`` per variant, each in its own process (so a peak RSS is that variant's alone), all with
    ``child_args``; each variant's JSON result."""
    work = Path(tempfile.mkdtemp(prefix=f"{script.stem}-"))
    child = [sys.executable, str(script), *child_args, "--batch", str(work / "batch.pt")]
    subprocess.run([*child, "--role", "record"], check=True)
    results = {}
    for variant in variants:
        out = work / f"{variant}.json"
        subprocess.run([*child, "--role", "train", "--variant", variant, "--result", str(out)], check=True)
        results[variant] = json.loads(out.read_text())
    return results


def add_child_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden options :func:`run_variants` passes to its child processes."""
    parser.add_argument("--role", choices=["main", "record", "train"], default="main", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
