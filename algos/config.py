"""Typed algorithm options: the Hydra structured-config schema under the seeds' key names.

``algorithm.*`` -> :class:`AlgorithmConfig`, ``actor_rollout_ref.actor.*`` -> :class:`ActorConfig`,
``actor_rollout_ref.rollout.rollout_filter_*`` -> :class:`RolloutFilterConfig`, ``trainer.early_stop_*`` ->
:class:`EarlyStopConfig`.
They work with ``OmegaConf.structured``; ``OmegaConf.to_object`` builds the dataclasses and runs the
validation in ``__post_init__`` (a ``ValueError`` naming the key and the allowed values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from algos.early_stop import reward_variance_collapsed
from algos.estimators import ESTIMATORS, estimator_options
from algos.filtering import canonical_metric, check_filter_options, filter_groups, group_scores
from algos.losses import KL_KINDS, LOSS_AGG_MODES, POLICY_LOSSES
from algos.token_estimators import TOKEN_ESTIMATORS


def require(condition: bool, key: str, value: object, allowed: str) -> None:
    """Raise ``ValueError`` naming ``key``, its bad ``value`` and what is ``allowed`` unless ``condition``."""
    if not condition:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {allowed}")


@dataclass
class AlgorithmConfig:
    """``algorithm.*``: which advantage estimator and its options."""

    adv_estimator: str = "grpo"
    """Registered estimator name: grpo, sr_grpo, rloo, reinforce_plus_plus, reinforce_plus_plus_baseline
    (one reward per episode, ``algos.ESTIMATORS``) or gae (token-level, with a learned critic,
    ``algos.TOKEN_ESTIMATORS``)."""
    norm_adv_by_std_in_grpo: bool = True
    """grpo: divide by the in-group std (GRPO); false is Dr. GRPO."""
    soft_advantage_reweight: bool = False
    """grpo: scale each group's advantages by ``std_g / max std`` (Dr. GRPO+ Soft)."""
    tau: float = 0.5
    """sr_grpo: softmax temperature, > 0 (smaller = sharper focus on the best rollouts)."""
    epsilon: float = 1e-6
    """Added to standard deviations before dividing, > 0."""
    gamma: float = 1.0
    """gae: discount per generated token, in [0, 1] (RAGEN's PPO: 1)."""
    lam: float = 1.0
    """gae: GAE's lambda, in [0, 1] (1: Monte-Carlo returns minus the value; 0: one-step TD)."""
    bi_level_gae: bool = False
    """gae: RAGEN's bi-level GAE, a turn-level recursion (``high_level_gamma``) across turns and a
    token-level one (``gamma``) inside each turn."""
    high_level_gamma: float = 0.95
    """bi_level_gae: discount per turn, in [0, 1]."""

    @property
    def token_estimator(self) -> str | None:
        """The token-level estimator selected (``bi_level_gae`` for gae with ``bi_level_gae``), or None
        for an estimator with one reward per episode (no critic)."""
        if self.adv_estimator not in TOKEN_ESTIMATORS:
            return None
        return "bi_level_gae" if self.bi_level_gae else self.adv_estimator

    def __post_init__(self) -> None:
        require(
            self.adv_estimator in ESTIMATORS or self.adv_estimator in TOKEN_ESTIMATORS,
            "algorithm.adv_estimator",
            self.adv_estimator,
            str(sorted(ESTIMATORS) + sorted(TOKEN_ESTIMATORS)),
        )
        for key in ("gamma", "lam", "high_level_gamma"):
            require(0 <= getattr(self, key) <= 1, "algorithm." + key, getattr(self, key), "[0, 1]")
        require(not self.bi_level_gae or self.adv_estimator == "gae", "algorithm.bi_level_gae", self.bi_level_gae,
                f"false with adv_estimator={self.adv_estimator!r} (bi-level GAE is a gae option)")
        supports_soft = self.token_estimator is None and "soft_advantage_reweight" in estimator_options(
            self.adv_estimator)
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

    policy_loss: str = "vanilla"
    """Registered policy loss (``algos.POLICY_LOSSES``): vanilla = PPO clip with clip-higher and dual clip."""
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
    ppo_mini_batch_size: int = 16
    """Episodes per optimizer step, >= 1 (a smaller batch is one mini-batch; RAGEN's GPU runs use 32)."""
    lr: float = 1e-5
    """AdamW learning rate, > 0 (the CPU default for a 135M model; RAGEN's 3B runs use 1e-6)."""
    lr_warmup_steps: int = 0
    """Linear warmup length in optimizer steps, >= 0."""
    grad_clip: float = 1.0
    """Max global gradient norm, > 0."""
    weight_decay: float = 0.01
    """AdamW weight decay, >= 0."""

    def __post_init__(self) -> None:
        key = "actor_rollout_ref.actor."
        require(self.policy_loss in POLICY_LOSSES, key + "policy_loss", self.policy_loss, str(sorted(POLICY_LOSSES)))
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
    """top_k|top_k_abs (value = groups kept) | ratio|top_k_frac (fraction kept, RAGEN's top_k) | top_p | min_p."""
    rollout_filter_value: float = 8.0
    """Strategy parameter: integer >= 1 for top_k, (0, 1] for ratio/top_p, [0, 1] for min_p."""
    rollout_filter_type: str = "largest"
    """largest keeps the highest-scoring groups; smallest the lowest (ablation)."""
    rollout_filter_include_zero: bool = True
    """False drops zero-score groups before ranking."""
    rollout_filter_metric: str = "reward_std"
    """Group score: reward_std | reward | reward_sum | length | entropy | entropy_std (RAGEN's
    reward_variance / entropy_variance name the std ones)."""
    rollout_filter_top_p_prob_mode: str = "linear"
    """top_p: linear (cumulative share of the score total) | softmax (nucleus over softmax(score))."""
    rollout_filter_max_rerolls: int = 0
    """0: a filter that would keep nothing keeps every group. N > 0: it keeps nothing and the trainer
    collects a fresh batch, at most N times in a row (RAGEN), then trains the last one whole."""

    def __post_init__(self) -> None:
        try:
            check_filter_options(
                self.rollout_filter_strategy,
                self.rollout_filter_value,
                self.rollout_filter_type,
                self.rollout_filter_top_p_prob_mode,
            )
            canonical_metric(self.rollout_filter_metric)
        except ValueError as error:
            raise ValueError(f"actor_rollout_ref.rollout: {error}") from None
        key = "actor_rollout_ref.rollout.rollout_filter_max_rerolls"
        require(self.rollout_filter_max_rerolls >= 0, key, self.rollout_filter_max_rerolls, ">= 0")

    def keep_groups(self, rewards: torch.Tensor, lengths: torch.Tensor | None = None,
                    allow_empty: bool = False) -> tuple[torch.Tensor, dict[str, float]]:
        """:func:`algos.filter_groups` with these settings on ``rewards [G, K]``, the groups ranked by
        ``rollout_filter_metric`` (``lengths [G, K]``: generated tokens, for the length metric)."""
        scores = group_scores(self.rollout_filter_metric, rewards, lengths=lengths)
        return filter_groups(rewards, self.rollout_filter_strategy, value=self.rollout_filter_value,
                             filter_type=self.rollout_filter_type, include_zero=self.rollout_filter_include_zero,
                             scores=scores, top_p_prob_mode=self.rollout_filter_top_p_prob_mode,
                             allow_empty=allow_empty)


@dataclass
class EarlyStopConfig:
    """``trainer.early_stop_*``: RAGEN's stop on reward-variance collapse (:func:`algos.reward_variance_collapsed`)."""

    early_stop_on_zero_variance: bool = False
    """Stop training once the in-group reward std has collapsed (see the three keys below)."""
    early_stop_baseline_steps: int = 10
    """Steps whose mean ``rollout/in_group_std`` is the baseline, >= 1."""
    early_stop_window: int = 10
    """Consecutive later steps that must all be below ``early_stop_ratio * baseline``, >= 1."""
    early_stop_ratio: float = 0.1
    """Collapse threshold as a fraction of the baseline, in (0, 1]."""

    def __post_init__(self) -> None:
        key = "trainer."
        require(self.early_stop_baseline_steps >= 1, key + "early_stop_baseline_steps",
                self.early_stop_baseline_steps, ">= 1")
        require(self.early_stop_window >= 1, key + "early_stop_window", self.early_stop_window, ">= 1")
        require(0 < self.early_stop_ratio <= 1, key + "early_stop_ratio", self.early_stop_ratio, "(0, 1]")

    def should_stop_early(self, history: list[float]) -> bool:
        """Whether ``early_stop_on_zero_variance`` is on and ``history`` (``rollout/in_group_std`` per step,
        oldest first) has collapsed by :func:`algos.reward_variance_collapsed` with these keys."""
        return self.early_stop_on_zero_variance and reward_variance_collapsed(
            history, baseline_steps=self.early_stop_baseline_steps, window=self.early_stop_window,
            ratio=self.early_stop_ratio)
