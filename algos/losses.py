"""Token-level losses: aggregation modes, the PPO clipped policy loss, KL penalties and entropy.

Shapes: ``[B, T]`` tensors (B responses, T token positions) with a 0/1 ``mask`` marking the tokens the
policy generated; only those contribute.
"""

from __future__ import annotations

import torch

LOSS_AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"tensors must have the same shape, got {shapes}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sum(values * mask) / sum(mask)``; 0 when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1)


def aggregate_loss(
    loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str, norm_length: int | None = None
) -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar.

    - ``token-mean``: ``sum_bt m*l / sum_bt m`` (every token of the batch weighs the same).
    - ``seq-mean-token-sum``: mean over sequences of ``sum_t m*l`` (Dr. GRPO).
    - ``seq-mean-token-mean``: mean over sequences of ``sum_t m*l / sum_t m`` (original GRPO).
    - ``seq-mean-token-sum-norm``: ``sum_bt m*l / norm_length``, a fixed normaliser, by default ``T``;
      ``norm_length`` is used by this mode only.

    The seq-mean modes average over sequences with at least one unmasked token, so empty rows never
    give NaN; an all-empty mask gives 0.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; allowed: {list(LOSS_AGG_MODES)}")
    _check_same_shape(loss_mat=loss_mat, loss_mask=loss_mask)
    if loss_mat.dim() != 2:
        raise ValueError(f"loss_mat must have shape [batch, tokens], got {tuple(loss_mat.shape)}")
    mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        return masked_mean(loss_mat, mask)
    if loss_agg_mode == "seq-mean-token-sum-norm":
        norm_length = loss_mask.shape[-1] if norm_length is None else norm_length
        if norm_length <= 0:
            raise ValueError(f"norm_length must be > 0, got {norm_length}")
        return (loss_mat * mask).sum() / norm_length
    token_counts = mask.sum(dim=-1)
    seq_losses = (loss_mat * mask).sum(dim=-1)
    if loss_agg_mode == "seq-mean-token-mean":
        seq_losses = seq_losses / token_counts.clamp(min=1)
    return masked_mean(seq_losses, (token_counts > 0).to(loss_mat.dtype))


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.2,
    clip_ratio_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate with clip-higher bounds and dual clip, aggregated by ``loss_agg_mode``.

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
    return aggregate_loss(losses, mask, loss_agg_mode), metrics


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
