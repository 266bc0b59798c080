"""Algorithm core: advantage estimators, rollout filtering, losses and their typed config.

Pure tensor functions, independent of any model. The trainer lives in ``algos.training.trainer`` (imported
separately, as it pulls in the model stack).
"""

from algos.config import ActorConfig, AlgorithmConfig, EarlyStopConfig, RolloutFilterConfig
from algos.early_stop import reward_variance_collapsed
from algos.estimators import ESTIMATORS, compute_advantages, register_estimator
from algos.filtering import filter_groups, group_scores, should_reroll
from algos.losses import (
    POLICY_LOSSES,
    aggregate_loss,
    entropy_from_logits,
    kl_penalty,
    loss_normaliser,
    policy_loss,
    register_policy_loss,
    value_loss,
)
from algos.token_estimators import (
    TOKEN_ESTIMATORS,
    compute_token_advantages,
    explained_variance,
    register_token_estimator,
)

__all__ = [
    "ESTIMATORS",
    "POLICY_LOSSES",
    "TOKEN_ESTIMATORS",
    "ActorConfig",
    "AlgorithmConfig",
    "EarlyStopConfig",
    "RolloutFilterConfig",
    "aggregate_loss",
    "compute_advantages",
    "compute_token_advantages",
    "entropy_from_logits",
    "explained_variance",
    "filter_groups",
    "group_scores",
    "kl_penalty",
    "loss_normaliser",
    "policy_loss",
    "register_estimator",
    "register_policy_loss",
    "register_token_estimator",
    "reward_variance_collapsed",
    "should_reroll",
    "value_loss",
]
