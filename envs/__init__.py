"""TurnRL's text games, registered with gymnasium on import.

    >>> import gymnasium, envs
    >>> env = gymnasium.make("turnrl/FrozenLake-v0", is_slippery=False)   # kwargs reach the constructor
    >>> env = envs.make("bandit")                                          # the raw TextEnv, no wrappers
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.base import TextEnv

ENV_IDS: dict[str, str] = {
    "bandit": "turnrl/Bandit-v0",
    "sokoban": "turnrl/Sokoban-v0",
    "frozenlake": "turnrl/FrozenLake-v0",
    "gsm8k": "turnrl/GSM8K-v0",
}
_ENTRY_POINTS: dict[str, str] = {
    "bandit": "envs.bandit:BanditEnv",
    "sokoban": "envs.sokoban:SokobanEnv",
    "frozenlake": "envs.frozenlake:FrozenLakeEnv",
    "gsm8k": "envs.gsm8k:GSM8KEnv",
}

for _name, _env_id in ENV_IDS.items():
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point=_ENTRY_POINTS[_name])


def make(name: str, **kwargs: Any) -> TextEnv:
    """The unwrapped env `name` (one of `ENV_IDS`), built by `gymnasium.make` with `kwargs`."""
    if name not in ENV_IDS:
        raise ValueError(f"env name {name!r} is unknown; allowed: {sorted(ENV_IDS)}")
    return gym.make(ENV_IDS[name], **kwargs).unwrapped


__all__ = ["ENV_IDS", "TextEnv", "make"]
