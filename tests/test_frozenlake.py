"""FrozenLakeEnv: map generation, hand-checked dynamics and rewards, slip statistics, bad arguments."""

from __future__ import annotations

from collections import Counter, deque

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the gymnasium ids)
from envs.frozenlake import DOWN, LEFT, RIGHT, UP, FrozenLakeEnv, goal_distances, shortest_path_moves

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


def test_shortest_path_moves_by_hand() -> None:
    frozen = np.array([list(row) for row in ["____", "_OO_", "__O_", "O___"]]) != "O"
    # (0, 0) -> (3, 3): along row 0 then down, or down column 0 then along row 3: 6 moves either way
    assert shortest_path_moves(frozen, (0, 0), (3, 3)) == [DOWN, RIGHT]
    assert goal_distances(frozen, (3, 3))[(0, 0)] == 6
    assert shortest_path_moves(frozen, (2, 0), (3, 3)) == [RIGHT]  # down is a hole, up goes the long way
    assert shortest_path_moves(frozen, (0, 0), (2, 1)) == [DOWN]
    assert shortest_path_moves(frozen, (3, 3), (3, 3)) == []  # already there
    walled = np.array([list(row) for row in ["_O__", "O___", "____", "____"]]) != "O"
    assert shortest_path_moves(walled, (0, 0), (3, 3)) == []  # no frozen path


def test_following_shortest_path_moves_reaches_every_goal_in_its_distance() -> None:
    env = FrozenLakeEnv(is_slippery=False)
    for seed in range(200):
        env.reset(seed=seed)
        distance = goal_distances(env.frozen, env.goal)[env.start]
        assert len(shortest_actions(env._render_grid())) == distance  # agrees with the test-side BFS
        reward = 0.0
        for _ in range(distance):
            moves = shortest_path_moves(env.frozen, env.player, env.goal)
            assert moves, f"seed {seed}: no move from {env.player}"
            _, reward, *_ = env.step(moves[-1])
        assert reward == 1.0 and env.player == env.goal


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


# ----------------------------------------------------------------- success_rate and coordinate observations
SEED_ZERO_COORD = (
    "Board size: 4 rows x 4 cols (zero-indexed).\n"
    "Start: (1, 0)\n"
    "Goal: (0, 1)\n"
    "Player: (1, 0)\n"
    "Holes: (0, 2), (0, 3), (1, 3), (2, 0), (2, 2), (3, 2)"
)


def test_coordinate_observations_of_the_seed_zero_map() -> None:
    # the map "_GOO\nP__O\nO_O_\n__O_" (test_seed_zero_map_is_pinned) in RAGEN's coordinate wording
    env = FrozenLakeEnv(success_rate=1.0, observation_format="coord")
    assert env.reset(seed=0)[0] == SEED_ZERO_COORD
    obs, *_ = env.step(UP)
    assert obs == SEED_ZERO_COORD.replace("Player: (1, 0)", "Player: (0, 0)")
    obs, reward, terminated, *_ = env.step(RIGHT)
    assert obs == SEED_ZERO_COORD.replace("Player: (1, 0)", "Player on goal: (0, 1)")
    assert (reward, terminated) == (1.0, True)
    both = FrozenLakeEnv(observation_format="grid_coord").reset(seed=0)[0]
    assert both == f"Coordinates: \n{SEED_ZERO_COORD}\nGrid Map: \n_GOO\nP__O\nO_O_\n__O_"


def test_coordinates_name_the_player_in_a_hole() -> None:
    env = FrozenLakeEnv(size=3, success_rate=1.0, observation_format="coord")
    env.reset(seed=0)
    set_map(env, ["PO_", "___", "__G"])
    obs, _, terminated, *_ = env.step(RIGHT)
    assert terminated and obs.split("\n")[1:] == ["Start: (0, 0)", "Goal: (2, 2)", "Player in hole: (0, 1)",
                                                  "Holes: (0, 1)"]


def move_counts(success_rate: float, action: int, members: int = 3000) -> Counter:
    """Where the player lands (relative to the centre) from the centre of an open 3x3 map, over members."""
    env = FrozenLakeEnv(size=3, success_rate=success_rate)
    moved = Counter()
    for member in range(members):
        env.reset(seed=4, options={"member": member})
        set_map(env, ["___", "_P_", "__G"])
        env.step(action)
        moved[env.player[0] - 1, env.player[1] - 1] += 1
    return moved


def test_success_rate_is_the_probability_of_the_intended_move() -> None:
    moved = move_counts(0.8, UP)
    # intended (-1, 0) with 0.8, each perpendicular with 0.1; std of 0.8 over 3000 draws is 0.0073
    assert moved[-1, 0] / 3000 == pytest.approx(0.8, abs=0.03)
    assert moved[0, -1] / 3000 == pytest.approx(0.1, abs=0.03)
    assert moved[0, 1] / 3000 == pytest.approx(0.1, abs=0.03)
    assert moved[1, 0] == 0
    assert move_counts(1.0, UP, members=50) == Counter({(-1, 0): 50})  # success_rate 1: never slips
    never = move_counts(0.0, LEFT, members=300)
    assert set(never) == {(-1, 0), (1, 0)}  # success_rate 0: always a perpendicular side


def test_success_rate_defaults_and_consistency_with_is_slippery() -> None:
    assert FrozenLakeEnv().success_rate == pytest.approx(1 / 3)
    assert FrozenLakeEnv(is_slippery=False).success_rate == 1.0
    assert FrozenLakeEnv(is_slippery=False, success_rate=1).success_rate == 1.0
    assert FrozenLakeEnv(success_rate=1 / 3).instructions == FrozenLakeEnv().instructions
    with pytest.raises(ValueError, match="success_rate=0.5 contradicts is_slippery=False"):
        FrozenLakeEnv(is_slippery=False, success_rate=0.5)


def test_instructions_state_the_slip_probabilities() -> None:
    text = FrozenLakeEnv(success_rate=0.8).instructions
    assert "only 4/5 of the time" in text and "(1/10 each)" in text
    assert "1/3 of the time" in FrozenLakeEnv().instructions
    assert "slippery" not in FrozenLakeEnv(success_rate=1.0).instructions
    assert "zero-indexed (row, column)" in FrozenLakeEnv(observation_format="coord").instructions
    assert "zero-indexed" not in FrozenLakeEnv().instructions


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"success_rate": 1.5}, "success_rate=1.5 is invalid"),
        ({"success_rate": True}, "success_rate=True is invalid"),
        ({"observation_format": "text"}, r"observation_format='text' is invalid; allowed: \['grid', 'coord'"),
        ({"size": 22, "observation_format": "coord"}, "size=22 is too large for observation_format='coord'"),
        ({"size": 20, "observation_format": "grid_coord"}, "size=20 is too large"),
    ],
)
def test_bad_success_rate_and_format_raise(kwargs: dict, bad: str) -> None:
    with pytest.raises(ValueError, match=bad):
        FrozenLakeEnv(**kwargs)


def test_largest_coordinate_maps_fit_the_observation_space() -> None:
    for kwargs in ({"size": 21, "observation_format": "coord"}, {"size": 19, "observation_format": "grid_coord"}):
        env = FrozenLakeEnv(p=0.5, **kwargs)
        assert env.observation_space.contains(env.reset(seed=1)[0])
