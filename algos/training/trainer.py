"""The TurnRL training loop: multi-turn rollouts -> group filter -> advantages -> PPO-style update.

``Trainer.fit`` first prepares the run (``setup``: format warm-up or resume, reference model,
DeepSpeed engine, rollout backend), then repeats ``train_step``, which reads top to bottom::

    batch      = rollout(step)                                   # env_groups x group_size episodes
    kept       = filter_groups(rewards[G, K], ...)               # RAGEN: by reward std (none kept: re-roll)
    adv[G', K] = compute_advantages(rewards[kept], estimator)    # GRPO / Dr. GRPO / SR-GRPO / ...
    A[b, t]    = adv[b] on every generated token t (loss_mask)
                 (gae: A, R = GAE of the token rewards and the critic's values, algos.training.critic)
    old_logp   = log pi_old(token t | < t)                       # logits at t-1 predict token t
    ref_logp   = log pi_ref(...)                                  # only with use_kl_loss
    for ppo_epochs, for mini-batches:                            # one optimizer step each
        loss = policy_loss(logp, old_logp, A) + kl_loss_coef * KL - entropy_coeff * H
    gae: the critic's update on R (the actor's is skipped in steps 1..critic.warmup)
    log; validate every test_freq steps; checkpoint every save_freq steps; stop early (early_stop_*)

Steps count from 1 everywhere (rollout levels, sampling seeds, metrics rows, ``global_step_<k>``). The weights
reach the rollout backend in one place, ``rollout_engine_in_sync``, before any rollout that follows a change
(warm-up, resume, update).

Under ``torchrun --nproc_per_node N`` each rank plays its share of the groups and trains on its share of every
mini-batch, with the same filter, advantages, metrics and gradient as one process over the whole batch
(``algos.training.data_parallel``); rank 0 logs. Pass ``hydra.run.dir`` so all ranks share a run dir. At the
end (finished or stopped by a signal) the policy is exported once to ``<run dir>/hf_model``
(``algos.training.export``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.backends import SamplingParams, make_backend
from agents.console import say
from agents.demonstrations import format_demonstrations
from agents.model import resolve_model_location
from agents.prompts import pad_token_id
from agents.rollout import RolloutBatch, RolloutEngine
from algos import compute_advantages
from algos.training.actor import needs_old_log_probs, sequence_log_probs, update_policy
from algos.training.checkpoint import resume_checkpoint, save_checkpoint
from algos.training.critic import Critic
from algos.training.data_parallel import any_rank, gather_rollout, group_share, rank_and_world
from algos.training.early_stopping import HISTORY_KEY, RewardVarianceWatch
from algos.training.engine import build_engine, full_parameters
from algos.training.export import export_hf_model
from algos.training.format_warmup import format_warmup, warmup_lr, warmup_skip_reason
from algos.training.group_selection import collect_groups
from algos.training.layout import latest_checkpoint
from algos.training.lora import enable_gradient_checkpointing, frozen_reference
from algos.training.memory import limit_heap_slack, peak_rss_gib
from algos.training.nonfinite import NonFiniteGuard
from algos.training.policy import load_policy
from algos.training.schema import TINY_RANDOM_MODEL, TurnRLConfig, advantage_options
from algos.training.signals import StopRequest
from algos.training.tracking import (
    RunLogger,
    SilentLogger,
    append_validation_episodes,
    episode_metrics,
    summary_line,
)
from algos.training.trajectories import log_trajectories
from algos.training.update_batch import UpdateBatch


def step_seed(seed: int, step: int) -> int:
    """The seed of step ``step``'s rollout sampling and mini-batch shuffles: a resumed run repeats them."""
    return seed * 1_000_003 + step


class Trainer:
    """Owns the policy (DeepSpeed engine), the optional frozen reference, the rollout engine and logger.

    ``model``/``tokenizer``/``rollout_engine`` may be injected (tests); otherwise built from the config.
    Building a Trainer loads the policy and nothing more; ``setup`` (run by ``fit``) does the rest.
    """

    def __init__(self, config: TurnRLConfig, run_dir: Path, *, model: PreTrainedModel | None = None,
                 tokenizer: PreTrainedTokenizerBase | None = None,
                 rollout_engine: RolloutEngine | None = None) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        self.actor = config.actor_rollout_ref.actor
        self.rollout_cfg = config.actor_rollout_ref.rollout
        self.ckpt_dir = Path(config.trainer.default_local_dir or self.run_dir / "checkpoints")
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        heap_threshold_kib = config.system.cpu_heap_mmap_threshold_kib
        if heap_threshold_kib > 0 and not torch.cuda.is_available():
            limit_heap_slack(heap_threshold_kib * 2**10)  # before the weights and the warm-up are allocated
        if model is None or tokenizer is None:
            model, tokenizer = load_policy(config.actor_rollout_ref.model, config.seed)
        if config.actor_rollout_ref.model.enable_gradient_checkpointing:
            enable_gradient_checkpointing(model)
        self.model, self.tokenizer, self.rollout_engine = model, tokenizer, rollout_engine
        self.engine, self.reference, self.critic = None, None, None
        self.step, self.policy_version, self.synced_version = 0, 0, 0
        self.warmup_metrics: dict[str, float] = {}
        self.logger, self.last_rollout = SilentLogger(), None  # last_rollout: (batch, kept, advantages)
        self.resumed_state: dict[str, Any] = {}
        self.nonfinite = NonFiniteGuard(config)

    # ----------------------------------------------------------------- before the first step
    def setup(self) -> None:
        """Warm up the reply format (a fresh run) before the engine wraps the model, copy the reference,
        build the engine and the rollout backend, then resume (``trainer.resume=auto``). Idempotent."""
        if self.engine is not None:
            return
        resuming = self.config.trainer.resume == "auto" and latest_checkpoint(self.ckpt_dir) is not None
        if self.config.trainer.resume == "auto" and not resuming:
            say(f"trainer.resume=auto: no checkpoint in {self.ckpt_dir}, starting from step 0")
        if not resuming:
            self.warmup_metrics = self.warm_up_format()
        if self.actor.use_kl_loss:  # the initial (warmed-up) policy; under LoRA the base model (algos.training.lora)
            self.reference = frozen_reference(self.model)
        self.engine = build_engine(self.model, self.actor)
        if self.reference is not None:
            self.reference.to(self.engine.device)
        self.rank, self.world_size = rank_and_world()
        if self.world_size > self.config.es_manager.train.env_groups:
            raise ValueError(f"es_manager.train.env_groups={self.config.es_manager.train.env_groups} is invalid "
                             f"with {self.world_size} ranks; allowed: >= the number of ranks (each plays a share)")
        if self.config.algorithm.token_estimator is not None:  # gae: a value model on its own engine
            self.critic = Critic(self.config, self.rank, self.world_size)
        if self.rollout_engine is None:
            self.rollout_engine = self.build_rollout_engine()
        self.resumed_state = self.resume() if resuming else {}

    def warm_up_format(self) -> dict[str, float]:
        """``format_warmup.steps`` supervised steps on format demonstrations (``algos.training.format_warmup``);
        none when off, skipped with a line saying why (``warmup_skip_reason``). Every rank runs the same
        deterministic warm-up, so the ranks start RL from equal weights."""
        warmup = self.config.format_warmup
        reason = warmup_skip_reason(self.config) if warmup.steps else None
        if reason:
            say(f"format warm-up skipped: {reason}")
        if warmup.steps == 0 or reason:
            return {}
        levels = format_demonstrations(self.config.agent_config(), self.tokenizer, warmup.steps * warmup.levels_per_step,
                                       warmup.replies_per_level, self.rollout_cfg.response_length, seed=self.config.seed)
        metrics = format_warmup(self.model, levels, warmup.levels_per_step, warmup_lr(self.config), pad_token_id(self.tokenizer))
        self.policy_version += 1
        say(f"format warm-up: {warmup.steps} steps, reply NLL {metrics['format_warmup/loss_start']:.3f} -> "
              f"{metrics['format_warmup/loss_end']:.3f} in {metrics['format_warmup/seconds']:.0f} s")
        return metrics

    def build_rollout_engine(self) -> RolloutEngine:
        path = self.config.actor_rollout_ref.model.path
        model_dir = None if path == TINY_RANDOM_MODEL else resolve_model_location(path)
        backend = make_backend(self.rollout_cfg.name, self.engine.module, self.tokenizer, model_dir,
                               max_model_len=self.rollout_cfg.max_model_len, seed=self.config.seed,
                               kv_cache_gib=self.rollout_cfg.kv_cache_gib)
        return RolloutEngine(self.config.agent_config(), self.tokenizer, backend)

    def resume(self) -> dict[str, Any]:
        """Load the newest checkpoint that verifies, and the saved KL reference; return its trainer state."""
        path, state = resume_checkpoint(self.engine, self.ckpt_dir, getattr(self.critic, "engine", None), self.reference)
        self.step = int(state["step"])
        self.policy_version += 1
        say(f"resumed from {path} (step {self.step})")
        return state

    # ----------------------------------------------------------------- the step
    def train_step(self, step: int) -> dict[str, float]:
        """Roll out, filter, compute advantages, update the policy; return the step's metrics."""
        start = time.perf_counter()
        self.logger.phase("rollout")
        batch, rewards, kept, filter_metrics = collect_groups(lambda a: self.play_train_groups(step, a), self.rollout_cfg)
        rollout_s = time.perf_counter() - start
        metrics = {**batch.metrics, **episode_metrics(batch)}
        if self.critic is None:
            advantages, adv_metrics = compute_advantages(rewards[kept], **advantage_options(self.config))
            update_batch = UpdateBatch.from_rollout(batch.select(kept), advantages.flatten())
        else:  # gae: token advantages from the critic's values
            update_batch, adv_metrics = self.critic.advantage_batch(batch.select(kept))
        self.last_rollout = (batch, kept, advantages if self.critic is None else None)
        self.logger.phase("update")
        update_actor = self.critic is None or not self.critic.actor_frozen(step)

        tic = time.perf_counter()
        if update_actor and needs_old_log_probs(self.actor, len(update_batch)):
            update_batch.old_logp = self.log_probs(self.engine, update_batch)  # else old = live, detached
        if update_actor and self.reference is not None:
            update_batch.ref_logp = self.log_probs(self.reference, update_batch)
        log_prob_s = time.perf_counter() - tic

        tic = time.perf_counter()
        metrics |= filter_metrics | adv_metrics
        if update_actor:
            shuffle = torch.Generator().manual_seed(step_seed(self.config.seed, step))
            metrics |= update_policy(self.engine, update_batch, self.actor, self.rollout_cfg.temperature, shuffle,
                                     self.rank, self.world_size)
            self.policy_version += 1
        if self.critic is not None:
            metrics |= self.critic.update(update_batch, torch.Generator().manual_seed(step_seed(self.config.seed, step)))
        step_s = time.perf_counter() - start
        return metrics | {"timing/rollout_s": rollout_s, "timing/log_prob_s": log_prob_s,
                          "timing/update_s": time.perf_counter() - tic, "timing/step_s": step_s,
                          "timing/tokens_per_s": metrics["rollout/tokens"] / step_s,
                          "timing/peak_rss_gib": peak_rss_gib()}

    def log_probs(self, model: torch.nn.Module, batch: UpdateBatch) -> torch.Tensor:
        return sequence_log_probs(model, batch, self.actor, self.rollout_cfg.temperature, self.engine.device,
                                  self.rank, self.world_size)

    def rollout_engine_in_sync(self) -> RolloutEngine:
        """The rollout engine, its backend holding the policy's current weights (pushed when they changed)."""
        if self.synced_version != self.policy_version:
            with full_parameters(self.engine) as policy:
                self.rollout_engine.backend.update_weights(policy)
            self.synced_version = self.policy_version
        return self.rollout_engine

    def play_train_groups(self, step: int, attempt: int = 0) -> RolloutBatch:
        """The step's episodes (``attempt``: re-roll index). With several ranks, each plays its contiguous share
        of the step's groups (levels still depend only on (seed, step, attempt)) and every rank gets them all."""
        rollout = self.rollout_cfg
        params = SamplingParams(temperature=rollout.temperature, top_p=rollout.top_p,
                                max_new_tokens=rollout.response_length, seed=step_seed(self.config.seed, step))
        engine = self.rollout_engine_in_sync()
        if self.world_size == 1:
            return engine.rollout(step, params, attempt=attempt)
        share = group_share(self.config.es_manager.train.env_groups, self.rank, self.world_size)
        return gather_rollout(engine.rollout(step, params, share, self.rank, attempt), engine.pad_token_id)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Held-out episodes (greedy unless ``val_kwargs.do_sample``) as ``val/*``, ``val/<tag>/*``, ``val/pass@k``."""
        tic = time.perf_counter()
        val = self.rollout_cfg.val_kwargs
        params = SamplingParams(temperature=val.temperature if val.do_sample else 0.0, top_p=val.top_p,
                                max_new_tokens=self.rollout_cfg.response_length, seed=self.config.seed)
        engine = self.rollout_engine_in_sync()
        if self.world_size == 1:
            batch = engine.validate(params)
        else:  # each rank plays its share of the held-out levels
            share = group_share(self.config.es_manager.val.env_groups, self.rank, self.world_size)
            local = engine.validate(params, groups=share, shard=self.rank) if len(share) else None
            batch = gather_rollout(local, engine.pad_token_id)
        if self.rank == 0:
            append_validation_episodes(self.run_dir, self.step, batch)
        metrics = {key.replace("timing/", "timing/val_") if key.startswith("timing/") else "val/" + key.split("/", 1)[-1]:
                   value for key, value in batch.metrics.items()}
        return metrics | batch.pass_at_k() | {"val/reward": batch.episode_reward.mean().item(),
                                             "timing/val_s": time.perf_counter() - tic}

    # ----------------------------------------------------------------- the loop
    def fit(self, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train ``trainer.total_training_steps`` steps; return the last metrics and output locations."""
        self.setup()
        trainer = self.config.trainer
        self.logger = logger = SilentLogger() if self.rank > 0 else RunLogger(
            self.run_dir, self.config.logger, project=trainer.project_name, name=trainer.experiment_name
            or f"{self.config.env.name}-{self.config.algorithm.adv_estimator}",
            run_config=run_config or {}, total_steps=trainer.total_training_steps, start_step=self.step,
            wandb_run_id=self.resumed_state.get("wandb_run_id"))
        metrics: dict[str, float] = {}
        stopping, collapsed, watch = False, False, RewardVarianceWatch(trainer, self.resumed_state)
        with StopRequest() as stop:
            if self.step == 0 and (self.warmup_metrics or trainer.val_before_train):
                logger.log(self.warmup_metrics | (self.validate() if trainer.val_before_train else {}), step=0)
            while self.step < trainer.total_training_steps and not stopping and not collapsed:
                self.step += 1
                metrics = self.train_step(self.step)
                collapsed = watch.after_step(metrics)  # trainer.early_stop_on_zero_variance
                last = self.step == trainer.total_training_steps or collapsed
                if trainer.test_freq > 0 and (self.step % trainer.test_freq == 0 or last):
                    metrics |= self.validate()
                logger.log(metrics, step=self.step)
                logger.write(summary_line(self.step, metrics))
                log_trajectories(logger, self)  # every trainer.log_trajectories_freq steps
                self.nonfinite.after_step(self.step, metrics)  # raises after max_nonfinite_steps in a row
                stopping = any_rank(bool(stop), self.engine.device)  # a signal may reach some ranks only
                if (trainer.save_freq > 0 and self.step % trainer.save_freq == 0) or stopping:
                    path = save_checkpoint(self.engine, self.ckpt_dir, self.step,
                                           {"wandb_run_id": logger.wandb_run_id, "logger_step": self.step,
                                            HISTORY_KEY: watch.history},
                                           keep=trainer.max_ckpt_to_keep, critic=getattr(self.critic, "engine", None),
                                           reference=self.reference)
                    logger.write(f"checkpoint: {path}")
        export = export_hf_model(self.engine, self.tokenizer, self.run_dir, self.step)
        outputs = logger.finish()
        if self.rank == 0:
            say(f"hf model:       {export}")
        return {"step": self.step, "metrics": metrics, "stopped_by": stop.signal_name, "hf_model": export, **outputs}


def train(config: TurnRLConfig, run_dir: Path, run_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a :class:`Trainer` from a validated config and run it (what ``scripts/train.py`` calls)."""
    if config.system.CUDA_VISIBLE_DEVICES is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(config.system.CUDA_VISIBLE_DEVICES)
    return Trainer(config, run_dir).fit(run_config)
