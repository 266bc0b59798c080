"""Board-blind reference policies: what play that never looks at the board scores on given levels.

A learning curve means little without the score of an agent that ignores its observations on the same
levels. Two such agents, each with the episode's action budget (``actions``, e.g. RAGEN's max_turn x
max_actions_per_turn):

- uniformly random valid actions, ``episodes`` times a level (:func:`random_actions_success`);
- one action repeated, for every action (:func:`repeated_action_success`); the best of them is what a
  policy that collapsed onto one move (RAGEN's echo trap) can reach at most.

An episode stops early when the env ends it (a hole, the goal, a solved puzzle). Level ``seed`` is
``env.reset(seed=seed, options={"member": member})``, as the rollout engine plays it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from envs.base import TextEnv


def play(env: TextEnv, level: int, member: int, actions: Iterable[int]) -> float:
    """1.0 if playing ``actions`` in order on ``level`` (member ``member``) reaches success, else 0.0."""
    env.reset(seed=level, options={"member": member})
    for action in actions:
        _, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            return float(info["success"])
    return 0.0


def random_actions_success(env: TextEnv, levels: Sequence[int], actions: int, episodes: int, seed: int = 0
                           ) -> np.ndarray:
    """Per level, the success rate of ``episodes`` episodes of ``actions`` uniformly random valid actions
    (member ``i`` for episode ``i``, so slippery dice differ between episodes)."""
    rng = np.random.default_rng(seed)
    choices = len(env.action_names)
    return np.array([np.mean([play(env, level, member, rng.integers(choices, size=actions))
                              for member in range(episodes)]) for level in levels])


def repeated_action_success(env: TextEnv, levels: Sequence[int], actions: int) -> np.ndarray:
    """``[num_actions, levels]``: 1.0 where repeating that action ``actions`` times solves the level
    (member 0)."""
    return np.array([[play(env, level, 0, [action] * actions) for level in levels]
                     for action in range(len(env.action_names))])
