"""Typed algorithm options: the Hydra structured-config schema under the seeds' key names.

``algorithm.*`` -> :class:`AlgorithmConfig`, ``actor_rollout_ref.actor.*`` -> :class:`ActorConfig`,
``actor_rollout_ref.rollout.rollout_filter_*`` -> :class:`RolloutFilterConfig`.
They work with ``OmegaConf.structured``; ``OmegaConf.to_object`` builds the dataclasses and runs the
validation in ``__post_init__`` (a ``ValueError`` naming the key and the allowed values).
"""

from __future__ import annotations

from dataclasses import dataclass

from algos.estimators import ESTIMATORS, estimator_options
from algos.filtering import check_filter_options
from algos.losses import KL_KINDS, LOSS_AGG_MODES


def require(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise ``ValueError`` naming ``key``, its bad ``value`` and what is ``allowed`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {allowed}")


@dataclass
class AlgorithmConfig:
    """``algorithm.*``: which advantage estimator and its options."""

    adv_estimator: str = "grpo"
    """Registered estimator name: grpo, sr_grpo, rloo, reinforce_plus_plus, reinforce_plus_plus_baseline
    (see ``algos.ESTIMATORS``)."""
    norm_adv_by_std_in_grpo: bool = True
    """grpo: divide by the in-group std (GRPO); false is Dr. GRPO."""
    soft_advantage_reweight: bool = False
    """grpo: scale each group's advantages by ``std_g / max std`` (Dr. GRPO+ Soft)."""
    tau: float = 0.5
    """sr_grpo: softmax temperature, > 0 (smaller = sharper focus on the best rollouts)."""
    epsilon: float = 1e-6
    """Added to standard deviations before dividing, > 0."""

    def __post_init__(self) -> None:
        require(
            self.adv_estimator in ESTIMATORS,
            "algorithm.adv_estimator",
            self.adv_estimator,
            str(sorted(ESTIMATORS)),
        )
        supports_soft = "soft_advantage_reweight" in estimator_options(self.adv_estimator)
        require(
            supports_soft or not self.soft_advantage_reweight,
            "algorithm.soft_advantage_reweight",
            self.soft_advantage_reweight,
            f"false with adv_estimator={self.adv_estimator!r}",
        )
        require(self.tau > 0, "algorithm.tau", self.tau, "> 0")
        require(self.epsilon > 0, "algorithm.epsilon", self.epsilon, "> 0")


@dataclass
class ActorConfig:
    """``actor_rollout_ref.actor.*``: policy loss, KL loss and optimisation (verl/RAGEN names)."""

    loss_agg_mode: str = "token-mean"
    """token-mean | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm."""
    use_kl_loss: bool = False
    """Add ``kl_loss_coef * KL(policy || reference)`` to the loss (needs a frozen reference model)."""
    kl_loss_coef: float = 0.001
    """KL loss weight (beta), >= 0."""
    kl_loss_type: str = "low_var_kl"
    """KL estimator: kl|k1, abs, mse|k2, low_var_kl|k3."""
    clip_ratio_low: float = 0.2
    """PPO lower clip: ratio >= 1 - clip_ratio_low, in [0, 1)."""
    clip_ratio_high: float = 0.2
    """PPO upper clip: ratio <= 1 + clip_ratio_high (clip-higher when above clip_ratio_low), >= 0."""
    clip_ratio_c: float = 3.0
    """Dual-clip bound for negative advantages, > 1."""
    entropy_coeff: float = 0.0
    """Entropy bonus weight, >= 0."""
    ppo_epochs: int = 1
    """Passes over each rollout batch, >= 1."""
    ppo_mini_batch_size: int = 32
    """Episodes per optimizer step, >= 1 (a smaller batch is one mini-batch)."""
    lr: float = 1e-6
    """Adam learning rate, > 0 (RAGEN's 3B value; small CPU models want larger)."""
    lr_warmup_steps: int = 0
    """Linear warmup length in optimizer steps, >= 0."""
    grad_clip: float = 1.0
    """Max global gradient norm, > 0."""
    weight_decay: float = 0.01
    """AdamW weight decay, >= 0."""

    def __post_init__(self) -> None:
        key = "actor_rollout_ref.actor."
        require(
            self.loss_agg_mode in LOSS_AGG_MODES,
            key + "loss_agg_mode",
            self.loss_agg_mode,
            str(list(LOSS_AGG_MODES)),
        )
        require(self.kl_loss_type in KL_KINDS, key + "kl_loss_type", self.kl_loss_type, str(list(KL_KINDS)))
        require(self.kl_loss_coef >= 0, key + "kl_loss_coef", self.kl_loss_coef, ">= 0")
        require(0 <= self.clip_ratio_low < 1, key + "clip_ratio_low", self.clip_ratio_low, "[0, 1)")
        require(self.clip_ratio_high >= 0, key + "clip_ratio_high", self.clip_ratio_high, ">= 0")
        require(self.clip_ratio_c > 1, key + "clip_ratio_c", self.clip_ratio_c, "> 1")
        require(self.entropy_coeff >= 0, key + "entropy_coeff", self.entropy_coeff, ">= 0")
        require(self.ppo_epochs >= 1, key + "ppo_epochs", self.ppo_epochs, ">= 1")
        require(self.ppo_mini_batch_size >= 1, key + "ppo_mini_batch_size", self.ppo_mini_batch_size, ">= 1")
        require(self.lr > 0, key + "lr", self.lr, "> 0")
        require(self.lr_warmup_steps >= 0, key + "lr_warmup_steps", self.lr_warmup_steps, ">= 0")
        require(self.grad_clip > 0, key + "grad_clip", self.grad_clip, "> 0")
        require(self.weight_decay >= 0, key + "weight_decay", self.weight_decay, ">= 0")


@dataclass
class RolloutFilterConfig:
    """``actor_rollout_ref.rollout.rollout_filter_*``: which groups :func:`algos.filter_groups` keeps."""

    rollout_filter_strategy: str = "top_k"
    """top_k (value = groups kept) | ratio (fraction kept) | top_p (cumulative std share) | min_p."""
    rollout_filter_value: float = 8.0
    """Strategy parameter: integer >= 1 for top_k, (0, 1] for ratio/top_p, [0, 1] for min_p."""
    rollout_filter_type: str = "largest"
    """largest keeps the most varied groups; smallest the least varied (ablation)."""
    rollout_filter_include_zero: bool = True
    """False drops zero-variance groups before ranking."""

    def __post_init__(self) -> None:
        try:
            check_filter_options(
                self.rollout_filter_strategy, self.rollout_filter_value, self.rollout_filter_type
            )
        except ValueError as error:
            raise ValueError(f"actor_rollout_ref.rollout: {error}") from None
