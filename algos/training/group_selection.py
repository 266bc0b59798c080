"""Which of a rollout's groups the update trains on: the ``rollout_filter_*`` keys applied to a batch.

The pure ranking lives in :mod:`algos.filtering`; this module feeds it a :class:`RolloutBatch` and the
run's :class:`RolloutConfig`, so the trainer's step reads as "roll out, select, update".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.rollout import RolloutBatch
from algos.filtering import should_reroll
from algos.training.schema import RolloutConfig


def collect_groups(play: Callable[[int], RolloutBatch], config: RolloutConfig
                   ) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(batch, rewards [G, K], kept group indices, filter metrics)`` of ``play(0)``.

    Groups are ranked by ``rollout_filter_metric`` (``length`` = generated tokens per episode) and kept by
    :meth:`RolloutConfig.keep_groups`. With ``rollout_filter_max_rerolls = N > 0`` a batch where the filter
    keeps none is replaced by ``play(1)``, ``play(2)``, ... (re-rolls: fresh levels and sampling seeds), at
    most N times, then a ``RuntimeError`` (:func:`algos.should_reroll`); the metrics then include
    ``rollout/rerolls`` (the re-rolls this step needed). With N = 0 at least one group is kept.
    """
    attempt, max_rerolls = 0, config.rollout_filter_max_rerolls
    while True:
        batch = play(attempt)
        rewards = batch.episode_reward.view(-1, batch.group_size)
        kept, metrics = config.keep_groups(rewards, batch.loss_mask.sum(dim=1).view_as(rewards),
                                           allow_empty=max_rerolls > 0)
        if not should_reroll(kept, attempt, max_rerolls):
            return batch, rewards, kept, metrics | ({"rollout/rerolls": float(attempt)} if max_rerolls else {})
        attempt += 1
