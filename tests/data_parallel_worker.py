"""A training run on a scripted rollout, for ``test_trainer``'s data-parallel check: run it with
``python`` (one process) or ``torchrun --nproc_per_node 2`` (two ranks, gloo); rank 0 writes
``<run dir>/metrics.jsonl``.

    python tests/data_parallel_worker.py RUN_DIR [HYDRA_OVERRIDE ...]

With ``SIGTERM_RANK=r`` in the environment, rank ``r`` sends itself SIGTERM during its first rollout
(the other ranks get no signal), for the check that all ranks still stop at the same step.

The rollout does not depend on how the groups are split over ranks, so both runs must log the same
metrics: the same filter and advantages, and the same loss and gradient norm.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_trainer import FixedAnswers, fake_run_config  # noqa: E402

from agents.model import build_tiny_model, load_tokenizer  # noqa: E402
from agents.rollout import RolloutBatch, rollout_metrics  # noqa: E402
from algos.training.data_parallel import rank_and_world  # noqa: E402
from algos.training.trainer import Trainer  # noqa: E402


class SeededAnswers(FixedAnswers):
    """Level ``s``: the first half of its group answers A and earns ``1 + s % 3``, the rest answer B (0),
    so groups differ in reward std (the top-k filter has a ranking to apply)."""

    pad_token_id = 0

    def __init__(self, tokenizer, env_groups: int, group_size: int, first_seed: int) -> None:
        super().__init__(tokenizer, env_groups, group_size)
        self.groups_per_step, self.first_seed = env_groups, first_seed

    def play(self, group_seeds: list[int], group_size: int, params, sampling_key=(), description="") -> RolloutBatch:
        self.env_groups = len(group_seeds)
        batch = super().rollout(1, params)
        levels = torch.tensor(group_seeds).repeat_interleave(group_size)
        batch.episode_reward = batch.episode_reward * (1.0 + levels % 3)
        batch.seeds = levels
        last = batch.loss_mask.shape[1] - 1 - batch.loss_mask.flip(1).argmax(dim=1)  # each reply's last token
        batch.token_rewards = torch.zeros(batch.input_ids.shape)
        batch.token_rewards[torch.arange(len(batch)), last] = batch.episode_reward  # for gae runs
        batch.metrics = rollout_metrics(batch, format_errors=0)
        return batch

    def rollout(self, step: int, params, groups=None, shard=None, attempt: int = 0) -> RolloutBatch:
        if step == 1 and os.environ.get("SIGTERM_RANK") == str(rank_and_world()[0]):
            os.kill(os.getpid(), signal.SIGTERM)
        first = self.first_seed + (step - 1) * self.groups_per_step
        share = range(self.groups_per_step) if groups is None else groups
        return self.play([first + g for g in share], self.group_size, params)


def main(run_dir: str, *overrides: str) -> None:
    config = fake_run_config(list(overrides))
    tokenizer = load_tokenizer(None)
    groups = config.es_manager.train
    rollout = SeededAnswers(tokenizer, groups.env_groups, groups.group_size, config.es_manager.train_seed_start)
    Trainer(config, Path(run_dir), model=build_tiny_model(tokenizer, seed=0), tokenizer=tokenizer,
            rollout_engine=rollout).fit()


if __name__ == "__main__":
    main(*sys.argv[1:])
