"""Two-armed bandit, one pull per episode (RAGEN's defaults).

The low-risk arm (default "Phoenix") always pays `low_risk_reward` (0.1). The high-risk arm (default
"Dragon") pays `high_risk_reward` (1.0) with probability `high_risk_prob` (0.25), else
`high_risk_miss_reward` (0.0), so by default the risky arm has the higher mean (0.25 > 0.1).
The payouts are not shown: the agent can only judge the arms by their names.

Action ids are fixed (0 = low-risk arm, 1 = high-risk arm); the order in which the arms are shown
("Arm 1", "Arm 2") is drawn at reset from the level seed. Success = the pulled arm has the higher mean.

`name_split` picks the arm names as RAGEN does for its train and validation envs: "train" is
Phoenix / Dragon (RAGEN's Bandit), "test" the held-out Trader / Librarian (RAGEN's BanditTest), so
validation asks whether the name-reading generalises. Explicit `low_risk_name` / `high_risk_name` win.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from envs.base import OBSERVATION_CHARSET, TextEnv, normalise_action_text
from envs.rendering import Tile, draw_grid

LOW_RISK, HIGH_RISK = 0, 1
ARM_NAME_SPLITS: dict[str, tuple[str, str]] = {"train": ("Phoenix", "Dragon"), "test": ("Trader", "Librarian")}
"""(low-risk name, high-risk name) of each `name_split`, RAGEN's Bandit and BanditTest."""
_POSITION_ALIASES = (("1", "one", "first"), ("2", "two", "second"))
_PALETTE = {
    "s": Tile((150, 150, 150), (("circle", (40, 90, 200)),)),  # low-risk arm
    "r": Tile((150, 150, 150), (("diamond", (200, 40, 40)),)),  # high-risk arm
    "S": Tile((240, 200, 60), (("circle", (40, 90, 200)),)),  # low-risk arm, pulled
    "R": Tile((240, 200, 60), (("diamond", (200, 40, 40)),)),  # high-risk arm, pulled
}


class BanditEnv(TextEnv):
    """One-step two-armed bandit with text observations; see the module docstring."""

    default_max_actions_per_traj: ClassVar[int] = 1
    palette: ClassVar[dict[str, Tile]] = _PALETTE
    board_legend: ClassVar[dict[str, str]] = {"s": "low-risk arm", "r": "high-risk arm", "S": "low-risk arm, pulled",
                                              "R": "high-risk arm, pulled"}

    def __init__(
        self,
        low_risk_name: str | None = None,
        high_risk_name: str | None = None,
        low_risk_reward: float = 0.1,
        high_risk_reward: float = 1.0,
        high_risk_prob: float = 0.25,
        high_risk_miss_reward: float = 0.0,
        name_split: str = "train",
        render_mode: str | None = None,
    ) -> None:
        if name_split not in ARM_NAME_SPLITS:
            raise ValueError(f"name_split={name_split!r} is invalid; allowed: {sorted(ARM_NAME_SPLITS)}")
        split_low, split_high = ARM_NAME_SPLITS[name_split]
        low_risk_name = split_low if low_risk_name is None else low_risk_name
        high_risk_name = split_high if high_risk_name is None else high_risk_name
        self.name_split = name_split
        names = {"low_risk_name": low_risk_name, "high_risk_name": high_risk_name}
        for key, name in names.items():
            _check_arm_name(key, name)
        if normalise_action_text(low_risk_name) == normalise_action_text(high_risk_name):
            raise ValueError(
                f"low_risk_name={low_risk_name!r} and high_risk_name={high_risk_name!r} read the same; "
                "allowed: two names that differ in their letters or digits"
            )
        rewards = {
            "low_risk_reward": low_risk_reward,
            "high_risk_reward": high_risk_reward,
            "high_risk_miss_reward": high_risk_miss_reward,
        }
        for key, value in rewards.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{key}={value!r} is invalid; allowed: a finite number")
        prob_is_number = isinstance(high_risk_prob, (int, float)) and not isinstance(high_risk_prob, bool)
        if not prob_is_number or not 0.0 <= high_risk_prob <= 1.0:
            raise ValueError(f"high_risk_prob={high_risk_prob!r} is invalid; allowed: a number in [0, 1]")
        super().__init__(action_names=(low_risk_name, high_risk_name), render_mode=render_mode)
        self.low_risk_reward = float(low_risk_reward)
        self.high_risk_reward = float(high_risk_reward)
        self.high_risk_prob = float(high_risk_prob)
        self.high_risk_miss_reward = float(high_risk_miss_reward)
        self.arm_means = (
            self.low_risk_reward,
            self.high_risk_prob * self.high_risk_reward + (1 - self.high_risk_prob) * self.high_risk_miss_reward,
        )
        if math.isclose(self.arm_means[LOW_RISK], self.arm_means[HIGH_RISK]):
            raise ValueError(
                f"both arms have mean reward {self.arm_means[LOW_RISK]:g}, so no choice can succeed; "
                "allowed: payouts that give the arms different means"
            )
        self.best_arm = int(np.argmax(self.arm_means))
        self.presented_order: tuple[int, int] = (LOW_RISK, HIGH_RISK)
        self.pulled_arm: int | None = None
        self.last_reward = 0.0
        self.done = False

    @property
    def instructions(self) -> str:
        low, high = self.action_names
        return (
            "You are playing a bandit game with two slot-machine arms, "
            f"named {low} and {high}. You may pull exactly one arm, once.\n"
            "Each arm pays out from its own reward distribution, which is related to its name. "
            "Think about what each name symbolises to guess which arm gives the higher reward on average, "
            "then pull that arm.\n"
            f"Valid actions: {low}, {high} (or the arm's number as shown, 1 or 2)."
        )

    def _new_episode(self, rng: np.random.Generator) -> None:
        self.presented_order = (LOW_RISK, HIGH_RISK) if rng.random() < 0.5 else (HIGH_RISK, LOW_RISK)
        self.pulled_arm = None
        self.last_reward = 0.0
        self.done = False

    def step(self, action: int) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Pull arm `action`; the episode always ends. An invalid action pays 0 and fails."""
        if self.done:
            raise RuntimeError("the bandit episode is over (one pull per episode); call reset()")
        self.done = True
        if not self.is_valid_action(action):
            return self._render_text(), 0.0, True, False, self._info(
                success=False, action_is_valid=False, action_is_effective=False
            )
        self.pulled_arm = int(action)
        if self.pulled_arm == LOW_RISK:
            self.last_reward = self.low_risk_reward
        elif self.outcome_rng.random() < self.high_risk_prob:
            self.last_reward = self.high_risk_reward
        else:
            self.last_reward = self.high_risk_miss_reward
        success = self.pulled_arm == self.best_arm
        return self._render_text(), self.last_reward, True, False, self._info(
            success=success, action_is_valid=True, action_is_effective=True
        )

    def _extra_aliases(self) -> dict[str, int]:
        return {
            alias: arm
            for arm, aliases in zip(self.presented_order, _POSITION_ALIASES, strict=True)
            for alias in aliases
        }

    def _render_text(self) -> str:
        lines = [f"Arm {position}: {self.action_names[arm]}" for position, arm in enumerate(self.presented_order, 1)]
        if self.pulled_arm is None:
            lines.append("Pull one arm.")
        else:
            lines.append(f"You pulled {self.action_names[self.pulled_arm]} and got reward {self.last_reward:g}.")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        symbols = []
        for arm in self.presented_order:
            symbol = "s" if arm == LOW_RISK else "r"
            symbols.append(symbol.upper() if arm == self.pulled_arm else symbol)
        return draw_grid([symbols], _PALETTE, tile_size=64)


def _check_arm_name(key: str, name: object) -> None:
    """Arm names are shown in observations and parsed from answers: printable, distinct from 1/2/first/..."""
    position_words = {alias for aliases in _POSITION_ALIASES for alias in aliases}
    if (
        not isinstance(name, str)
        or not normalise_action_text(name)
        or normalise_action_text(name) in position_words
        or "\n" in name
        or not set(name) <= set(OBSERVATION_CHARSET)
    ):
        raise ValueError(
            f"{key}={name!r} is invalid; allowed: a one-line name of ASCII letters, digits, spaces and "
            f"punctuation that is not only filler words and not one of {sorted(position_words)}"
        )
