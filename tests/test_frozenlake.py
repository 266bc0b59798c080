"""FrozenLakeEnv: map generation, hand-checked dynamics and rewards, slip statistics, bad arguments."""

from __future__ import annotations

from collections import Counter, deque

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the gymnasium ids)
from envs.frozenlake import DOWN, LEFT, RIGHT, UP, FrozenLakeEnv

STEPS = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}


def set_map(env: FrozenLakeEnv, rows: list[str]) -> None:
    """Replace the level after reset with a hand-drawn one: P start, _ frozen, O hole, G goal."""
    grid = np.array([list(row) for row in rows])
    assert env.size == len(rows)
    env.frozen = grid != "O"
    env.start = env.player = tuple(int(i) for i in np.argwhere(grid == "P")[0])
    env.goal = tuple(int(i) for i in np.argwhere(grid == "G")[0])
    env.num_steps = 0


def shortest_actions(obs: str) -> list[int] | None:
    """Test-side BFS on the text map: actions from P to G over non-hole cells, or None."""
    grid = obs.split("\n")
    start = next((r, c) for r, row in enumerate(grid) for c, char in enumerate(row) if char == "P")
    paths = {start: []}
    queue = deque([start])
    while queue:
        row, col = queue.popleft()
        if grid[row][col] == "G":
            return paths[(row, col)]
        for action, (d_row, d_col) in STEPS.items():
            nxt = (row + d_row, col + d_col)
            if 0 <= nxt[0] < len(grid) and 0 <= nxt[1] < len(grid) and grid[nxt[0]][nxt[1]] != "O" and nxt not in paths:
                paths[nxt] = [*paths[(row, col)], action]
                queue.append(nxt)
    return None


def test_seed_zero_map_is_pinned() -> None:
    obs, _ = FrozenLakeEnv().reset(seed=0)
    assert obs == "_GOO\nP__O\nO_O_\n__O_"


@pytest.mark.parametrize(("size", "p", "seeds"), [(4, 0.8, 300), (6, 0.6, 100), (2, 0.0, 20)])
def test_every_generated_map_is_solvable_by_walking_its_shortest_path(size: int, p: float, seeds: int) -> None:
    env = FrozenLakeEnv(size=size, p=p, is_slippery=False)
    for seed in range(seeds):
        obs, _ = env.reset(seed=seed)
        actions = shortest_actions(obs)
        assert actions, f"seed {seed}: no path or start on goal\n{obs}"
        for action in actions:
            obs, reward, terminated, truncated, info = env.step(action)
        assert (reward, terminated, truncated, info["success"]) == (1.0, True, False, True)
        assert obs.count("√") == 1 and "G" not in obs and "P" not in obs


@pytest.mark.parametrize(("p", "low", "high"), [(0.8, 0.15, 0.23), (0.5, 0.38, 0.52)])
def test_maps_have_one_start_one_goal_and_holes_at_rate_about_one_minus_p(p: float, low: float, high: float) -> None:
    env = FrozenLakeEnv(p=p)
    holes = 0
    for seed in range(500):
        obs, _ = env.reset(seed=seed)
        counts = Counter(obs.replace("\n", ""))
        assert counts["P"] == 1 and counts["G"] == 1 and set(counts) <= {"P", "G", "_", "O"}
        holes += counts["O"]
    # 14 free cells per map; a guaranteed path makes holes a little rarer than 1 - p.
    assert low <= holes / (500 * 14) <= high


def test_hand_map_moves_goal_and_hole() -> None:
    env = FrozenLakeEnv(size=3, is_slippery=False)
    env.reset(seed=0)
    set_map(env, ["P_O", "__G", "___"])
    obs, reward, terminated, truncated, info = env.step(UP)  # off the map: stays put
    assert (obs, reward, terminated, truncated) == ("P_O\n__G\n___", 0.0, False, False)
    assert info == {"success": False, "action_is_valid": True, "action_is_effective": False}
    obs, reward, terminated, _, info = env.step(RIGHT)
    assert (obs, reward, terminated, info["action_is_effective"]) == ("_PO\n__G\n___", 0.0, False, True)
    obs, reward, terminated, _, info = env.step(DOWN)
    assert obs == "__O\n_PG\n___"
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (obs, reward, terminated, truncated, info["success"]) == ("__O\n__√\n___", 1.0, True, False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(LEFT)

    env.reset(seed=0)
    set_map(env, ["P_O", "__G", "___"])
    env.step(RIGHT)
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert (obs, reward, terminated, truncated, info["success"]) == ("__X\n__G\n___", 0.0, True, False, False)


def test_truncation_after_max_steps_and_invalid_actions_use_a_step() -> None:
    env = FrozenLakeEnv(size=3, is_slippery=False, max_steps=2)
    env.reset(seed=0)
    set_map(env, ["P__", "___", "__G"])
    obs, reward, terminated, truncated, info = env.step(9)
    assert (obs, reward, terminated, truncated) == ("P__\n___\n__G", 0.0, False, False)
    assert info["action_is_valid"] is False and info["action_is_effective"] is False
    _, _, terminated, truncated, _ = env.step(RIGHT)
    assert (terminated, truncated) == (False, True)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(RIGHT)


@pytest.mark.parametrize("action", [UP, LEFT])
def test_slippery_moves_go_intended_or_perpendicular_one_third_each(action: int) -> None:
    env = FrozenLakeEnv(size=3)
    moved = Counter()
    members = 3000
    for member in range(members):
        env.reset(seed=4, options={"member": member})
        set_map(env, ["___", "_P_", "__G"])
        env.step(action)
        moved[env.player[0] - 1, env.player[1] - 1] += 1
    opposite = (-STEPS[action][0], -STEPS[action][1])
    assert moved[opposite] == 0 and sum(moved.values()) == members
    assert len(moved) == 3
    for direction in moved:
        # std of a 1/3 frequency over 3000 draws is 0.0086; +-0.04 is over 4 standard deviations.
        assert moved[direction] / members == pytest.approx(1 / 3, abs=0.04)


def test_not_slippery_always_moves_as_intended() -> None:
    env = FrozenLakeEnv(size=3, is_slippery=False)
    for member in range(30):
        env.reset(seed=4, options={"member": member})
        set_map(env, ["___", "_P_", "__G"])
        env.step(UP)
        assert env.player == (0, 1)


def test_kwargs_reach_the_env_through_gymnasium_make() -> None:
    env = gym.make("turnrl/FrozenLake-v0", size=6, is_slippery=False, max_steps=7).unwrapped
    obs, _ = env.reset(seed=0)
    assert [len(row) for row in obs.split("\n")] == [6] * 6
    assert (env.is_slippery, env.max_steps) == (False, 7)


def test_instructions_state_rules_legend_and_actions() -> None:
    slippery = FrozenLakeEnv().instructions
    assert "Valid actions: Left, Down, Right, Up." in slippery
    assert "slippery" in slippery and "√ you on the goal" in slippery
    assert "slippery" not in FrozenLakeEnv(is_slippery=False).instructions


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"size": 1}, "size=1"),
        ({"size": 64}, "size=64"),
        ({"size": 4.0}, "size=4.0"),
        ({"p": 1.5}, "p=1.5"),
        ({"p": -0.1}, "p=-0.1"),
        ({"is_slippery": "yes"}, "is_slippery='yes'"),
        ({"max_steps": 0}, "max_steps=0"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        FrozenLakeEnv(**kwargs)
