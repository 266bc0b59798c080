"""Token-level losses: aggregation modes, the PPO clipped policy loss, KL penalties and entropy.

Shapes: ``[B, T]`` tensors (B responses, T token positions) with a 0/1 ``mask`` marking the tokens the
policy generated; only those contribute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")

PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]
POLICY_LOSSES: dict[str, PolicyLoss] = {}
"""Policy losses by ``actor_rollout_ref.actor.policy_loss`` name. Each takes
``(logp, old_logp, advantages, mask, *, clip_ratio_low, clip_ratio_high, clip_ratio_c, loss_agg_mode,
normaliser)`` and returns the aggregated loss and its metrics."""


def register_policy_loss(name: str) -> Callable[[PolicyLoss], PolicyLoss]:
    """Decorator adding a policy loss to :data:`POLICY_LOSSES` under ``name``."""

    def add(function: PolicyLoss) -> PolicyLoss:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = function
        return function

    return add


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must have the same shape, got {shapes}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)``; 0 when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def loss_normaliser(loss_mask: torch.Tensor, loss_agg_mode: str, norm_length: int | None = None) -> float:
    """The denominator :func:`aggregate_loss` divides by for ``loss_mask [B, T]``.

    - ``token-mean``: the number of unmasked tokens;
    - ``seq-mean-token-sum`` / ``seq-mean-token-mean``: the number of sequences with an unmasked token;
    - ``seq-mean-token-sum-norm``: ``norm_length`` (default ``T``), a constant.

    Counts are floored at 1, so an all-empty mask aggregates to 0, never NaN. Pass a whole mini-batch's
    value to each of its micro-batches (the way verl's ``agg_loss`` takes global counts): their
    aggregates then add up to the mini-batch's exactly.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; allowed: {list(LOSS_AGG_MODES)}")
    if loss_agg_mode == "seq-mean-token-sum-norm":
        norm_length = loss_mask.shape[-1] if norm_length is None else norm_length
        if norm_length <= 0:
            raise ValueError(f"norm_length must be > 0, got {norm_length}")
        return float(norm_length)
    if loss_agg_mode == "token-mean":
        return float(max(int(loss_mask.sum()), 1))
    return float(max(int((loss_mask.sum(dim=-1) > 0).sum()), 1))


def aggregate_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str,
    norm_length: int | None = None,
    normaliser: float | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar: a masked sum divided by ``normaliser``.

    - ``token-mean``: ``sum_bt m*l / N_tokens`` (every token of the batch weighs the same).
    - ``seq-mean-token-sum``: ``sum_b (sum_t m*l) / N_seqs`` (Dr. GRPO).
    - ``seq-mean-token-mean``: ``sum_b (sum_t m*l / sum_t m) / N_seqs`` (original GRPO).
    - ``seq-mean-token-sum-norm``: ``sum_bt m*l / norm_length``, a fixed normaliser, by default ``T``.

    ``normaliser`` defaults to :func:`loss_normaliser` of this batch; a micro-batch passes its
    mini-batch's. ``norm_length`` is read by the last mode only.
    """
    _check_same_shape(loss_mat=loss_mat, loss_mask=loss_mask)
    if loss_mat.dim() != 2:
        raise ValueError(f"loss_mat must have shape [batch, tokens], got {tuple(loss_mat.shape)}")
    if normaliser is None:
        normaliser = loss_normaliser(loss_mask, loss_agg_mode, norm_length)
    elif loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; allowed: {list(LOSS_AGG_MODES)}")
    mask = loss_mask.to(loss_mat.dtype)
    token_losses = loss_mat * mask
    if loss_agg_mode == "seq-mean-token-mean":
        return (token_losses.sum(dim=-1) / mask.sum(dim=-1).clamp(min=1)).sum() / normaliser
    return token_losses.sum() / normaliser


@register_policy_loss("vanilla")
def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    normaliser: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with clip-higher bounds and dual clip, aggregated by ``loss_agg_mode``
    (over ``normaliser``, see :func:`aggregate_loss`). Registered as ``vanilla``, verl's name.

    ``ratio = exp(logp - old_logp)``;
    ``L_clip = max(-A * ratio, -A * clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high))``;
    for ``A < 0`` the dual clip bounds it: ``L = min(L_clip, -A * clip_ratio_c)``.
    Metrics: ``actor/pg_clipfrac`` (share of tokens where clipping is active),
    ``actor/pg_clipfrac_lower`` (share where the dual clip is active), ``actor/ppo_kl``
    (mean ``old_logp - logp``).
    """
    _check_same_shape(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    if clip_ratio_low < 0 or clip_ratio_high < 0:
        raise ValueError(f"clip ratios must be >= 0, got low={clip_ratio_low}, high={clip_ratio_high}")
    if clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be > 1 (dual clip), got {clip_ratio_c}")
    mask = mask.to(logp.dtype)
    log_ratio = (logp - old_logp).clamp(-20.0, 20.0)  # keeps exp finite
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    clip_loss = torch.maximum(unclipped, clipped)
    dual_clip_bound = -advantages * clip_ratio_c
    negative = advantages < 0
    losses = torch.where(negative, torch.minimum(clip_loss, dual_clip_bound), clip_loss)
    metrics = {
        "actor/pg_clipfrac": masked_mean((clipped > unclipped).to(logp.dtype), mask).item(),
        "actor/pg_clipfrac_lower": masked_mean(
            ((clip_loss > dual_clip_bound) & negative).to(logp.dtype), mask
        ).item(),
        "actor/ppo_kl": masked_mean(-log_ratio, mask).item(),
    }
    return aggregate_loss(losses, mask, loss_agg_mode, normaliser=normaliser), metrics


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token estimate of ``KL(policy || ref)`` from the sampled tokens' log-probs.

    With ``d = logp - ref_logp``: ``kl``/``k1``: ``d``; ``abs``: ``|d|``; ``mse``/``k2``: ``d^2 / 2``;
    ``low_var_kl``/``k3``: ``exp(-d) + d - 1`` (Schulman's unbiased, non-negative estimator), computed
    with ``-d`` clamped to [-20, 20] and the result to [-10, 10] as verl does.
    """
    if kind not in KL_KINDS:
        raise ValueError(f"unknown kl kind {kind!r}; allowed: {list(KL_KINDS)}")
    _check_same_shape(logp=logp, ref_logp=ref_logp)
    diff = logp - ref_logp
    if kind in ("kl", "k1"):
        return diff
    if kind == "abs":
        return diff.abs()
    if kind in ("mse", "k2"):
        return 0.5 * diff.square()
    log_ratio = (-diff).clamp(-20.0, 20.0)
    return (torch.exp(log_ratio) - log_ratio - 1).clamp(-10.0, 10.0)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of ``softmax(logits)`` over the last axis: ``logsumexp(x) - sum_v p_v x_v``."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)


def value_loss(
    vpreds: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float = 0.5,
    loss_agg_mode: str = "token-mean",
    normaliser: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped value loss (verl's ``compute_value_loss``), aggregated by ``loss_agg_mode``.

    ``V_clip = old + clamp(vpred - old, -cliprange_value, cliprange_value)``;
    ``L = 0.5 * max((vpred - R)^2, (V_clip - R)^2)`` per token, then :func:`aggregate_loss`.
    Metrics: ``critic/vf_clipfrac`` (share of tokens where the clipped term is the larger),
    ``critic/vpred_mean`` (mean prediction over the masked tokens).
    """
    _check_same_shape(vpreds=vpreds, old_values=old_values, returns=returns, mask=mask)
    if cliprange_value <= 0:
        raise ValueError(f"cliprange_value must be > 0, got {cliprange_value}")
    mask = mask.to(vpreds.dtype)
    clipped = old_values + (vpreds - old_values).clamp(-cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (vpreds - returns).square(), (clipped - returns).square()
    losses = 0.5 * torch.maximum(unclipped_loss, clipped_loss)
    metrics = {
        "critic/vf_clipfrac": masked_mean((clipped_loss > unclipped_loss).to(vpreds.dtype), mask).item(),
        "critic/vpred_mean": masked_mean(vpreds.detach(), mask).item(),
    }
    return aggregate_loss(losses, mask, loss_agg_mode, normaliser=normaliser), metrics
