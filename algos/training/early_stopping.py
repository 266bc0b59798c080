"""RAGEN's early stop during training: the per-step ``rollout/in_group_std`` history and the stop decision
(``trainer.early_stop_*``, :meth:`algos.config.EarlyStopConfig.should_stop_early`)."""

from __future__ import annotations

from typing import Any

from algos.config import EarlyStopConfig

HISTORY_KEY = "in_group_std_history"
"""Where checkpoints keep the history, so a resumed run decides as an uninterrupted one."""


class RewardVarianceWatch:
    """Records each step's in-group reward std and says when the run has collapsed."""

    def __init__(self, config: EarlyStopConfig, resumed_state: dict[str, Any]) -> None:
        self.config, self.history = config, list(resumed_state.get(HISTORY_KEY, []))

    def after_step(self, metrics: dict[str, float]) -> bool:
        """Record ``metrics["rollout/in_group_std"]``; True, and ``early_stopped/reward_variance_collapse: 1``
        added to ``metrics``, when early stop is on and the history has collapsed."""
        self.history.append(metrics["rollout/in_group_std"])
        if collapsed := self.config.should_stop_early(self.history):
            metrics["early_stopped/reward_variance_collapse"] = 1.0
        return collapsed
