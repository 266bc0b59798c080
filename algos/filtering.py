"""RAGEN-style rollout filtering: keep the groups whose score (by default the in-group reward std) is high.

Groups with no reward variance carry no GRPO learning signal; filtering them (or the least varied ones)
before the update focuses the batch on informative prompts.
"""

from __future__ import annotations

import math
import numbers

import torch

from algos.estimators import check_rewards, group_mean_std

FILTER_STRATEGIES = ("top_k", "ratio", "top_p", "min_p")
FILTER_TYPES = ("largest", "smallest")


def check_filter_options(strategy: str, value: float, filter_type: str) -> None:
    """Raise ``ValueError`` naming the bad option and what is allowed.

    ``top_k``: value an integer >= 1; ``ratio`` and ``top_p``: value in (0, 1]; ``min_p``: value in [0, 1].
    """
    if strategy not in FILTER_STRATEGIES:
        raise ValueError(f"unknown rollout_filter_strategy {strategy!r}; allowed: {list(FILTER_STRATEGIES)}")
    if filter_type not in FILTER_TYPES:
        raise ValueError(f"unknown rollout_filter_type {filter_type!r}; allowed: {list(FILTER_TYPES)}")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"rollout_filter_value must be a finite number, got {value!r}")
    if strategy == "top_k" and (value < 1 or value != int(value)):
        raise ValueError(f"rollout_filter_value for 'top_k' must be an integer >= 1, got {value}")
    if strategy in ("ratio", "top_p") and not 0 < value <= 1:
        raise ValueError(f"rollout_filter_value for {strategy!r} must be in (0, 1], got {value}")
    if strategy == "min_p" and not 0 <= value <= 1:
        raise ValueError(f"rollout_filter_value for 'min_p' must be in [0, 1], got {value}")


def _count_to_keep(strategy: str, value: float, sorted_scores: torch.Tensor, num_groups: int) -> int:
    """How many of the candidates (scores sorted best first) the strategy keeps; at least 1."""
    if strategy == "top_k":
        count = int(value)
    elif strategy == "ratio":
        count = math.floor(value * num_groups + 1e-9)
    elif strategy == "top_p":
        cumulative = torch.cumsum(sorted_scores, dim=0)
        count = int((cumulative < value * cumulative[-1]).sum().item()) + 1
    else:  # min_p
        count = int((sorted_scores >= value * sorted_scores[0]).sum().item())
    return min(max(count, 1), sorted_scores.numel())


def filter_groups(
    rewards: torch.Tensor,
    strategy: str = "top_k",
    *,
    value: float,
    filter_type: str = "largest",
    include_zero: bool = True,
    scores: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ascending indices (``LongTensor``) of the groups of ``rewards [G, K]`` kept for the update; metrics.

    Groups are ranked by ``scores [G]`` (default: in-group reward std), best first (``filter_type
    ="largest"``) or least first (``"smallest"``, for ablations); ties keep the lower index.

    - ``top_k``: keep ``min(value, G)`` groups.
    - ``ratio``: keep ``floor(value * G)`` groups.
    - ``top_p``: keep the shortest ranked prefix whose cumulative score reaches ``value * total``.
    - ``min_p``: keep groups with ``score >= value * best score``.

    For ``"smallest"``, top_p/min_p use the reflected score ``max(s) - s``. With ``include_zero=False``
    zero-score groups are dropped before ranking (unless that drops every group). At least one group
    is always kept. Metrics: ``rollout/filter_kept_ratio``, ``rollout/in_group_std`` and
    ``rollout/chosen_in_group_std`` (mean in-group reward std of all and of the kept groups).
    """
    check_filter_options(strategy, value, filter_type)
    rewards = check_rewards(rewards)
    num_groups = rewards.shape[0]
    _, reward_std = group_mean_std(rewards)
    if scores is None:
        scores = reward_std
    scores = torch.as_tensor(scores, dtype=rewards.dtype, device=rewards.device)
    if scores.shape != (num_groups,) or not torch.isfinite(scores).all():
        raise ValueError(f"scores must be finite with shape ({num_groups},), got {tuple(scores.shape)}")
    if strategy in ("top_p", "min_p") and (scores < 0).any():
        raise ValueError(f"scores must be >= 0 for strategy {strategy!r}")

    candidates = torch.arange(num_groups, device=rewards.device)
    if not include_zero and (scores != 0).any():
        candidates = candidates[scores[candidates] != 0]
    ranking_scores = scores[candidates]
    if filter_type == "smallest":
        ranking_scores = ranking_scores.max() - ranking_scores
    order = torch.sort(ranking_scores, descending=True, stable=True).indices
    count = _count_to_keep(strategy, value, ranking_scores[order], num_groups)
    kept = torch.sort(candidates[order[:count]]).values

    metrics = {
        "rollout/filter_kept_ratio": kept.numel() / num_groups,
        "rollout/in_group_std": reward_std.mean().item(),
        "rollout/chosen_in_group_std": reward_std[kept].mean().item(),
    }
    return kept, metrics
