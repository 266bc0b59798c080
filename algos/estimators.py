"""Outcome advantage estimators over groups of rollouts, and their name registry.

``rewards`` is a float tensor ``[G, K]``: ``G`` groups (one prompt / env seed each) of ``K`` rollouts,
one scalar episode reward per rollout. Each estimator returns advantages of the same shape (the trainer
broadcasts them over every response token) and a flat ``dict[str, float]`` of metrics.
Standard deviations are ``torch.std``'s default (unbiased), as verl and TRL compute them.
A group of one rollout (``K == 1``) has no in-group statistics; as in verl, its baseline is mean 0 and
std 1, so the group-relative estimators give ``A = r`` (up to ``1 / (1 + epsilon)``), with a warning.

Adding an estimator is one function plus one decorator line::

    @register_estimator("my_estimator")
    def my_estimator(rewards, *, epsilon=1e-6): ...
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable

import torch

Estimator = Callable[..., tuple[torch.Tensor, dict[str, float]]]

ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str) -> Callable[[Estimator], Estimator]:
    """Decorator adding ``fn(rewards, *, option=default, ...) -> (adv, metrics)`` under ``name``."""

    def decorator(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ESTIMATORS[name] = fn
        return fn

    return decorator


def estimator_options(name: str) -> frozenset[str]:
    """Keyword options the estimator ``name`` accepts (its keyword-only parameters)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown advantage estimator {name!r}; allowed: {sorted(ESTIMATORS)}")
    parameters = inspect.signature(ESTIMATORS[name]).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    """Return ``rewards`` as a floating tensor ``[G, K]`` with G, K >= 1 and finite values, or raise."""
    rewards = torch.as_tensor(rewards)
    if not rewards.is_floating_point():
        rewards = rewards.float()
    if rewards.dim() != 2 or rewards.numel() == 0:
        raise ValueError(
            f"rewards must have shape [num_groups, group_size] with both >= 1, got {tuple(rewards.shape)}"
        )
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards must be finite, got NaN or inf")
    return rewards


def group_mean_std(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-group mean and unbiased std, each ``[G]``.

    A group whose rewards are all equal gets exactly its reward as mean and exactly 0 as std (plain
    float arithmetic leaves ~1e-8 residues there, which ``/ (std + epsilon)`` would blow up).
    With ``K == 1`` the std is 0.
    """
    constant = rewards.amax(dim=1) == rewards.amin(dim=1)
    mean = torch.where(constant, rewards[:, 0], rewards.mean(dim=1))
    if rewards.shape[1] < 2:
        return mean, torch.zeros_like(mean)
    return mean, torch.where(constant, torch.zeros_like(mean), rewards.std(dim=1))


def _std_or_zero(values: torch.Tensor) -> float:
    """Unbiased std of all elements, 0.0 for a single element (a metric must never be NaN)."""
    return values.std().item() if values.numel() > 1 else 0.0


def group_baseline(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The estimators' per-group mean and std ``[G]``: ``group_mean_std``, or (0, 1) for groups of one (verl).

    With ``K == 1`` it warns once per call site that the advantages are the raw rewards.
    """
    if rewards.shape[1] > 1:
        return group_mean_std(rewards)
    warnings.warn(
        "group_size=1: no in-group baseline, so advantages are the raw rewards (verl: mean 0, std 1)",
        stacklevel=3,
    )
    return rewards.new_zeros(rewards.shape[0]), rewards.new_ones(rewards.shape[0])


def _whiten(values: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``(v - mean(v)) / (std(v) + epsilon)`` over every element; exact zeros when all values are equal."""
    if values.amax() == values.amin():
        return torch.zeros_like(values)
    return (values - values.mean()) / (values.std() + epsilon)


@register_estimator("grpo")
def grpo(
    rewards: torch.Tensor,
    *,
    norm_adv_by_std_in_grpo: bool = True,
    soft_advantage_reweight: bool = False,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO and its variants Dr. GRPO / Dr. GRPO+ Soft.

    ``A_gk = r_gk - mean_g``, divided by ``std_g + epsilon`` when ``norm_adv_by_std_in_grpo`` (GRPO;
    Dr. GRPO turns it off). With ``soft_advantage_reweight`` (Dr. GRPO+ Soft) each group is scaled by
    ``w_g = std_g / (max_g' std_g' + epsilon)``: ``A'_gk = w_g * A_gk``, so the most varied group keeps
    weight ~1 and zero-variance groups get 0.
    """
    mean, std = group_baseline(rewards)
    advantages = rewards - mean[:, None]
    if norm_adv_by_std_in_grpo:
        advantages = advantages / (std[:, None] + epsilon)
    metrics: dict[str, float] = {}
    if soft_advantage_reweight:
        weights = std / (std.max() + epsilon)
        advantages = advantages * weights[:, None]
        metrics = {
            "train/soft_reweight_min": weights.min().item(),
            "train/soft_reweight_max": weights.max().item(),
            "train/soft_reweight_mean": weights.mean().item(),
        }
    return advantages, metrics


@register_estimator("sr_grpo")
def sr_grpo(
    rewards: torch.Tensor, *, tau: float = 0.5, epsilon: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """SR-GRPO (soft-reward GRPO).

    ``z_k = (r_k - mean) / (std + epsilon)``, ``w = softmax(z / tau)``, ``A_soft = sum_k w_k r_k``;
    every rollout of the group gets the same advantage ``A_soft``. ``tau > 0``: smaller is sharper.
    Metrics ``soft_advantage_mean`` / ``soft_advantage_std`` are taken over the groups' ``A_soft``.
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    mean, std = group_baseline(rewards)
    z = (rewards - mean[:, None]) / (std[:, None] + epsilon)
    weights = torch.softmax(z / tau, dim=1)  # torch's softmax subtracts the row max: stable
    soft_advantage = (weights * rewards).sum(dim=1)
    advantages = soft_advantage[:, None].expand_as(rewards).clone()
    metrics = {
        "soft_advantage_mean": soft_advantage.mean().item(),
        "soft_advantage_std": _std_or_zero(soft_advantage),
    }
    return advantages, metrics


@register_estimator("rloo")
def rloo(rewards: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE leave-one-out: ``A_k = r_k - mean_{j != k} r_j = K / (K - 1) * (r_k - mean)``; ``A = r`` when K = 1."""
    group_size = rewards.shape[1]
    mean, _ = group_baseline(rewards)
    return (rewards - mean[:, None]) * group_size / max(group_size - 1, 1), {}


@register_estimator("reinforce_plus_plus_baseline")
def reinforce_plus_plus_baseline(
    rewards: torch.Tensor, *, epsilon: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE++ with group baseline (verl's ``reinforce_plus_plus_baseline``).

    ``b_gk = r_gk - mean_g``, then whitening over the whole batch: ``A = (b - mean(b)) / (std(b) + epsilon)``.
    (verl whitens the token-level copies, weighting each rollout by its response length; here each
    rollout counts once.)
    """
    mean, _ = group_baseline(rewards)
    return _whiten(rewards - mean[:, None], epsilon), {}


@register_estimator("reinforce_plus_plus")
def reinforce_plus_plus(
    rewards: torch.Tensor, *, epsilon: float = 1e-6
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE++ without a group baseline (verl's ``reinforce_plus_plus``): the returns whitened over the batch.

    ``A = (r - mean(r)) / (std(r) + epsilon)`` over all ``G * K`` rollouts; the groups play no part.
    verl computes discounted token returns ``R_t = gamma^(T-1-t) * r`` (the outcome reward sits on the
    last token) and whitens them over all response tokens. TurnRL uses verl's default ``gamma = 1``,
    where every token's return is the episode reward ``r``, and counts each rollout once instead of once
    per response token.
    """
    return _whiten(rewards, epsilon), {}


def compute_advantages(
    rewards: torch.Tensor, estimator: str = "grpo", **options: float | bool
) -> tuple[torch.Tensor, dict[str, float]]:
    """Advantages ``[G, K]`` and metrics for ``rewards [G, K]`` with the registered ``estimator``.

    ``options`` (``norm_adv_by_std_in_grpo``, ``soft_advantage_reweight``, ``tau``, ``epsilon``, ...) may
    hold every algorithm option at once: each estimator receives only those it declares, so a trainer
    can pass its whole config. An option that no registered estimator declares is a ``ValueError``.
    Metrics always include ``train/adv_mean`` and ``train/adv_std``.
    """
    accepted = estimator_options(estimator)
    known = frozenset().union(*(estimator_options(name) for name in ESTIMATORS))
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown advantage option(s) {unknown}; allowed: {sorted(known)}")
    rewards = check_rewards(rewards)
    advantages, metrics = ESTIMATORS[estimator](
        rewards, **{key: value for key, value in options.items() if key in accepted}
    )
    metrics = {
        "train/adv_mean": advantages.mean().item(),
        "train/adv_std": _std_or_zero(advantages),
        **metrics,
    }
    return advantages, metrics
