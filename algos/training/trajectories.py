"""Sample trajectories while training: every ``trainer.log_trajectories_freq`` steps, one JSON row per
episode of the step's rollout in ``<run dir>/trajectories.jsonl`` (and a wandb Table of a few).

A row: ``step``, ``seed`` (the level), ``group``, ``member``, ``success``, ``reward`` (the episode reward
the trainer used), ``advantage`` (null when the group filter dropped the group), ``truncated`` and
``turns``: per turn the env ``observation`` before it, the ``reply`` (prefill included), the parsed
``actions``, ``format_ok`` and the turn ``reward`` (``agents.replay``; the turn rewards sum to ``reward``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from agents.replay import replay
from agents.rollout import RolloutBatch
from algos.training.schema import TurnRLConfig


class TrainerView(Protocol):
    """What :func:`log_trajectories` reads of ``algos.training.trainer.Trainer`` (no import of it: no cycle)."""

    config: TurnRLConfig
    step: int
    rank: int
    last_rollout: tuple[RolloutBatch, torch.Tensor, torch.Tensor | None]
    rollout_engine: Any

TRAJECTORIES_FILE = "trajectories.jsonl"


def trajectory_rows(step: int, batch: RolloutBatch, kept: torch.Tensor, advantages: torch.Tensor | None,
                    config: TurnRLConfig, max_actions_per_traj: int) -> list[dict[str, Any]]:
    """One row per episode of ``batch``; ``advantages [len(kept), group_size]`` belong to the ``kept`` groups
    (None, e.g. token-level GAE advantages: every row's ``advantage`` is null)."""
    advantage_of = {} if advantages is None else {
        (int(group), member): float(advantages[i, member])
        for i, group in enumerate(kept.tolist()) for member in range(batch.group_size)}
    rows = []
    for b in range(len(batch)):
        group, member, seed = int(batch.group_index[b]), b % batch.group_size, int(batch.seeds[b])
        episode = replay(config.env.name, config.env.kwargs, seed, member, batch.turns[b], config.agent_proxy,
                         max_actions_per_traj, config.es_manager.format_penalty)
        rows.append({
            "step": step, "seed": seed, "group": group, "member": member, "success": bool(batch.success[b]),
            "reward": float(batch.episode_reward[b]), "advantage": advantage_of.get((group, member)),
            "truncated": bool(batch.truncated[b]),
            "turns": [{"observation": t.observation, "reply": t.reply, "actions": t.actions,
                       "format_ok": t.format_ok, "reward": t.reward} for t in episode.turns],
        })
    return rows


def log_trajectories(logger, trainer: TrainerView) -> None:
    """On rank 0, every ``trainer.log_trajectories_freq`` steps (0 = never): the rows of the trainer's last
    rollout (``trainer.last_rollout``: batch, kept groups, advantages) to ``logger.log_trajectories``."""
    freq, step = trainer.config.trainer.log_trajectories_freq, trainer.step
    if trainer.rank == 0 and freq and step % freq == 0:
        rows = trajectory_rows(step, *trainer.last_rollout, trainer.config, trainer.rollout_engine.max_actions_per_traj)
        logger.log_trajectories(rows, step)


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("a") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def wandb_table(rows: list[dict[str, Any]], limit: int = 4):
    """A ``wandb.Table`` of the first ``limit`` rows, one per episode, its turns as readable text."""
    import wandb

    table = wandb.Table(columns=["step", "seed", "member", "success", "reward", "advantage", "episode"])
    for row in rows[:limit]:
        text = "\n\n".join(f"[turn {i}] observation:\n{t['observation']}\nreply:\n{t['reply']}\n"
                           f"actions: {t['actions']} reward: {t['reward']:+g}"
                           for i, t in enumerate(row["turns"], start=1))
        table.add_data(row["step"], row["seed"], row["member"], row["success"], row["reward"], row["advantage"], text)
    return table
