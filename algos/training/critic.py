"""The critic of ``algorithm.adv_estimator=gae``: a value model on its own DeepSpeed engine, the token
advantages it feeds, and its clipped value-loss update. Critic-free estimators build none of it.

The value model is a causal LM's trunk (the LM without its head, e.g. ``LlamaModel``) plus
``Linear(hidden, 1)``, zero-initialised so every value starts at 0 (the first advantages are then the
plain returns). It is called like a causal LM and returns its values as one-wide ``logits``, so the
packed shared-prompt forward (:func:`grouped_response_logits`) runs it unchanged. Its value at column
``j`` (the hidden state after input token ``j``) is that of the state that generates token ``j + 1``:
the same columns as the log-probs and ``response_mask``. A step of a gae run::

    values  = V(kept episodes)                                   # no grad, micro-batched, ranks share rows
    A, R    = compute_token_advantages(gae | bi_level_gae, token_rewards, values, response_mask)
    actor update with A                                          # skipped in steps 1..critic.warmup
    critic update: value_loss(V_new, values, R), the actor's mini-batches, epochs and loss_agg_mode

It runs data parallel as the actor does (``algos.training.actor.optimise``) and is checkpointed with it
(``algos.training.checkpoint``, DeepSpeed tag ``critic``).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch
from deepspeed.runtime.engine import DeepSpeedEngine
from transformers import PreTrainedModel

from agents.rollout import RolloutBatch
from algos import compute_token_advantages, explained_variance, loss_normaliser, value_loss
from algos.training.actor import optimise, token_outputs
from algos.training.engine import build_engine
from algos.training.lora import apply_lora, enable_gradient_checkpointing
from algos.training.packed_logprobs import grouped_response_logits
from algos.training.policy import load_policy
from algos.training.schema import TrainerActorConfig, TurnRLConfig, token_advantage_options
from algos.training.update_batch import MicroBatch, UpdateBatch


@dataclass
class ValueOutput:
    logits: torch.Tensor  # [b, k, 1]: the values at the kept columns


class ValueModel(torch.nn.Module):
    """``V(s) = w . h(s) + b`` on a causal LM trunk's last hidden state ``h``."""

    def __init__(self, trunk: PreTrainedModel) -> None:
        super().__init__()
        self.trunk = trunk
        self.config = trunk.config  # the packed forward reads its attention implementation
        self.value_head = torch.nn.Linear(trunk.config.hidden_size, 1, dtype=trunk.dtype)
        torch.nn.init.zeros_(self.value_head.weight)
        torch.nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, use_cache: bool = False,
                logits_to_keep: torch.Tensor | None = None) -> ValueOutput:
        """A causal LM's call: ``logits_to_keep`` (column indices) keeps only those positions."""
        hidden = self.trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=use_cache).last_hidden_state
        return ValueOutput(self.value_head(hidden if logits_to_keep is None else hidden[:, logits_to_keep]))


def load_value_model(config: TurnRLConfig) -> ValueModel:
    """The trunk of ``critic.model_path`` (null: the policy's path; ``tiny-random``: the tiny model built
    from the run's seed, so equal to the policy's initial weights) with a zero value head; with
    ``actor_rollout_ref.model.lora_rank > 0`` the trunk gets adapters of the actor's settings."""
    model_config = config.actor_rollout_ref.model
    path = model_config.path if config.critic.model_path is None else config.critic.model_path
    language_model, _ = load_policy(dataclasses.replace(model_config, path=path, lora_rank=0), config.seed)
    trunk = apply_lora(language_model.base_model, model_config)  # the actor's LoRA settings; the head trains fully
    if model_config.enable_gradient_checkpointing:
        enable_gradient_checkpointing(trunk)
    return ValueModel(trunk)


def micro_batch_values(model: torch.nn.Module, micro: MicroBatch, share_prompt_prefix: bool) -> torch.Tensor:
    """``[b, t-1]`` values at the generated tokens' columns (0 elsewhere), float32."""
    positions = micro.response_mask.bool()
    values_at = grouped_response_logits(model, micro.input_ids, micro.attention_mask, micro.response_mask,
                                        micro.group_index if share_prompt_prefix else None)
    values = torch.zeros(positions.shape, device=values_at.device)
    values[positions] = values_at[:, 0].float()
    return values


class Critic:
    """The value model's engine and what a step asks of it (module doc)."""

    def __init__(self, config: TurnRLConfig, rank: int, world_size: int) -> None:
        critic, actor = config.critic, config.actor_rollout_ref.actor
        self.token_estimator, self.options = config.algorithm.token_estimator, token_advantage_options(config)
        self.cliprange_value, self.warmup = critic.cliprange_value, critic.warmup
        # the actor's mini-batches, epochs, loss_agg_mode, grad_clip, weight_decay and bf16; its own rest
        self.settings: TrainerActorConfig = dataclasses.replace(
            actor, lr=critic.lr, lr_warmup_steps=0, ppo_micro_batch_size_per_gpu=critic.ppo_micro_batch_size_per_gpu,
            zero_stage=critic.zero_stage)
        self.engine: DeepSpeedEngine = build_engine(load_value_model(config), self.settings)
        self.rank, self.world_size = rank, world_size

    def actor_frozen(self, step: int) -> bool:
        """True in steps 1..``critic.warmup``: only the critic learns."""
        return step <= self.warmup

    @torch.no_grad()
    def values(self, batch: UpdateBatch) -> torch.Tensor:
        """``[B, T-1]`` values of ``batch`` under the current critic."""
        self.engine.eval()
        return token_outputs(lambda micro: micro_batch_values(self.engine, micro, self.settings.share_prompt_prefix),
                             batch, self.settings, self.engine.device, self.rank,
                             self.world_size)

    def advantage_batch(self, kept: RolloutBatch) -> tuple[UpdateBatch, dict[str, float]]:
        """The update batch of the kept episodes with token advantages (whitened), values and returns."""
        if kept.token_rewards is None:
            raise ValueError("the rollout recorded no token_rewards; allowed: a RolloutEngine batch (gae needs them)")
        tic = time.perf_counter()
        batch = UpdateBatch.from_rollout(kept, torch.zeros(len(kept)))
        batch.values = self.values(batch)
        batch.advantages, batch.returns, metrics = compute_token_advantages(
            self.token_estimator, kept.token_rewards[:, 1:], batch.values, batch.response_mask, **self.options)
        mask = batch.response_mask.bool()
        return batch, metrics | {
            "critic/values_mean": batch.values[mask].mean().item() if mask.any() else 0.0,
            "critic/vf_explained_var": explained_variance(batch.values, batch.returns, mask),
            "timing/critic_values_s": time.perf_counter() - tic,
        }

    def update(self, batch: UpdateBatch, shuffle: torch.Generator) -> dict[str, float]:
        """The clipped value loss on ``batch.returns`` over mini-batches (``critic/*`` metrics)."""
        tic = time.perf_counter()
        mode = self.settings.loss_agg_mode

        def loss(micro: MicroBatch, normaliser: float) -> tuple[torch.Tensor, dict[str, float]]:
            vpreds = micro_batch_values(self.engine, micro, self.settings.share_prompt_prefix)
            value, metrics = value_loss(vpreds, micro.values, micro.returns, micro.response_mask,
                                        self.cliprange_value, mode, normaliser)
            own_scale = normaliser / loss_normaliser(micro.response_mask, mode)
            return value, metrics | {"critic/vf_loss": value.item() * own_scale}

        metrics = optimise(self.engine, batch, self.settings, shuffle, self.rank, self.world_size, "critic", loss)
        return metrics | {"timing/critic_update_s": time.perf_counter() - tic}
