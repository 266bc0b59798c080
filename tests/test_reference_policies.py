"""Board-blind reference policies against exact values: a dynamic program over a hand-checked level for
uniformly random play, and straight walks for repeated actions."""

from __future__ import annotations

import numpy as np
import pytest

from envs.frozenlake import DOWN, LEFT, MOVES, RIGHT, UP, FrozenLakeEnv
from envs.reference_policies import play, random_actions_success, repeated_action_success


def exact_random_success(env: FrozenLakeEnv, actions: int) -> float:
    """P(reaching the goal within ``actions`` uniformly random moves), by propagating the distribution
    over cells; holes and the goal absorb."""
    size = env.size
    mass = {env.start: 1.0}
    solved = 0.0
    for _ in range(actions):
        nxt: dict[tuple[int, int], float] = {}
        for (row, col), weight in mass.items():
            for d_row, d_col in MOVES.values():
                cell = (row + d_row, col + d_col)
                cell = cell if 0 <= cell[0] < size and 0 <= cell[1] < size else (row, col)
                if cell == env.goal:
                    solved += weight / 4
                elif env.frozen[cell]:
                    nxt[cell] = nxt.get(cell, 0.0) + weight / 4
        mass = nxt
    return solved


def test_seed_zero_level_by_hand() -> None:
    env = FrozenLakeEnv(is_slippery=False)
    env.reset(seed=0)  # "_GOO\nP__O\nO_O_\n__O_": start (1, 0), goal (0, 1)
    # Up then Right, or Right then Up, solves it; no single repeated move does
    assert play(env, 0, 0, [UP, RIGHT]) == 1.0 and play(env, 0, 0, [RIGHT, UP, LEFT]) == 1.0
    assert play(env, 0, 0, [DOWN, UP, RIGHT]) == 0.0  # Down falls into the hole at (2, 0)
    assert repeated_action_success(env, [0], actions=10).tolist() == [[0.0], [0.0], [0.0], [0.0]]
    # two moves: 2 winning sequences of 16
    assert exact_random_success(env, 2) == pytest.approx(2 / 16)


@pytest.mark.parametrize("level", [0, 3, 7])
def test_random_play_matches_the_exact_probability(level: int) -> None:
    env = FrozenLakeEnv(is_slippery=False)
    env.reset(seed=level)
    exact = exact_random_success(env, 10)
    estimate = random_actions_success(env, [level], actions=10, episodes=4000, seed=1)[0]
    assert abs(estimate - exact) < 4 * np.sqrt(exact * (1 - exact) / 4000) + 1e-9


def test_a_repeated_action_solves_exactly_the_levels_whose_goal_lies_straight_ahead() -> None:
    env = FrozenLakeEnv(is_slippery=False)
    levels = list(range(60))
    solved = repeated_action_success(env, levels, actions=10)
    for column, level in enumerate(levels):
        env.reset(seed=level)
        for action, (d_row, d_col) in MOVES.items():
            cell, straight = env.start, False
            while 0 <= cell[0] + d_row < env.size and 0 <= cell[1] + d_col < env.size:
                cell = (cell[0] + d_row, cell[1] + d_col)
                if not env.frozen[cell] or cell == env.goal:
                    straight = cell == env.goal
                    break
            assert solved[action, column] == float(straight), (level, action)
    assert 0 < solved.sum() < solved.size  # some, not all
