"""Run logging: ``metrics.jsonl`` (always), wandb (offline by default) or console, a progress bar and
a learning-curve PNG at the end.

Named ``tracking`` so it never shadows the standard library's ``logging``.
"""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from agents.console import bar, say
from agents.rollout import RolloutBatch
from algos.statistics import bootstrap_ci
from algos.training.schema import LoggerConfig
from algos.training.trajectories import TRAJECTORIES_FILE, append_rows, wandb_table

METRICS_FILE = "metrics.jsonl"
CURVE_FILE = "learning_curve.png"
CURVE_SERIES = (  # (metric key, label) drawn on the learning curve when present
    ("reward", "train reward"),
    ("rollout/success_rate", "train success"),
    ("val/success_rate", "val success"),
)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All rows of a JSON-lines file such as ``metrics.jsonl`` (a torn last line, from a killed run, is skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def keep_rows_up_to(path: Path, step: int) -> None:
    """Drop the rows of ``path`` (JSON lines with a ``step``) logged after ``step``: a resumed run then writes
    exactly what an uninterrupted one would have; a missing file stays missing."""
    if path.is_file():
        kept = [row for row in read_metrics(path) if row.get("step", 0) <= step]
        path.write_text("".join(json.dumps(row) + "\n" for row in kept))


def plot_learning_curve(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Draw reward and success per step into ``path`` (PNG); None when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for key, label in CURVE_SERIES:
        points = [(row["step"], row[key]) for row in rows if key in row and math.isfinite(row[key])]
        if points:
            steps, values = zip(*points, strict=True)
            axis.plot(steps, values, marker="o", markersize=3, label=label)
            drawn = True
    if drawn:
        axis.set_xlabel("training step")
        axis.grid(alpha=0.3)
        axis.legend()
        figure.tight_layout()
        figure.savefig(path, dpi=120)
    plt.close(figure)
    return path if drawn else None


class RunLogger:
    """Writes every step's metrics to ``<run_dir>/metrics.jsonl``, wandb (or nothing more), a tqdm bar.

    ``start_step`` > 0 resumes: rows after it (logged after the checkpoint was taken) are dropped from
    ``metrics.jsonl`` and ``trajectories.jsonl``, so they end up exactly as an uninterrupted run's; the
    wandb run with ``wandb_run_id`` continues. Lines (:meth:`write`) go to the console and ``train.log``.
    """

    def __init__(
        self,
        run_dir: Path,
        config: LoggerConfig,
        *,
        project: str,
        name: str,
        run_config: dict[str, Any],
        total_steps: int,
        start_step: int = 0,
        wandb_run_id: str | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.trajectories_path = self.run_dir / TRAJECTORIES_FILE
        for path in (self.metrics_path, self.trajectories_path):
            keep_rows_up_to(path, start_step)
        self.metrics_path.touch()  # every run has one, even before its first step
        self.wandb_run = None
        if config.backend == "wandb":
            self.wandb_run = self._start_wandb(config, project, name, run_config, wandb_run_id)
        self.progress = bar(total_steps, "train", "step", config.progress_bar, start_step)

    def _start_wandb(self, config: LoggerConfig, project: str, name: str, run_config: dict[str, Any],
                     run_id: str | None):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(
            project=project, name=name, dir=str(self.run_dir), mode=config.wandb.mode,
            entity=config.wandb.entity, group=config.wandb.group, tags=list(config.wandb.tags),
            config=run_config, id=run_id, resume="allow" if run_id else None,
        )

    @property
    def wandb_run_id(self) -> str | None:
        return self.wandb_run.id if self.wandb_run is not None else None

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Append one row ``{"step": step, **metrics}`` everywhere and advance the bar to ``step``."""
        row = {"step": step, **{key: float(value) for key, value in sorted(metrics.items())}}
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        if self.wandb_run is not None:
            self.wandb_run.log(metrics, step=step)
        if "reward" in metrics:
            self.progress.set_postfix(reward=f"{metrics['reward']:.3f}",
                                      success=f"{metrics.get('rollout/success_rate', float('nan')):.2f}")
        self.progress.update(step - self.progress.n)

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar, and log it to ``train.log``."""
        say(message)

    def phase(self, name: str) -> None:
        """Show the phase of the running step (rollout, update, validate) on the bar."""
        self.progress.set_description(f"train: {name}")

    def log_trajectories(self, rows: list[dict[str, Any]], step: int) -> None:
        """Append ``rows`` to ``trajectories.jsonl``; a few as a wandb Table ``trajectories``."""
        append_rows(self.trajectories_path, rows)
        if self.wandb_run is not None:
            self.wandb_run.log({"trajectories": wandb_table(rows)}, step=step)

    def finish(self) -> dict[str, Path | str | None]:
        """Close the bar and wandb, draw the learning curve; return and print where everything is."""
        self.progress.close()
        curve = plot_learning_curve(read_metrics(self.metrics_path), self.run_dir / CURVE_FILE)
        wandb_location = None
        if self.wandb_run is not None:
            offline = self.wandb_run.settings.mode == "offline"
            wandb_location = str(Path(self.wandb_run.dir).parent) if offline else self.wandb_run.url
            self.wandb_run.finish()
        say(f"metrics.jsonl:  {self.metrics_path}")
        if self.trajectories_path.is_file():
            say(f"trajectories:   {self.trajectories_path}")
        say(f"learning curve: {curve or '(no steps logged)'}")
        summary = validation_summary(self.run_dir)
        if summary:
            say(summary)
        if wandb_location:
            hint = f"  (offline; upload with: wandb sync {wandb_location})" if offline else ""
            say(f"wandb run:      {wandb_location}{hint}")
        return {"metrics_path": self.metrics_path, "curve": curve, "wandb": wandb_location}


class SilentLogger:
    """The logger of ranks > 0: every rank holds the same metrics, rank 0 alone writes them."""

    wandb_run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def write(self, message: str) -> None:
        pass

    def phase(self, name: str) -> None:
        pass

    def log_trajectories(self, rows: list[dict[str, Any]], step: int) -> None:
        pass

    def finish(self) -> dict[str, Any]:
        return {}


def episode_metrics(batch: RolloutBatch) -> dict[str, float]:
    """The seeds' headline numbers: ``reward`` (mean), ``reward_std`` (mean in-group std, as TRL) and
    ``completion_length`` (generated tokens per episode), and the episodes played (all ranks)."""
    rewards = batch.episode_reward.view(-1, batch.group_size)
    in_group_std = rewards.std(dim=1).mean().item() if batch.group_size > 1 else 0.0
    return {
        "rollout/num_episodes": float(len(batch)),
        "reward": batch.episode_reward.mean().item(),
        "reward_std": in_group_std,
        "completion_length": batch.loss_mask.sum(dim=1).float().mean().item(),
    }


def summary_line(step: int, metrics: dict[str, float]) -> str:
    """``step k | reward .. | success .. | loss .. | val_success .. | s/step .. (rollout .. update .. val ..)``
    (the keys present)."""
    parts = [f"step {step}"]
    for key, label in (("reward", "reward"), ("rollout/success_rate", "success"), ("actor/loss", "loss"),
                       ("val/success_rate", "val_success")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.3f}")
    if "timing/step_s" in metrics:
        phases = [f"{name} {metrics[key]:.1f}" for key, name in (("timing/rollout_s", "rollout"),
                  ("timing/update_s", "update"), ("timing/val_s", "val")) if key in metrics]
        parts.append(f"s/step {metrics['timing/step_s']:.1f}" + (f" ({', '.join(phases)})" if phases else ""))
    return " | ".join(parts)


VALIDATION_FILE = "validation.jsonl"


def append_validation_episodes(run_dir: Path, step: int, batch: RolloutBatch) -> None:
    """One row per validation episode, ``{"step", "level", "member", "success", "reward"}`` (``member``: the
    episode's index within its level's group, ``es_manager.val.group_size`` > 1), appended to
    ``<run_dir>/validation.jsonl``:
    what level-by-level confidence intervals are computed from (``algos.statistics``)."""
    rows = [{"step": step, "level": int(level), "member": b % batch.group_size, "success": bool(success),
             "reward": float(reward)}
            for b, (level, success, reward) in enumerate(zip(batch.seeds.tolist(), batch.success.tolist(),
                                                             batch.episode_reward.tolist(), strict=True))]
    with (Path(run_dir) / VALIDATION_FILE).open("a") as handle:
        handle.write("".join(json.dumps(row) + "\n" for row in rows))


def validation_by_level(run_dir: Path) -> dict[int, dict[int, float]]:
    """``{step: {level: success rate}}`` from ``<run_dir>/validation.jsonl``, steps and levels sorted: a level's
    rate is the mean over its members (``es_manager.val.group_size`` episodes; rows without ``member`` are
    member 0), the last row of a (step, level, member) winning, so a resumed run's repeated validation counts
    once. Empty without validation."""
    by_step: dict[int, dict[int, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    path = Path(run_dir) / VALIDATION_FILE
    for line in path.read_text().splitlines() if path.is_file() else []:
        row = json.loads(line)
        by_step[row["step"]][row["level"]][row.get("member", 0)] = float(row["success"])
    return {step: {level: float(np.mean(list(levels[level].values()))) for level in sorted(levels)}
            for step, levels in sorted(by_step.items())}


def validation_scores(run_dir: Path) -> dict[int, np.ndarray]:
    """``{step: success rate per validation level}``, levels in ascending order (:func:`validation_by_level`)."""
    return {step: np.array(list(levels.values())) for step, levels in validation_by_level(run_dir).items()}


def validation_levels(run_dir: Path) -> list[int]:
    """The levels of the run's first validation, sorted (as :func:`validation_scores` orders its scores);
    empty without validation."""
    by_level = validation_by_level(run_dir)
    return list(next(iter(by_level.values()), {}))


def validation_summary(run_dir: Path) -> str | None:
    """``validation success: step 0 0.12 [0.05, 0.21] (n=64) -> step 30 ...``: the first and last
    validation of the run with 95% bootstrap intervals over levels; None without validation."""
    scores = validation_scores(run_dir)
    if not scores:
        return None
    parts = [f"step {step} {bootstrap_ci(scores[step])}" for step in sorted({min(scores), max(scores)})]
    return "validation success: " + " -> ".join(parts)
