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

Under ``torchrun --nproc_per_node N`` each rank plays its share of the groups and trains on its share
of every mini-batch, with the same filter, advantages, metrics and gradient as one process over the
whole batch (``algos.training.data_parallel``); rank 0 logs. Pass ``hydra.run.dir`` so all ranks share a run dir.

At the end (finished or stopped by a signal) the policy is exported once to ``<run dir>/hf_model``
(``save_pretrained``; see ``algos.training.checkpoint``). Only there, not in every checkpoint: checkpoints
already hold the weights for resuming, and a full model copy per checkpoint would double their size.
"""

from __future__ import annotations

import copy
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

import envs
from agents.backends import SamplingParams, make_backend
from agents.demonstrations import format_demonstrations
from agents.model import build_tiny_model, load_model_and_tokenizer, load_tokenizer, resolve_model_location
from agents.prompts import pad_token_id
from agents.rollout import AgentConfig, RolloutBatch, RolloutEngine
from algos import (
    aggregate_loss,
    compute_advantages,
    filter_groups,
    kl_penalty,
    policy_loss,
)
from algos.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from algos.training.data_parallel import (
    all_reduce_sum,
    any_rank,
    gather_lists,
    gather_rollout,
    group_share,
    rank_and_world,
    rank_share,
)
from algos.training.engine import accumulate, build_engine, full_parameters
from algos.training.export import export_hf_model
from algos.training.format_warmup import format_warmup
from algos.training.memory import limit_heap_slack, peak_rss_gib
from algos.training.packed_logprobs import grouped_response_log_probs, response_log_probs, shuffle_by_group
from algos.training.schema import TINY_RANDOM_MODEL, ModelConfig, TurnRLConfig, advantage_options
from algos.training.signals import StopRequest
from algos.training.tracking import RunLogger


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
    group_index: torch.Tensor  # [B]: episodes of one group start with the same prompt
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
        return {name: None if v is None else v[index, : trim[name]] for name, v in values.items()} | {
            "group_index": self.group_index[index]}


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
        heap_threshold_kib = config.system.cpu_heap_mmap_threshold_kib
        if heap_threshold_kib > 0 and not torch.cuda.is_available():
            limit_heap_slack(heap_threshold_kib * 2**10)  # before the weights and the warm-up are allocated
        if model is None or tokenizer is None:
            model, tokenizer = load_policy(config.actor_rollout_ref.model, config.seed)
        if config.actor_rollout_ref.model.enable_gradient_checkpointing:
            model.gradient_checkpointing_enable()
        self.tokenizer = tokenizer
        self.ckpt_dir = Path(config.trainer.default_local_dir or self.run_dir / "checkpoints")
        self.warmup_metrics = self.warm_up_format(model)
        self.reference = None
        if self.actor.use_kl_loss:  # frozen copy of the initial policy
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        self.engine = build_engine(model, self.actor)
        if self.reference is not None:
            self.reference.to(self.engine.device)
        if rollout_engine is None:
            model_dir = None if config.actor_rollout_ref.model.path == TINY_RANDOM_MODEL else \
                resolve_model_location(config.actor_rollout_ref.model.path)
            backend = make_backend(self.rollout_cfg.name, self.engine.module, tokenizer, model_dir,
                                   max_model_len=self.rollout_cfg.max_model_len, seed=config.seed,
                                   kv_cache_gib=self.rollout_cfg.kv_cache_gib,
                                   multi_turn=config.agent_proxy.max_turn > 1)
            rollout_engine = RolloutEngine(agent_config(config), tokenizer, backend)
        self.rollout_engine = rollout_engine
        if self.warmup_metrics:  # a vLLM engine loaded the weights from disk, before the warm-up
            self.sync_backend()
        self.step = 0
        self.rank, self.world_size = rank_and_world()
        if self.world_size > config.es_manager.train.env_groups:
            raise ValueError(f"es_manager.train.env_groups={config.es_manager.train.env_groups} is invalid with "
                             f"{self.world_size} ranks; allowed: >= the number of ranks (each plays a share)")

    def warm_up_format(self, model: PreTrainedModel) -> dict[str, float]:
        """``format_warmup.steps`` supervised steps on format demonstrations (``algos.training.format_warmup``), on
        the bare model; none when off, for an env with free-form answers, or when ``trainer.resume=auto``
        finds a checkpoint to load instead.
        Every rank runs the same deterministic warm-up, so the ranks start RL from equal weights."""
        warmup = self.config.format_warmup
        resuming = self.config.trainer.resume == "auto" and latest_checkpoint(self.ckpt_dir) is not None
        if warmup.steps == 0 or resuming:
            return {}
        env = envs.make(self.config.env.name, **self.config.env.kwargs)
        env.close()
        if not env.action_names:
            print(f"format warm-up skipped: env={self.config.env.name} has free-form answers, "
                  "no random valid action to demonstrate")
            return {}
        levels = format_demonstrations(
            agent_config(self.config), self.tokenizer, warmup.steps * warmup.levels_per_step,
            warmup.replies_per_level, self.config.actor_rollout_ref.rollout.response_length, seed=self.config.seed,
        )
        metrics = format_warmup(model, levels, warmup.levels_per_step, warmup.lr, pad_token_id(self.tokenizer))
        print(f"format warm-up: {warmup.steps} steps, reply NLL {metrics['format_warmup/loss_start']:.3f} -> "
              f"{metrics['format_warmup/loss_end']:.3f} in {metrics['format_warmup/seconds']:.0f} s")
        return metrics

    def sync_backend(self) -> None:
        """Push the policy's current weights into the rollout backend."""
        with full_parameters(self.engine) as policy:
            self.rollout_engine.backend.update_weights(policy)

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
        batch = self.play_train_groups(step)
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
        self.sync_backend()

        timings["timing/step_s"] = time.perf_counter() - start
        timings["timing/tokens_per_s"] = metrics["rollout/tokens"] / timings["timing/step_s"]
        timings["timing/peak_rss_gib"] = peak_rss_gib()
        return metrics | timings

    def play_train_groups(self, step: int) -> RolloutBatch:
        """The step's episodes. With several ranks, each plays its contiguous share of the step's groups
        (levels still depend only on (seed, step)) and every rank gets the gathered batch of all groups."""
        params = self.train_sampling(step)
        if self.world_size == 1:
            return self.rollout_engine.rollout(step - 1, params)
        share = group_share(self.config.es_manager.train.env_groups, self.rank, self.world_size)
        local = self.rollout_engine.rollout(step - 1, params, groups=share, shard=self.rank)
        return gather_rollout(local, self.rollout_engine.pad_token_id)

    def make_update_batch(self, batch: RolloutBatch, episode_advantages: torch.Tensor) -> UpdateBatch:
        """Shifted masks and token-level advantages of the kept episodes (group-major order)."""
        response_mask = batch.loss_mask[:, 1:]
        return UpdateBatch(
            input_ids=batch.input_ids,
            attention_mask=batch.attention_mask,
            response_mask=response_mask,
            advantages=episode_advantages[:, None] * response_mask.float(),
            group_index=batch.group_index,
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
        chunks = list(torch.arange(len(batch)).split(self.actor.ppo_micro_batch_size_per_gpu))
        for index, _, is_padding in rank_share(chunks, [1.0] * len(chunks), self.rank, self.world_size):
            part = batch.rows(index)
            tensors = self.to_device(part["input_ids"], part["attention_mask"], part["response_mask"])
            values, _ = grouped_response_log_probs(model, *tensors, self.prompt_groups(part),
                                                   self.rollout_cfg.temperature)
            if not is_padding:  # a padding pass only keeps the ranks' pass counts equal
                logp[index, : values.shape[1]] = values.float().cpu()
        # each row was computed by exactly one rank; NCCL reduces only device tensors
        return all_reduce_sum(logp.to(self.engine.device)).cpu()

    def to_device(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        return [tensor.to(self.engine.device) for tensor in tensors]

    def prompt_groups(self, part: dict[str, torch.Tensor | None]) -> torch.Tensor | None:
        """The episodes' group labels for the grouped forward; None (plain forward) without sharing."""
        return part["group_index"] if self.actor.share_prompt_prefix else None

    def episode_order(self, batch: UpdateBatch, generator: torch.Generator) -> torch.Tensor:
        """The shuffled episode order of one PPO epoch: whole groups in a random order with
        ``share_prompt_prefix`` (so micro-batches hold whole groups), else episodes in a random order."""
        if self.actor.share_prompt_prefix:
            return shuffle_by_group(batch.group_index, generator)
        return torch.randperm(len(batch), generator=generator)

    def update_policy(self, batch: UpdateBatch, step: int) -> dict[str, float]:
        """``ppo_epochs`` passes over shuffled mini-batches; each mini-batch is one optimizer step,
        accumulated over micro-batches weighted so the result equals the whole mini-batch's loss.
        With several ranks, each runs its share of every mini-batch's micro-batches (``rank_share``)."""
        actor = self.actor
        self.engine.train()
        shuffle = torch.Generator().manual_seed(self.config.seed * 1_000_003 + step)
        history: dict[str, list[float]] = defaultdict(list)
        for _ in range(actor.ppo_epochs):
            for mini in self.episode_order(batch, shuffle).split(actor.ppo_mini_batch_size):
                parts = [batch.rows(rows) for rows in mini.split(actor.ppo_micro_batch_size_per_gpu)]
                weights = micro_batch_weights(batch.response_mask[mini], [part["response_mask"] for part in parts],
                                              actor.loss_agg_mode)
                mine = rank_share(parts, weights, self.rank, self.world_size)
                for i, (part, weight, is_padding) in enumerate(mine):
                    loss, micro_metrics = self.micro_batch_loss(part)
                    grad_norm = accumulate(self.engine, loss * weight, is_last=i == len(mine) - 1)
                    if not is_padding:
                        for key, value in micro_metrics.items():
                            history[key].append(value)
                if grad_norm is not None:
                    history["actor/grad_norm"].append(grad_norm)
        metrics = {key: float(np.mean(values)) for key, values in gather_lists(history).items()}
        metrics["actor/lr"] = float(self.engine.get_lr()[0])
        return metrics

    def micro_batch_loss(self, part: dict[str, torch.Tensor | None]) -> tuple[torch.Tensor, dict[str, float]]:
        """PPO clipped loss (+ KL to the reference, - entropy bonus) of one micro-batch, aggregated."""
        actor = self.actor
        input_ids, attention_mask, mask, advantages = self.to_device(
            part["input_ids"], part["attention_mask"], part["response_mask"], part["advantages"])
        logp, entropy = grouped_response_log_probs(self.engine, input_ids, attention_mask, mask,
                                                   self.prompt_groups(part), self.rollout_cfg.temperature,
                                                   entropy_grad=actor.entropy_coeff > 0)
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
        if self.world_size == 1:
            batch = self.rollout_engine.validate(self.val_sampling())
        else:  # each rank plays its share of the held-out levels
            share = group_share(self.config.es_manager.val.env_groups, self.rank, self.world_size)
            local = self.rollout_engine.validate(self.val_sampling(), groups=share, shard=self.rank) \
                if len(share) else None
            batch = gather_rollout(local, self.rollout_engine.pad_token_id)
        metrics = {"val/" + key.split("/", 1)[-1]: value for key, value in batch.metrics.items()}
        metrics["val/reward"] = batch.episode_reward.mean().item()
        metrics["timing/val_s"] = time.perf_counter() - tic
        return metrics

    def trainer_state(self, logger: RunLogger | SilentLogger) -> dict[str, Any]:
        return {"wandb_run_id": logger.wandb_run_id, "logger_step": self.step}

    def save(self, logger: RunLogger | SilentLogger) -> Path:
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
        self.sync_backend()
        print(f"resumed from {path} (step {self.step})")
        return state

    def fit(self, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train ``trainer.total_training_steps`` steps; return the last metrics and output locations."""
        trainer = self.config.trainer
        state = self.resume()
        logger = SilentLogger() if self.rank > 0 else RunLogger(
            self.run_dir, self.config.logger, project=trainer.project_name, name=experiment_name(self.config),
            run_config=run_config or {}, total_steps=trainer.total_training_steps, start_step=self.step,
            wandb_run_id=state.get("wandb_run_id"),
        )
        metrics: dict[str, float] = {}
        stopping = False
        with StopRequest() as stop:
            if self.step == 0 and (self.warmup_metrics or trainer.val_before_train):
                logger.log(self.warmup_metrics | (self.validate() if trainer.val_before_train else {}), step=0)
            while self.step < trainer.total_training_steps and not stopping:
                self.step += 1
                metrics = self.train_step(self.step)
                last = self.step == trainer.total_training_steps
                if trainer.test_freq > 0 and (self.step % trainer.test_freq == 0 or last):
                    metrics |= self.validate()
                logger.log(metrics, step=self.step)
                logger.write(summary_line(self.step, metrics))
                stopping = any_rank(bool(stop), self.engine.device)  # a signal may reach some ranks only
                if (trainer.save_freq > 0 and self.step % trainer.save_freq == 0) or stopping:
                    path = self.save(logger)
                    logger.write(f"checkpoint: {path}")
        export = export_hf_model(self.engine, self.tokenizer, self.run_dir, self.step)
        outputs = logger.finish()
        if self.rank == 0:
            print(f"hf model:       {export}")
        return {"step": self.step, "metrics": metrics, "stopped_by": stop.signal_name, "hf_model": export,
                **outputs}


class SilentLogger:
    """The logger of ranks > 0: every rank holds the same metrics, rank 0 alone writes them."""

    wandb_run_id = None

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def write(self, message: str) -> None:
        pass

    def finish(self) -> dict[str, Any]:
        return {}


def episode_metrics(batch: RolloutBatch) -> dict[str, float]:
    """The seeds' headline numbers: ``reward`` (mean), ``reward_std`` (mean in-group std, as TRL) and
    ``completion_length`` (generated tokens per episode), and the episodes played (all ranks)."""
    rewards = batch.episode_reward.view(-1, batch.group_size)
    in_group_std = rewards.std(dim=1).mean().item() if batch.group_size > 1 else 0.0
    return {
        "rollout/num_episodes": float(len(batch)),
        "reward": batch.episode_reward.mean().item(),
        "reward_std": in_group_std,
        "completion_length": batch.loss_mask.sum(dim=1).float().mean().item(),
    }


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
