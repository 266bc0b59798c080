"""Which of a rollout's groups the update trains on: the ``rollout_filter_*`` keys applied to a batch.

The pure ranking lives in :mod:`algos.filtering`; this module feeds it a :class:`RolloutBatch` and the
run's :class:`RolloutConfig`, so the trainer's step reads as "roll out, select, update".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.rollout import RolloutBatch
from algos.filtering import filter_groups, group_scores, should_reroll
from algos.training.schema import RolloutConfig


def select_groups(batch: RolloutBatch, config: RolloutConfig) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(rewards [G, K], kept group indices, filter metrics)`` of ``batch``.

    Groups are scored by ``rollout_filter_metric`` (``length`` = generated tokens per episode) and kept by
    :func:`algos.filter_groups`. With ``rollout_filter_max_rerolls > 0`` the kept set may be empty (the
    trainer then re-rolls, :func:`algos.should_reroll`); otherwise at least one group is kept.
    """
    rewards = batch.episode_reward.view(-1, batch.group_size)
    lengths = batch.loss_mask.sum(dim=1).view_as(rewards)
    scores = group_scores(config.rollout_filter_metric, rewards, lengths=lengths)
    kept, metrics = filter_groups(rewards, config.rollout_filter_strategy, value=config.rollout_filter_value,
                                  filter_type=config.rollout_filter_type,
                                  include_zero=config.rollout_filter_include_zero, scores=scores,
                                  top_p_prob_mode=config.rollout_filter_top_p_prob_mode,
                                  allow_empty=config.rollout_filter_max_rerolls > 0)
    return rewards, kept, metrics


def collect_groups(play: Callable[[int], RolloutBatch], config: RolloutConfig
                   ) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, dict[str, float]]:
    """``play(0)``'s batch, its rewards, kept groups and filter metrics (:func:`select_groups`). A batch where
    the filter keeps none is replaced by ``play(1)``, ``play(2)``, ... (re-rolls: fresh levels and sampling
    seeds), at most ``rollout_filter_max_rerolls`` times, then a ``RuntimeError``; with re-rolls on, the
    metrics include ``rollout/rerolls`` (the re-rolls this step needed)."""
    attempt, max_rerolls = 0, config.rollout_filter_max_rerolls
    while True:
        batch = play(attempt)
        rewards, kept, metrics = select_groups(batch, config)
        if not should_reroll(kept, attempt, max_rerolls):
            return batch, rewards, kept, metrics | ({"rollout/rerolls": float(attempt)} if max_rerolls else {})
        attempt += 1
