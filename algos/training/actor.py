"""The policy's side of a step: log-probs of the generated tokens, and the PPO update over mini-batches.

Loss normalisation is explicit arithmetic (as verl's ``agg_loss`` takes global counts): every
micro-batch of a mini-batch divides its summed loss by the *mini-batch's* normaliser
(``algos.loss_normaliser``: its token count, sequence count or fixed length), so the micro-batch losses
add up to the mini-batch loss. DeepSpeed averages the ranks' gradients, so each rank scales its loss by
``world_size``: ``(1/W) sum_r W sum_{i on r} grad L_i = grad L_mini``, one process's gradient exactly.

The sampler (the rollout backend) and the trainer score the same tokens slightly differently (another
engine, dtype or kernel). With the sampler's log-probs ``s`` (``rollout_log_probs``) and the trainer's
at the rollout weights ``o`` (old log-probs), every micro-batch reports ``rollout/logprob_diff_mean``
and ``_max`` (of ``|o - s|`` over its generated tokens) and ``rollout/ratio_max`` (of ``exp(o - s)``);
the step's value is the mean (``_mean``) or the max (``_max``) over micro-batches. Truncated importance
sampling (``tis_imp_ratio_cap = C``) corrects the policy gradient for the mismatch per token::

    L_t = min(exp(o_t - s_t), C) * L_policy_t        (the weight has no gradient)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable

import numpy as np
import torch
from deepspeed.runtime.engine import DeepSpeedEngine

from algos import POLICY_LOSSES, aggregate_loss, kl_penalty, loss_normaliser
from algos.training.data_parallel import all_reduce_sum, gather_lists, rank_share
from algos.training.engine import accumulate, cpu_autocast
from algos.training.packed_logprobs import grouped_response_log_probs
from algos.training.schema import TrainerActorConfig
from algos.training.update_batch import MicroBatch, UpdateBatch


@torch.no_grad()
def token_outputs(forward: Callable[[MicroBatch], torch.Tensor], batch: UpdateBatch, settings: TrainerActorConfig,
                  device: torch.device, rank: int, world_size: int) -> torch.Tensor:
    """``[B, T-1]`` per-token outputs of ``forward`` (a micro-batch -> its ``[b, t-1]`` tensor), micro-batch
    by micro-batch (``settings``' size or token budget); with several ranks each computes its share of the
    rows and the sum over ranks assembles them. The forwards run in ``settings.bf16``'s precision
    (``engine.cpu_autocast``), as the update's do."""
    outputs = torch.zeros(batch.response_mask.shape)
    chunks = batch.micro_batches(torch.arange(len(batch)), settings.ppo_micro_batch_size_per_gpu,
                                 settings.micro_batch_tokens)
    for index, is_padding in rank_share(chunks, rank, world_size):
        with cpu_autocast(settings.bf16):
            values = forward(batch.rows(index).to(device))
        if not is_padding:  # a padding pass only keeps the ranks' pass counts equal
            outputs[index, : values.shape[1]] = values.float().cpu()
    return all_reduce_sum(outputs.to(device)).cpu()  # NCCL reduces only device tensors


def sequence_log_probs(model: torch.nn.Module, batch: UpdateBatch, actor: TrainerActorConfig, temperature: float,
                       device: torch.device, rank: int, world_size: int) -> torch.Tensor:
    """``[B, T-1]`` log-probs of the generated tokens under ``model`` (:func:`token_outputs`)."""
    model.eval()

    def forward(micro: MicroBatch) -> torch.Tensor:
        return grouped_response_log_probs(model, micro.input_ids, micro.attention_mask, micro.response_mask,
                                          micro.group_index if actor.share_prompt_prefix else None, temperature)[0]

    return token_outputs(forward, batch, actor, device, rank, world_size)


def needs_old_log_probs(actor: TrainerActorConfig, batch_size: int) -> bool:
    """Old log-probs need their own pass unless one epoch of one mini-batch makes them the live forward's
    (detached); truncated importance sampling always takes them from their own pass."""
    return actor.tis_imp_ratio_cap > 0 or actor.ppo_epochs > 1 or batch_size > actor.ppo_mini_batch_size


def sampler_mismatch(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    """``rollout/logprob_diff_mean``, ``_max`` (of ``|old - sampler|``) and ``rollout/ratio_max`` (of
    ``exp(old - sampler)``) over the generated tokens (``mask``); all 0 without one."""
    on = mask.bool()
    if not on.any():
        return {"rollout/logprob_diff_mean": 0.0, "rollout/logprob_diff_max": 0.0, "rollout/ratio_max": 0.0}
    diff = (old_logp - rollout_logp)[on].float()
    return {"rollout/logprob_diff_mean": diff.abs().mean().item(), "rollout/logprob_diff_max": diff.abs().max().item(),
            "rollout/ratio_max": diff.exp().max().item()}


def tis_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance weights ``min(pi_old / pi_sampler, cap) = min(exp(old - sampler), cap)``, per token."""
    return torch.exp((old_logp - rollout_logp).clamp(max=math.log(cap))).detach()


def micro_batch_loss(engine: DeepSpeedEngine, micro: MicroBatch, actor: TrainerActorConfig, temperature: float,
                     normaliser: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Policy loss (truncated-importance weighted when ``tis_imp_ratio_cap`` is set; module doc) (+
    ``kl_loss_coef`` x KL to the reference, - ``entropy_coeff`` x entropy) of one micro-batch, each term summed over its tokens and divided by the mini-batch's ``normaliser``.
    The metrics report each loss as if the micro-batch were aggregated on its own (its own normaliser)."""
    mask = micro.response_mask
    own_scale = normaliser / loss_normaliser(mask, actor.loss_agg_mode)
    logp, entropy = grouped_response_log_probs(engine, micro.input_ids, micro.attention_mask, mask,
                                               micro.group_index if actor.share_prompt_prefix else None,
                                               temperature, entropy_grad=actor.entropy_coeff > 0)
    old_logp = logp.detach() if micro.old_logp is None else micro.old_logp
    weights = None
    if actor.tis_imp_ratio_cap > 0:
        if micro.rollout_logp is None:
            raise ValueError(f"actor_rollout_ref.actor.tis_imp_ratio_cap={actor.tis_imp_ratio_cap} needs the "
                             "sampler's log-probs, and the rollout backend returned none; allowed: -1 (off) here")
        weights = tis_weights(old_logp, micro.rollout_logp, actor.tis_imp_ratio_cap)
    loss, metrics = POLICY_LOSSES[actor.policy_loss](
        logp, old_logp, micro.advantages, mask, clip_ratio_low=actor.clip_ratio_low,
        clip_ratio_high=actor.clip_ratio_high, clip_ratio_c=actor.clip_ratio_c, loss_agg_mode=actor.loss_agg_mode,
        normaliser=normaliser, token_weights=weights)
    if micro.rollout_logp is not None:
        metrics |= sampler_mismatch(old_logp, micro.rollout_logp, mask)
    metrics["actor/pg_loss"] = loss.item() * own_scale
    metrics["actor/entropy"] = aggregate_loss(entropy.detach(), mask, "token-mean").item()  # nats per token
    if actor.entropy_coeff > 0:
        loss = loss - actor.entropy_coeff * aggregate_loss(entropy, mask, actor.loss_agg_mode, normaliser=normaliser)
    if micro.ref_logp is not None:
        kl = kl_penalty(logp, micro.ref_logp, actor.kl_loss_type)
        kl_loss = aggregate_loss(kl, mask, actor.loss_agg_mode, normaliser=normaliser)
        loss = loss + actor.kl_loss_coef * kl_loss
        metrics["actor/kl_loss"] = kl_loss.item() * own_scale
        metrics["kl"] = aggregate_loss(kl.detach(), mask, "token-mean").item()  # per token, as TRL logs it
    metrics["actor/loss"] = loss.item() * own_scale
    return loss, metrics


def update_policy(engine: DeepSpeedEngine, batch: UpdateBatch, actor: TrainerActorConfig, temperature: float,
                  shuffle: torch.Generator, rank: int, world_size: int) -> dict[str, float]:
    """The actor's PPO update: :func:`optimise` with :func:`micro_batch_loss`."""
    return optimise(engine, batch, actor, shuffle, rank, world_size, "actor",
                    lambda micro, normaliser: micro_batch_loss(engine, micro, actor, temperature, normaliser))


MicroBatchLoss = Callable[[MicroBatch, float], tuple[torch.Tensor, dict[str, float]]]
"""(micro-batch on the engine's device, its mini-batch's normaliser) -> (loss, metrics)."""


def optimise(engine: DeepSpeedEngine, batch: UpdateBatch, settings: TrainerActorConfig, shuffle: torch.Generator,
             rank: int, world_size: int, prefix: str, loss: MicroBatchLoss) -> dict[str, float]:
    """``settings.ppo_epochs`` passes over shuffled mini-batches, one optimizer step each, accumulated over
    micro-batches (each rank runs its share of every mini-batch's micro-batches); mean metrics (max for
    ``*_max`` keys), plus
    ``<prefix>/grad_norm``, ``<prefix>/lr`` and ``<prefix>/nonfinite_steps``.

    A mini-batch whose loss is not finite on some rank gets NaN gradients (its last backward is scaled
    by NaN), so the optimizer step is skipped on every rank (``accumulate``); ``nonfinite_steps``
    counts the skipped steps."""
    engine.train()
    skipped = 0
    history: dict[str, list[float]] = defaultdict(list)
    for _ in range(settings.ppo_epochs):
        for mini in batch.epoch_order(settings.share_prompt_prefix, shuffle).split(settings.ppo_mini_batch_size):
            normaliser = loss_normaliser(batch.response_mask[mini], settings.loss_agg_mode)
            micros = [batch.rows(rows) for rows in
                      batch.micro_batches(mini, settings.ppo_micro_batch_size_per_gpu, settings.micro_batch_tokens)]
            mine = rank_share(micros, rank, world_size)
            finite = True
            for i, (micro, is_padding) in enumerate(mine):
                with cpu_autocast(settings.bf16):  # the forward only; backward follows the recorded dtypes
                    value, metrics = loss(micro.to(engine.device), normaliser)
                scale = 0.0 if is_padding else float(world_size)  # DeepSpeed averages over the ranks
                finite = finite and math.isfinite(value.item())
                if i == len(mine) - 1 and not finite:  # NaN gradients: every rank's optimizer skips the step
                    scale = math.nan
                grad_norm = accumulate(engine, value * scale, is_last=i == len(mine) - 1)
                if not is_padding:
                    for key, item in metrics.items():
                        history[key].append(item)
            if grad_norm is not None and math.isfinite(grad_norm):
                history[f"{prefix}/grad_norm"].append(grad_norm)
            skipped += grad_norm is not None and not math.isfinite(grad_norm)
    metrics = {key: float(np.max(values) if key.endswith("_max") else np.mean(values))
               for key, values in gather_lists(history).items()}
    return metrics | {f"{prefix}/lr": float(engine.get_lr()[0]), f"{prefix}/nonfinite_steps": float(skipped)}
