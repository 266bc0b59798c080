"""The TurnRL training loop: multi-turn rollouts -> group filter -> advantages -> PPO-style update.

One step (``Trainer.train_step``)::

    batch      = rollout(step)                                   # env_groups x group_size episodes
    kept       = filter_groups(rewards[G, K], ...)               # RAGEN: groups ranked by reward std
    adv[G', K] = compute_advantages(rewards[kept], estimator)    # GRPO / Dr. GRPO / SR-GRPO / ...
    A[b, t]    = adv[b] on every generated token t (loss_mask)
    old_logp   = log pi_old(token t | < t)                       # logits at t-1 predict token t
    ref_logp   = log pi_ref(...)                                  # only with use_kl_loss
    for ppo_epochs, for mini-batches:                            # one optimizer step each
        loss = policy_loss(logp, old_logp, A) + kl_loss_coef * KL - entropy_coeff * H
    backend.update_weights(policy); log; checkpoint; validate every test_freq steps
"""

from __future__ import annotations

import copy
import os
import resource
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.backends import SamplingParams, make_backend
from agents.model import build_tiny_model, load_model_and_tokenizer, load_tokenizer, resolve_model_location
from agents.rollout import AgentConfig, RolloutBatch, RolloutEngine
from algos import (
    aggregate_loss,
    compute_advantages,
    entropy_from_logits,
    filter_groups,
    kl_penalty,
    policy_loss,
)
from algos.checkpoint import StopRequest, latest_checkpoint, load_checkpoint, save_checkpoint
from algos.engine import accumulate, build_engine, full_parameters
from algos.schema import TINY_RANDOM_MODEL, ModelConfig, TurnRLConfig, advantage_options
from algos.tracking import RunLogger


def load_policy(model: ModelConfig, seed: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The policy to train: ``tiny-random`` builds a random 2-layer model (tests), else agents' loader."""
    if model.path == TINY_RANDOM_MODEL:
        tokenizer = load_tokenizer(None)
        return build_tiny_model(tokenizer, seed=seed), tokenizer
    return load_model_and_tokenizer(model.path, dtype=model.dtype)


def agent_config(config: TurnRLConfig) -> AgentConfig:
    """The rollout engine's settings from the RAGEN-style keys."""
    es, proxy = config.es_manager, config.agent_proxy
    return AgentConfig(
        env=config.env.name,
        env_kwargs=dict(config.env.kwargs),
        env_groups=es.train.env_groups,
        group_size=es.train.group_size,
        max_turns=proxy.max_turn,
        max_actions_per_turn=proxy.max_actions_per_turn,
        max_actions_per_traj=proxy.max_actions_per_traj,
        format_penalty=es.format_penalty,
        enable_think=proxy.enable_think,
        max_model_len=config.actor_rollout_ref.rollout.max_model_len,
        train_seed_start=es.train_seed_start,
        val_seed_start=es.val_seed_start,
        val_groups=es.val.env_groups,
        val_group_size=es.val.group_size,
        show_progress=False,  # the trainer's own bar is enough
    )


def response_log_probs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob of every generated token and the policy entropy there, both ``[B, T-1]`` (0 elsewhere).

    Token ``t`` is predicted by the logits at ``t - 1``: column ``j`` scores ``input_ids[:, j + 1]``,
    with ``response_mask = loss_mask[:, 1:]``. The model computes logits only at the columns that
    predict a generated token (``logits_to_keep``) and only masked positions go through the softmax,
    which keeps the ``[.., vocab]`` tensors small. Logits are divided by the sampling temperature so
    the log-probs are those of the sampling policy. The entropy has gradients only with ``entropy_grad``.
    """
    positions = response_mask.bool()
    columns = positions.any(dim=0).nonzero().flatten()
    logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=columns).logits
    logits_at = logits[positions[:, columns]].float() / temperature  # [N, V]
    targets = input_ids[:, 1:][positions]
    token_logp = logits_at.gather(-1, targets[:, None]).squeeze(-1) - logits_at.logsumexp(dim=-1)
    logp = torch.zeros(response_mask.shape, dtype=token_logp.dtype, device=logits.device)
    entropy = torch.zeros_like(logp)
    logp[positions] = token_logp
    entropy[positions] = entropy_from_logits(logits_at if entropy_grad else logits_at.detach())
    return logp, entropy


def loss_coefficients(mask: torch.Tensor, loss_agg_mode: str) -> torch.Tensor:
    """``C`` with ``aggregate_loss(L, mask) == sum(C * L)`` for every ``L``: each mode is linear in ``L``."""
    probe = torch.zeros(mask.shape, dtype=torch.float64, requires_grad=True)
    (coefficients,) = torch.autograd.grad(aggregate_loss(probe, mask, loss_agg_mode), probe)
    return coefficients


def micro_batch_weights(mask: torch.Tensor, micro_masks: list[torch.Tensor], loss_agg_mode: str) -> list[float]:
    """Weights ``w_i`` such that ``sum_i w_i * aggregate(micro_i) == aggregate(mini-batch)`` exactly.

    ``mask`` is the mini-batch's response mask; ``micro_masks`` are its consecutive row blocks exactly
    as each micro-batch aggregates them (trimmed to its own width). Within one micro-batch every mode's
    coefficients are proportional to the mini-batch's (a shared token count, sequence count or
    normaliser), so ``w_i = sum(C_mini over micro_i) / sum(C_micro_i)``; this lets gradient
    accumulation reproduce the full mini-batch gradient for any ``loss_agg_mode``.
    """
    mini = loss_coefficients(mask, loss_agg_mode)
    weights, start = [], 0
    for micro_mask in micro_masks:
        micro_total = loss_coefficients(micro_mask, loss_agg_mode).sum()
        block = mini[start : start + len(micro_mask)].sum()
        weights.append(float(block / micro_total) if micro_total > 0 else 0.0)
        start += len(micro_mask)
    return weights


@dataclass
class UpdateBatch:
    """Tensors of the kept episodes for the update; token tensors ``[B, T-1]`` are aligned with targets."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T-1]: 1 where input_ids[:, t + 1] was generated
    advantages: torch.Tensor  # [B, T-1]: the episode's advantage on each generated token
    old_logp: torch.Tensor | None = None  # None: on-policy single update, taken from the live forward
    ref_logp: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def rows(self, index: torch.Tensor) -> dict[str, torch.Tensor | None]:
        """The tensors of episodes ``index``, trimmed to their longest sequence."""
        width = int(self.attention_mask[index].sum(dim=1).max())
        trim = {"input_ids": width, "attention_mask": width, "response_mask": width - 1, "advantages": width - 1,
                "old_logp": width - 1, "ref_logp": width - 1}
        values = {name: getattr(self, name) for name in trim}
        return {name: None if v is None else v[index, : trim[name]] for name, v in values.items()}


class Trainer:
    """Owns the policy (DeepSpeed engine), the optional frozen reference, the rollout engine and logger.

    ``model``/``tokenizer``/``rollout_engine`` may be injected (tests); otherwise built from the config.
    """

    def __init__(
        self,
        config: TurnRLConfig,
        run_dir: Path,
        *,
        model: PreTrainedModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        rollout_engine: RolloutEngine | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.actor = config.actor_rollout_ref.actor
        self.rollout_cfg = config.actor_rollout_ref.rollout
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        if model is None or tokenizer is None:
            model, tokenizer = load_policy(config.actor_rollout_ref.model, config.seed)
        if config.actor_rollout_ref.model.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.tokenizer = tokenizer
        self.reference = None
        if self.actor.use_kl_loss:  # frozen copy of the initial policy
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.engine = build_engine(model, self.actor)
        if self.reference is not None:
            self.reference.to(self.engine.device)
        if rollout_engine is None:
            model_dir = None if config.actor_rollout_ref.model.path == TINY_RANDOM_MODEL else \
                resolve_model_location(config.actor_rollout_ref.model.path)
            backend = make_backend(self.rollout_cfg.name, self.engine.module, tokenizer, model_dir)
            rollout_engine = RolloutEngine(agent_config(config), tokenizer, backend)
        self.rollout_engine = rollout_engine
        self.ckpt_dir = Path(config.trainer.default_local_dir or self.run_dir / "checkpoints")
        self.step = 0

    # ----------------------------------------------------------------- sampling settings
    def train_sampling(self, step: int) -> SamplingParams:
        """Sampling for training rollouts, seeded by (seed, step) so a resumed run samples the same."""
        rollout = self.rollout_cfg
        return SamplingParams(temperature=rollout.temperature, top_p=rollout.top_p,
                              max_new_tokens=rollout.response_length, seed=self.config.seed * 1_000_003 + step)

    def val_sampling(self) -> SamplingParams:
        val = self.rollout_cfg.val_kwargs
        return SamplingParams(temperature=val.temperature if val.do_sample else 0.0, top_p=val.top_p,
                              max_new_tokens=self.rollout_cfg.response_length, seed=self.config.seed)

    # ----------------------------------------------------------------- the step
    def train_step(self, step: int) -> dict[str, float]:
        """Roll out, filter, compute advantages, update the policy and sync the backend; return metrics."""
        timings: dict[str, float] = {}
        start = time.perf_counter()
        batch = self.rollout_engine.rollout(step - 1, self.train_sampling(step))
        timings["timing/rollout_s"] = time.perf_counter() - start
        metrics = {**batch.metrics, **episode_metrics(batch)}

        groups = self.config.es_manager.train
        rewards = batch.episode_reward.view(groups.env_groups, groups.group_size)
        flt = self.rollout_cfg
        kept, filter_metrics = filter_groups(
            rewards, flt.rollout_filter_strategy, value=flt.rollout_filter_value,
            filter_type=flt.rollout_filter_type, include_zero=flt.rollout_filter_include_zero,
        )
        advantages, adv_metrics = compute_advantages(rewards[kept], **advantage_options(self.config))
        metrics |= filter_metrics | adv_metrics

        update_batch = self.make_update_batch(batch.select(kept), advantages.flatten())
        tic = time.perf_counter()
        self.fill_log_probs(update_batch)
        timings["timing/log_prob_s"] = time.perf_counter() - tic
        tic = time.perf_counter()
        metrics |= self.update_policy(update_batch, step)
        timings["timing/update_s"] = time.perf_counter() - tic
        with full_parameters(self.engine) as policy:
            self.rollout_engine.backend.update_weights(policy)

        timings["timing/step_s"] = time.perf_counter() - start
        timings["timing/tokens_per_s"] = metrics["rollout/tokens"] / timings["timing/step_s"]
        timings["timing/peak_rss_gib"] = peak_rss_gib()
        return metrics | timings

    def make_update_batch(self, batch: RolloutBatch, episode_advantages: torch.Tensor) -> UpdateBatch:
        """Shifted masks and token-level advantages of the kept episodes (group-major order)."""
        response_mask = batch.loss_mask[:, 1:]
        return UpdateBatch(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            response_mask=response_mask,
            advantages=episode_advantages[:, None] * response_mask.float(),
        )

    @torch.no_grad()
    def fill_log_probs(self, batch: UpdateBatch) -> None:
        """Old (policy before this update) and reference log-probs, in micro-batches.

        A single on-policy pass (``ppo_epochs == 1`` and one mini-batch) needs no separate old pass:
        the policy is unchanged until its only optimizer step, so old = live log-probs, detached.
        """
        single_update = self.actor.ppo_epochs == 1 and len(batch) <= self.actor.ppo_mini_batch_size
        if not single_update:
            batch.old_logp = self.log_probs(self.engine, batch)
        if self.reference is not None:
            batch.ref_logp = self.log_probs(self.reference, batch)

    def log_probs(self, model: torch.nn.Module, batch: UpdateBatch) -> torch.Tensor:
        """``[B, T-1]`` log-probs of the generated tokens under ``model``, micro-batch by micro-batch."""
        self.engine.eval()
        logp = torch.zeros(batch.response_mask.shape)
        for index in torch.arange(len(batch)).split(self.actor.ppo_micro_batch_size_per_gpu):
            part = batch.rows(index)
            tensors = self.to_device(part["input_ids"], part["attention_mask"], part["response_mask"])
            values, _ = response_log_probs(model, *tensors, self.rollout_cfg.temperature)
            logp[index, : values.shape[1]] = values.float().cpu()
        return logp

    def to_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [tensor.to(self.engine.device) for tensor in tensors]

    def update_policy(self, batch: UpdateBatch, step: int) -> dict[str, float]:
        """``ppo_epochs`` passes over shuffled mini-batches; each mini-batch is one optimizer step,
        accumulated over micro-batches weighted so the result equals the whole mini-batch's loss."""
        actor = self.actor
        self.engine.train()
        shuffle = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        history: dict[str, list[float]] = defaultdict(list)
        for _ in range(actor.ppo_epochs):
            for mini in torch.randperm(len(batch), generator=shuffle).split(actor.ppo_mini_batch_size):
                parts = [batch.rows(rows) for rows in mini.split(actor.ppo_micro_batch_size_per_gpu)]
                weights = micro_batch_weights(batch.response_mask[mini], [part["response_mask"] for part in parts],
                                              actor.loss_agg_mode)
                for i, (part, weight) in enumerate(zip(parts, weights, strict=True)):
                    loss, micro_metrics = self.micro_batch_loss(part)
                    grad_norm = accumulate(self.engine, loss * weight, is_last=i == len(parts) - 1)
                    for key, value in micro_metrics.items():
                        history[key].append(value)
                if grad_norm is not None:
                    history["actor/grad_norm"].append(grad_norm)
        metrics = {key: float(np.mean(values)) for key, values in history.items()}
        metrics["actor/lr"] = float(self.engine.get_lr()[0])
        return metrics

    def micro_batch_loss(self, part: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO clipped loss (+ KL to the reference, - entropy bonus) of one micro-batch, aggregated."""
        actor = self.actor
        input_ids, attention_mask, mask, advantages = self.to_device(
            part["input_ids"], part["attention_mask"], part["response_mask"], part["advantages"])
        logp, entropy = response_log_probs(self.engine, input_ids, attention_mask, mask,
                                           self.rollout_cfg.temperature, entropy_grad=actor.entropy_coeff > 0)
        old_logp = logp.detach() if part["old_logp"] is None else part["old_logp"].to(logp.device)
        loss, metrics = policy_loss(
            logp, old_logp, advantages, mask, clip_ratio_low=actor.clip_ratio_low,
            clip_ratio_high=actor.clip_ratio_high, clip_ratio_c=actor.clip_ratio_c,
            loss_agg_mode=actor.loss_agg_mode,
        )
        metrics["actor/pg_loss"] = loss.item()
        metrics["actor/entropy"] = aggregate_loss(entropy.detach(), mask, "token-mean").item()  # nats per token
        if actor.entropy_coeff > 0:
            loss = loss - actor.entropy_coeff * aggregate_loss(entropy, mask, actor.loss_agg_mode)
        if part["ref_logp"] is not None:
            kl = kl_penalty(logp, part["ref_logp"].to(logp.device), actor.kl_loss_type)
            kl_loss = aggregate_loss(kl, mask, actor.loss_agg_mode)
            loss = loss + actor.kl_loss_coef * kl_loss
            metrics["actor/kl_loss"] = kl_loss.item()
            metrics["kl"] = aggregate_loss(kl.detach(), mask, "token-mean").item()  # per token, as TRL logs it
        metrics["actor/loss"] = loss.item()
        return loss, metrics

    # ----------------------------------------------------------------- validation, checkpoints, loop
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        tic = time.perf_counter()
        batch = self.rollout_engine.validate(self.val_sampling())
        metrics = {"val/" + key.split("/", 1)[-1]: value for key, value in batch.metrics.items()}
        metrics["val/reward"] = batch.episode_reward.mean().item()
        metrics["timing/val_s"] = time.perf_counter() - tic
        return metrics

    def trainer_state(self, logger: RunLogger) -> dict[str, Any]:
        return {"wandb_run_id": logger.wandb_run_id, "logger_step": self.step}

    def save(self, logger: RunLogger) -> Path:
        return save_checkpoint(self.engine, self.ckpt_dir, self.step, self.trainer_state(logger),
                               keep=self.config.trainer.max_ckpt_to_keep)

    def resume(self) -> dict[str, Any]:
        """With ``trainer.resume=auto``, load the newest complete checkpoint; return its trainer state."""
        if self.config.trainer.resume != "auto":
            return {}
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            print(f"trainer.resume=auto: no checkpoint in {self.ckpt_dir}, starting from step 0")
            return {}
        state = load_checkpoint(self.engine, path)
        self.step = int(state["step"])
        with full_parameters(self.engine) as policy:
            self.rollout_engine.backend.update_weights(policy)
        print(f"resumed from {path} (step {self.step})")
        return state

    def fit(self, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train ``trainer.total_training_steps`` steps; return the last metrics and output locations."""
        trainer = self.config.trainer
        state = self.resume()
        logger = RunLogger(
            self.run_dir, self.config.logger, project=trainer.project_name, name=experiment_name(self.config),
            run_config=run_config or {}, total_steps=trainer.total_training_steps, start_step=self.step,
            wandb_run_id=state.get("wandb_run_id"),
        )
        metrics: dict[str, float] = {}
        with StopRequest() as stop:
            if trainer.val_before_train and self.step == 0:
                logger.log(self.validate(), step=0)
            while self.step < trainer.total_training_steps and not stop:
                self.step += 1
                metrics = self.train_step(self.step)
                last = self.step == trainer.total_training_steps
                if trainer.test_freq > 0 and (self.step % trainer.test_freq == 0 or last):
                    metrics |= self.validate()
                logger.log(metrics, step=self.step)
                logger.write(summary_line(self.step, metrics))
                if (trainer.save_freq > 0 and self.step % trainer.save_freq == 0) or stop:
                    path = self.save(logger)
                    logger.write(f"checkpoint: {path}")
        return {"step": self.step, "metrics": metrics, "stopped_by": stop.signal_name, **logger.finish()}


def episode_metrics(batch: RolloutBatch) -> dict[str, float]:
    """The seeds' headline numbers: ``reward`` (mean), ``reward_std`` (mean in-group std, as TRL) and
    ``completion_length`` (generated tokens per episode)."""
    rewards = batch.episode_reward.view(-1, batch.group_size)
    in_group_std = rewards.std(dim=1).mean().item() if batch.group_size > 1 else 0.0
    return {
        "reward": batch.episode_reward.mean().item(),
        "reward_std": in_group_std,
        "completion_length": batch.loss_mask.sum(dim=1).float().mean().item(),
    }


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def experiment_name(config: TurnRLConfig) -> str:
    return config.trainer.experiment_name or f"{config.env.name}-{config.algorithm.adv_estimator}"


def summary_line(step: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step}"]
    for key, label in (("reward", "reward"), ("rollout/success_rate", "success"), ("actor/loss", "loss"),
                       ("val/success_rate", "val_success"), ("timing/step_s", "s/step")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.3f}")
    return " | ".join(parts)


def train(config: TurnRLConfig, run_dir: Path, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from a validated config and run it (what ``scripts/train.py`` calls)."""
    if config.system.CUDA_VISIBLE_DEVICES is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(config.system.CUDA_VISIBLE_DEVICES)
    return Trainer(config, run_dir).fit(run_config)


__all__ = ["Trainer", "UpdateBatch", "micro_batch_weights", "response_log_probs", "train"]
