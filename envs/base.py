"""The small base shared by TurnRL's text games.

A `TextEnv` shows its state as text (`spaces.Text`), takes one of a few named actions
(`spaces.Discrete(len(action_names))`) and turns whatever a language model wrote into an action id
with `parse_action`, which never raises.

Seeding contract (see `reset`):
- `reset(seed=s)` fixes the level: it is drawn from `self.np_random`, which gymnasium seeds from `s`.
- Random outcomes of actions (bandit payouts, slips on ice) come from a second generator,
  `self.outcome_rng`, seeded from (a key drawn from `self.np_random`, member) with numpy's
  `SeedSequence`. So `reset(seed=s, options={"member": j})` gives every member `j` of a group the
  same level but its own reproducible dice. No `hash()` and no global RNG is used anywhere.

Subclasses implement `_new_episode(rng)`, `step`, `_render_text`, `_render_rgb` and `instructions`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

OBSERVATION_CHARSET = string.ascii_letters + string.digits + string.punctuation + " \n√"
MAX_OBSERVATION_LENGTH = 4096

# Words a model wraps around an action ("I will move up", "Action: Left", "pull arm 2") that carry no choice.
FILLER_WORDS = frozenset({
    "i", "ll", "will", "choose", "chose", "select", "pick", "play", "pull", "take", "move", "go", "walk",
    "step", "push", "action", "answer", "final", "my", "is", "the", "a", "an", "to", "towards", "toward",
    "direction", "option", "arm",
})

# Aliases of the four directions, keyed by the lower-case action name they stand for.
DIRECTION_ALIASES: dict[str, tuple[str, ...]] = {
    "up": ("north", "u", "^", "↑", "upward", "upwards"),
    "down": ("south", "d", "v", "↓", "downward", "downwards"),
    "left": ("west", "l", "<", "←", "leftward", "leftwards"),
    "right": ("east", "r", ">", "→", "rightward", "rightwards"),
}

_NON_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")
_WRAPPING_CHARS = " \t\r\n`*_\"'.,:;!?()[]{}"  # markdown, quotes and punctuation around a bare symbol


def normalise_action_text(text: str) -> str:
    """Lower-case `text`, keep only runs of [a-z0-9] as words, drop `FILLER_WORDS`, join with spaces."""
    words = _NON_ALPHANUMERIC.sub(" ", text.lower()).split()
    return " ".join(word for word in words if word not in FILLER_WORDS)


class TextEnv(gym.Env[str, int]):
    """A gymnasium env with text observations and named discrete actions."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    default_max_actions_per_traj: ClassVar[int] = 10
    board_legend: ClassVar[dict[str, str]] = {}
    """Symbol of the ``rgb_array`` picture -> what it shows; with ``palette`` it draws a legend."""
    palette: ClassVar[dict[str, Any]] = {}
    """Symbol -> ``envs.rendering.Tile`` of the ``rgb_array`` picture (empty: no picture legend)."""

    def __init__(self, action_names: Sequence[str], render_mode: str | None = None) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"render_mode={render_mode!r} is not supported; allowed: None or one of "
                f"{self.metadata['render_modes']}"
            )
        self.render_mode = render_mode
        self.action_names: tuple[str, ...] = tuple(action_names)
        if self.action_names:  # free-answer envs (GSM8K) have no names and set their own action_space
            self.action_space = spaces.Discrete(len(self.action_names))
        self.observation_space = spaces.Text(max_length=MAX_OBSERVATION_LENGTH, charset=OBSERVATION_CHARSET)
        self.member = 0
        self.outcome_rng = np.random.default_rng(np.random.SeedSequence(0))

    # ----------------------------------------------------------------- subclass hooks
    @property
    def instructions(self) -> str:
        """Rules, legend and the valid action names, for the agent's first message."""
        raise NotImplementedError

    def _new_episode(self, rng: np.random.Generator) -> None:
        """Draw the level from `rng` and reset all per-episode state."""
        raise NotImplementedError

    def _render_text(self) -> str:
        raise NotImplementedError

    def _render_rgb(self) -> np.ndarray:
        raise NotImplementedError

    def _extra_aliases(self) -> dict[str, int]:
        """Env-specific aliases (raw text -> action id); names and direction aliases are added by the base."""
        return {}

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[str, dict]:
        """Start an episode; `options={"member": j}` (int >= 0, default 0) picks member j's outcome stream."""
        super().reset(seed=seed)
        self.member = _member_from(options)
        episode_key = [int(word) for word in self.np_random.integers(2**32, size=4)]
        self.outcome_rng = np.random.Generator(
            np.random.PCG64(np.random.SeedSequence(episode_key, spawn_key=(self.member,)))
        )
        self._new_episode(self.np_random)
        return self._render_text(), {"member": self.member}

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; make the env with render_mode='ansi' or 'rgb_array'.")
            return None
        if self.render_mode == "ansi":
            return self._render_text()
        return self._render_rgb()

    # ----------------------------------------------------------------- actions
    def is_valid_action(self, action: object) -> bool:
        """True for an int (or numpy integer, not bool) in [0, n)."""
        return (
            isinstance(action, (int, np.integer))
            and not isinstance(action, (bool, np.bool_))
            and 0 <= int(action) < len(self.action_names)
        )

    def action_aliases(self) -> dict[str, int]:
        """Every accepted spelling (normalised, see `normalise_action_text`) -> action id.

        Bare symbols such as "^" or "←" normalise to "" and are kept verbatim. Action names win over
        aliases when they collide.
        """
        raw: dict[str, int] = {}
        for action, name in enumerate(self.action_names):
            for alias in DIRECTION_ALIASES.get(name.lower(), ()):
                raw[alias] = action
        raw.update(self._extra_aliases())
        raw.update({name: action for action, name in enumerate(self.action_names)})
        return {normalise_action_text(alias) or alias: action for alias, action in raw.items()}

    def parse_action(self, text: object) -> int | None:
        """Map model text to an action id, or None if it names no action (never raises).

        Case-insensitive; ignores surrounding whitespace, quotes, markdown and punctuation and filler
        words ("Move up.", "**Left**", "I choose Dragon"). Accepts the action names and `action_aliases()`.
        Bare digits are no action unless an env adds them (Bandit: the arm numbers it shows), since a
        model's "1" could mean an index from 0 or from 1.
        """
        if not isinstance(text, str):
            return None
        return self.action_aliases().get(normalise_action_text(text) or text.strip(_WRAPPING_CHARS))

    @staticmethod
    def _info(*, success: bool, action_is_valid: bool, action_is_effective: bool, **extra: Any) -> dict[str, Any]:
        """A fresh step-info dict with the three keys every TurnRL env reports, as plain bools."""
        return {
            "success": bool(success),
            "action_is_valid": bool(action_is_valid),
            "action_is_effective": bool(action_is_effective),
            **extra,
        }


def _member_from(options: dict[str, Any] | None) -> int:
    """The `member` reset option: an int >= 0 (default 0); any other option key is an error."""
    options = options or {}
    unknown = set(options) - {"member"}
    if unknown:
        raise ValueError(f"unknown reset option(s) {sorted(unknown)}; allowed: ['member']")
    member = options.get("member", 0)
    if not isinstance(member, (int, np.integer)) or isinstance(member, (bool, np.bool_)) or member < 0:
        raise ValueError(f"reset option member={member!r} is invalid; allowed: an int >= 0")
    return int(member)
