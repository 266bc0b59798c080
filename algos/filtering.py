"""RAGEN-style rollout filtering: keep the groups whose score (by default the in-group reward std) is high.

Groups with no reward variance carry no GRPO learning signal; filtering them (or the least varied ones)
before the update focuses the batch on informative prompts. RAGEN's own names are accepted beside
TurnRL's (see ``STRATEGY_ALIASES``, ``METRIC_ALIASES`` and the README's "RAGEN parity" table):

- RAGEN's ``top_k_abs`` (a count) is TurnRL's ``top_k``; RAGEN's fractional ``top_k`` is TurnRL's
  ``ratio`` (also spelled ``top_k_frac``). TurnRL's ``top_k`` stays the count, as in the seed's table.
- ``top_p`` has two probability modes, RAGEN's ``rollout_filter_top_p_prob_mode``: ``linear`` (default,
  shares of the score total) and ``softmax`` (a nucleus over ``softmax(score)``).
"""

from __future__ import annotations

import math
import numbers

import torch

from algos.estimators import check_rewards, group_mean_std

FILTER_STRATEGIES = ("top_k", "top_k_abs", "ratio", "top_k_frac", "top_p", "min_p")
STRATEGY_ALIASES = {"top_k_abs": "top_k", "top_k_frac": "ratio"}
"""RAGEN's strategy names -> the TurnRL strategy that computes the same selection."""
FILTER_TYPES = ("largest", "smallest")
TOP_P_PROB_MODES = ("linear", "softmax")
FILTER_METRICS = ("reward_std", "reward", "reward_sum", "length", "entropy", "entropy_std")
METRIC_ALIASES = {"reward_variance": "reward_std", "entropy_variance": "entropy_std"}
"""RAGEN's metric names -> TurnRL's (RAGEN's ``*_variance`` metrics rank by the in-group std too)."""


def canonical_metric(metric: str) -> str:
    """``metric`` (TurnRL's or RAGEN's name) as one of ``FILTER_METRICS``, or ``ValueError``."""
    metric = METRIC_ALIASES.get(metric, metric)
    if metric not in FILTER_METRICS:
        allowed = [*FILTER_METRICS, *METRIC_ALIASES]
        raise ValueError(f"unknown rollout_filter_metric {metric!r}; allowed: {allowed}")
    return metric


def check_filter_options(strategy: str, value: float, filter_type: str, top_p_prob_mode: str = "linear") -> None:
    """Raise ``ValueError`` naming the bad option and what is allowed.

    ``top_k``/``top_k_abs``: value an integer >= 1; ``ratio``/``top_k_frac`` and ``top_p``: value in (0, 1];
    ``min_p``: value in [0, 1].
    """
    if strategy not in FILTER_STRATEGIES:
        raise ValueError(f"unknown rollout_filter_strategy {strategy!r}; allowed: {list(FILTER_STRATEGIES)}")
    if filter_type not in FILTER_TYPES:
        raise ValueError(f"unknown rollout_filter_type {filter_type!r}; allowed: {list(FILTER_TYPES)}")
    if top_p_prob_mode not in TOP_P_PROB_MODES:
        raise ValueError(
            f"unknown rollout_filter_top_p_prob_mode {top_p_prob_mode!r}; allowed: {list(TOP_P_PROB_MODES)}"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"rollout_filter_value must be a finite number, got {value!r}")
    canonical = STRATEGY_ALIASES.get(strategy, strategy)
    if canonical == "top_k" and (value < 1 or value != int(value)):
        raise ValueError(f"rollout_filter_value for {strategy!r} must be an integer >= 1, got {value}")
    if canonical in ("ratio", "top_p") and not 0 < value <= 1:
        raise ValueError(f"rollout_filter_value for {strategy!r} must be in (0, 1], got {value}")
    if canonical == "min_p" and not 0 <= value <= 1:
        raise ValueError(f"rollout_filter_value for 'min_p' must be in [0, 1], got {value}")


def group_scores(
    metric: str,
    rewards: torch.Tensor,
    *,
    lengths: torch.Tensor | None = None,
    entropies: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-group ranking scores ``[G]`` for ``rollout_filter_metric`` from per-episode values ``[G, K]``.

    ``reward_std`` (default): in-group reward std; ``reward``: group mean reward; ``reward_sum``: group
    reward sum; ``length``: group mean of ``lengths`` (response tokens per episode); ``entropy``: group
    mean of ``entropies`` (each episode's mean token entropy); ``entropy_std``: their in-group std.
    The trainer passes ``lengths`` / ``entropies`` when the metric needs them.
    """
    metric = canonical_metric(metric)
    rewards = check_rewards(rewards)
    if metric in ("reward_std", "reward"):
        mean, std = group_mean_std(rewards)
        return std if metric == "reward_std" else mean
    if metric == "reward_sum":
        return rewards.sum(dim=1)
    name, values = ("lengths", lengths) if metric == "length" else ("entropies", entropies)
    if values is None:
        raise ValueError(f"rollout_filter_metric {metric!r} needs per-episode {name} [G, K]; none were given")
    values = torch.as_tensor(values, dtype=rewards.dtype)
    if values.shape != rewards.shape or not torch.isfinite(values).all():
        raise ValueError(f"{name} must be finite with shape {tuple(rewards.shape)}, got {tuple(values.shape)}")
    mean, std = group_mean_std(values)
    return std if metric == "entropy_std" else mean


def _count_to_keep(
    strategy: str, value: float, sorted_scores: torch.Tensor, num_groups: int, top_p_prob_mode: str
) -> int:
    """How many of the candidates (scores sorted best first) the strategy keeps; at least 1."""
    if strategy == "top_k":
        count = int(value)
    elif strategy == "ratio":
        count = math.floor(value * num_groups + 1e-9)
    elif strategy == "top_p" and top_p_prob_mode == "softmax":  # value 1 keeps all, as in RAGEN
        cumulative = torch.cumsum(torch.softmax(sorted_scores, dim=0), dim=0)
        count = sorted_scores.numel() if value >= 1 else int((cumulative < value).sum().item()) + 1
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
    top_p_prob_mode: str = "linear",
    allow_empty: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ascending indices (``LongTensor``) of the groups of ``rewards [G, K]`` kept for the update; metrics.

    Groups are ranked by ``scores [G]`` (default: in-group reward std; see ``group_scores`` for the other
    ``rollout_filter_metric`` values), best first (``filter_type="largest"``) or least first
    (``"smallest"``, for ablations); ties keep the lower index.

    - ``top_k`` (RAGEN's ``top_k_abs``): keep ``min(value, G)`` groups.
    - ``ratio`` (RAGEN's fractional ``top_k``, also ``top_k_frac``): keep ``floor(value * G)`` groups.
    - ``top_p``, ``top_p_prob_mode="linear"``: keep the shortest ranked prefix whose cumulative score
      reaches ``value * total``; ``"softmax"``: the shortest prefix whose ``softmax(score)`` mass reaches
      ``value``, all candidates at ``value = 1`` (a nucleus: near-equal scores keep about ``value * G``).
    - ``min_p``: keep groups with ``score >= value * best score``.

    For ``"smallest"`` the ranking uses the reflected score ``max(s) - s``. With ``include_zero=False``
    zero-score groups are dropped before ranking; if that drops every group, all of them are kept, or
    none with ``allow_empty=True`` (then the trainer re-rolls, see ``should_reroll``). Otherwise at least
    one group is kept. Metrics: ``rollout/filter_kept_ratio``, ``rollout/in_group_std`` and
    ``rollout/chosen_in_group_std`` (mean in-group reward std of all and of the kept groups, 0 if none).
    """
    check_filter_options(strategy, value, filter_type, top_p_prob_mode)
    strategy = STRATEGY_ALIASES.get(strategy, strategy)
    rewards = check_rewards(rewards)
    num_groups = rewards.shape[0]
    _, reward_std = group_mean_std(rewards)
    if scores is None:
        scores = reward_std
    scores = torch.as_tensor(scores, dtype=rewards.dtype, device=rewards.device)
    if scores.shape != (num_groups,) or not torch.isfinite(scores).all():
        raise ValueError(f"scores must be finite with shape ({num_groups},), got {tuple(scores.shape)}")
    linear_share = strategy == "min_p" or (strategy == "top_p" and top_p_prob_mode == "linear")
    if linear_share and (scores < 0).any():
        raise ValueError(f"scores must be >= 0 for strategy {strategy!r} (linear shares of the best or total)")

    candidates = torch.arange(num_groups, device=rewards.device)
    if not include_zero and ((scores != 0).any() or allow_empty):
        candidates = candidates[scores[candidates] != 0]
    if candidates.numel() == 0:
        kept = candidates
    else:
        ranking_scores = scores[candidates]
        if filter_type == "smallest":
            ranking_scores = ranking_scores.max() - ranking_scores
        order = torch.sort(ranking_scores, descending=True, stable=True).indices
        count = _count_to_keep(strategy, value, ranking_scores[order], num_groups, top_p_prob_mode)
        kept = torch.sort(candidates[order[:count]]).values

    metrics = {
        "rollout/filter_kept_ratio": kept.numel() / num_groups,
        "rollout/in_group_std": reward_std.mean().item(),
        "rollout/chosen_in_group_std": reward_std[kept].mean().item() if kept.numel() else 0.0,
    }
    return kept, metrics


def should_reroll(kept: torch.Tensor, rerolls_done: int, max_rerolls: int) -> bool:
    """Whether the trainer should collect a fresh batch because the filter kept no group (RAGEN's re-roll):
    True when ``kept`` is empty and ``rerolls_done < max_rerolls``. Once the cap is spent the caller trains
    the last batch whole, as with no re-roll at all: a stretch of flat batches never ends a run."""
    return kept.numel() == 0 and rerolls_done < max_rerolls
