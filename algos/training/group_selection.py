"""Which of a rollout's groups the update trains on: the ``rollout_filter_*`` keys applied to a batch.

The pure ranking lives in :mod:`algos.filtering`; this module feeds it a :class:`RolloutBatch` and the
run's :class:`RolloutConfig`, so the trainer's step reads as "roll out, select, update".
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from agents.console import say
from agents.rollout import RolloutBatch
from algos.filtering import filter_groups, should_reroll
from algos.training.schema import RolloutConfig


def collect_groups(play: Callable[[int], RolloutBatch], config: RolloutConfig
                   ) -> tuple[RolloutBatch, torch.Tensor, torch.Tensor, dict[str, float]]:
    """``(batch, rewards [G, K], kept group indices, filter metrics)`` of ``play(0)``.

    Groups are ranked by ``rollout_filter_metric`` (``length`` = generated tokens per episode) and kept by
    :meth:`RolloutConfig.keep_groups`. With ``rollout_filter_max_rerolls = N > 0`` a batch where the filter
    keeps none is replaced by ``play(1)``, ``play(2)``, ... (re-rolls: fresh levels and sampling seeds), at
    most N times (:func:`algos.should_reroll`); the metrics then include ``rollout/rerolls`` (the re-rolls
    this step needed) and ``rollout/reroll_cap_spent`` (1 when the N-th re-roll was flat too: every group
    of that batch is trained and a warning is printed, so a collapsed policy never ends a long run).
    With N = 0 at least one group is kept.
    """
    attempt, max_rerolls = 0, config.rollout_filter_max_rerolls
    while True:
        batch = play(attempt)
        rewards = batch.episode_reward.view(-1, batch.group_size)
        lengths = batch.loss_mask.sum(dim=1).view_as(rewards)
        kept, metrics = config.keep_groups(rewards, lengths, allow_empty=max_rerolls > 0)
        if not should_reroll(kept, attempt, max_rerolls):
            break
        attempt += 1
    if not max_rerolls:
        return batch, rewards, kept, metrics
    cap_spent = kept.numel() == 0
    if cap_spent:
        say(f"warning: the rollout filter kept no group in {attempt + 1} batches in a row "
            f"(actor_rollout_ref.rollout.rollout_filter_max_rerolls={max_rerolls}): training every group of the last one")
        kept, metrics = filter_groups(rewards, "top_k", value=rewards.shape[0])  # every group, with its metrics
    return batch, rewards, kept, metrics | {"rollout/rerolls": float(attempt), "rollout/reroll_cap_spent": float(cap_spent)}
