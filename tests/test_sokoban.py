"""Sokoban: rules and rewards on hand-made rooms, the BFS solver, and the generated levels."""

from __future__ import annotations

import statistics

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import envs
from envs.sokoban import PALETTE, SokobanEnv, room_from_text, room_to_text, solve

UP, DOWN, LEFT, RIGHT = range(4)

CORRIDOR = "######\n#PX_O#\n######"
# Box at (2, 2), target at (1, 4): three pushes, one step to reach the box and two to turn between
# the push directions, so no solution is shorter than 6.
TURN = "######\n#___O#\n#_X__#\n#P___#\n######"
# The first box sits on its target; pushing it right takes it off, and then it is stuck behind the second.
TWO_BOXES = "#######\n#P√_XO#\n#######"
# Box against the right wall, player left of it, a wall below the player.
AGAINST_WALL = "#####\n#O__#\n#_PX#\n#####"
# The box is in a corner that is not a target: unsolvable.
CORNERED = "#####\n#X__#\n#_P_#\n#__O#\n#####"


def play(env: SokobanEnv, actions: list[int]) -> list[tuple[str, float, bool, bool, dict]]:
    return [env.step(action) for action in actions]


# ------------------------------------------------------------------------------------------ rules
def test_push_onto_target_wins_with_step_penalty_plus_bonuses() -> None:
    env = SokobanEnv()
    assert env.load_room(CORRIDOR) == CORRIDOR
    (obs1, r1, term1, trunc1, info1), (obs2, r2, term2, trunc2, info2) = play(env, [RIGHT, RIGHT])
    assert obs1 == "######\n#_PXO#\n######"
    assert r1 == pytest.approx(-0.1) and not term1 and not trunc1 and not info1["success"]
    assert info1["action_is_effective"] and info1["boxes_on_target"] == 0
    assert obs2 == "######\n#__P√#\n######"
    assert r2 == pytest.approx(-0.1 + 1.0 + 10.0) and term2 and not trunc2
    assert info2["success"] and info2["boxes_on_target"] == 1
    with pytest.raises(RuntimeError, match="over"):
        env.step(LEFT)


def test_push_off_target_then_box_blocked_by_box() -> None:
    env = SokobanEnv()
    env.load_room(TWO_BOXES)
    obs, reward, terminated, _, info = env.step(RIGHT)
    assert obs == "#######\n#_SXXO#\n#######"  # the player now stands on the emptied target
    assert reward == pytest.approx(-0.1 - 1.0) and not terminated
    assert info["action_is_effective"] and info["boxes_on_target"] == 0
    obs, reward, _, _, info = env.step(RIGHT)
    assert obs == "#######\n#_SXXO#\n#######"
    assert reward == pytest.approx(-0.1) and not info["action_is_effective"] and info["action_is_valid"]


def test_walls_block_the_player_and_boxes() -> None:
    env = SokobanEnv()
    env.load_room(AGAINST_WALL)
    for action in (RIGHT, DOWN):  # push into the wall, walk into the wall
        obs, reward, _, _, info = env.step(action)
        assert obs == AGAINST_WALL and reward == pytest.approx(-0.1) and not info["action_is_effective"]
    obs, _, _, _, info = env.step(UP)
    assert obs == "#####\n#OP_#\n#__X#\n#####" and info["action_is_effective"]


def test_invalid_action_is_a_noop_step_and_max_steps_truncates() -> None:
    env = SokobanEnv(max_steps=3)
    env.load_room(CORRIDOR)
    obs, reward, terminated, truncated, info = env.step(7)
    assert obs == CORRIDOR and reward == pytest.approx(-0.1) and not (terminated or truncated)
    assert not info["action_is_valid"] and not info["action_is_effective"]
    _, _, _, truncated, _ = env.step(LEFT)
    assert not truncated
    _, _, terminated, truncated, info = env.step(LEFT)
    assert truncated and not terminated and not info["success"]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(st.integers(0, 3), max_size=40), large=st.booleans())
def test_random_play_keeps_the_room_consistent_and_rewards_add_up(seed: int, actions: list[int], large: bool) -> None:
    env = envs.make("sokoban", preset="large" if large else "default")
    env.reset(seed=seed)
    total, steps, info = 0.0, 0, {"boxes_on_target": 0, "success": False}
    for action in actions:
        obs, reward, terminated, truncated, info = env.step(action)
        total, steps = total + reward, steps + 1
        room = env.room
        assert obs == room_to_text(room)
        assert len(set(room.boxes)) == env.num_boxes and set(room.boxes) <= room.floor
        assert room.player in room.floor and room.player not in room.boxes
        if terminated or truncated:
            break
    # Generated rooms start with no box on a target, so the box rewards telescope to the final count.
    expected = -0.1 * steps + info["boxes_on_target"] + 10.0 * info["success"]
    assert total == pytest.approx(expected)


def test_text_round_trip_and_bad_room_text() -> None:
    for text in (CORRIDOR, TURN, TWO_BOXES, AGAINST_WALL):
        assert room_to_text(room_from_text(text)) == text
    room = room_from_text(TURN)
    assert (room.height, room.width, room.player, room.boxes, room.targets) == (5, 6, 19, (14,), (10,))
    for text, message in (("#####\n#P X#\n#####", "unknown symbols"), ("#####\n_PXO#\n#####", "enclosed"),
                          ("#####\n#PXO#\n####", "rectangle"), ("#####\n#PXX#\n#O__#\n#####", "as many boxes"),
                          ("######\n#PXOP#\n######", "one player")):
        with pytest.raises(ValueError, match=message):
            room_from_text(text)


def test_rgb_render_draws_the_palette() -> None:
    env = SokobanEnv(render_mode="rgb_array")
    env.load_room(CORRIDOR)
    picture = env.render()
    assert picture.shape == (3 * 32, 6 * 32, 3) and picture.dtype == np.uint8
    assert tuple(picture[16, 16]) == PALETTE["#"].background
    assert tuple(picture[48, 48 + 32]) == PALETTE["X"].layers[0][1]  # centre of the box tile (1, 2)


# ------------------------------------------------------------------------------------------ solver
def test_solver_finds_shortest_solutions_of_hand_rooms() -> None:
    assert solve(CORRIDOR) == [RIGHT, RIGHT]
    turn = solve(TURN)
    assert turn is not None and len(turn) == 6
    env = SokobanEnv()
    env.load_room(TURN)
    assert play(env, turn)[-1][4]["success"]
    assert solve(TURN, max_depth=5) is None and solve(CORRIDOR, max_depth=1) is None
    assert solve(CORRIDOR, max_depth=2) == [RIGHT, RIGHT]
    assert solve("######\n#P_√_#\n######") == []
    assert solve(CORNERED) is None
    assert solve(TWO_BOXES) is None  # the second box cannot pass the first one
    with pytest.raises(ValueError, match="max_depth"):
        solve(CORRIDOR, max_depth=-1)


# ------------------------------------------------------------------------------------------ generation
def test_seed_zero_level_is_pinned() -> None:
    obs, _ = envs.make("sokoban").reset(seed=0)
    assert obs == "######\n#__###\n#XP###\n#O####\n#_####\n######"


@pytest.mark.parametrize(("kwargs", "seeds"), [({}, range(200)), ({"preset": "large"}, range(100))])
def test_generated_levels_are_unsolved_and_solvable_within_max_steps(kwargs: dict, seeds: range) -> None:
    env = envs.make("sokoban", **kwargs)
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        room = env.room
        assert len(room.boxes) == len(room.targets) == env.num_boxes
        assert not set(room.boxes) & set(room.targets)
        solution = solve(room, max_depth=env.max_steps)
        assert solution, f"seed {seed}: {obs}"
        *_, (_, reward, terminated, _, info) = play(env, solution)
        assert terminated and info["success"] and reward >= 10.0 - 0.1


def test_difficulty_matches_ragen_six_by_six_one_box() -> None:
    """RAGEN's 6x6 one-box levels need about 4-5 moves on average, up to ~13 (trivial generators fail)."""
    env = envs.make("sokoban")
    lengths = [len(solve(env.reset(seed=seed)[0])) for seed in range(300)]
    assert 3.5 <= statistics.mean(lengths) <= 5.5
    assert max(lengths) >= 9 and sum(length == 1 for length in lengths) < 0.15 * len(lengths)


def test_large_preset_and_explicit_kwargs_through_gymnasium_make() -> None:
    large = gym.make("turnrl/Sokoban-v0", preset="large").unwrapped
    assert (large.dim_room, large.num_boxes) == ((8, 8), 2)
    obs, _ = large.reset(seed=3)
    assert len(obs.split("\n")) == 8 and obs.count("X") == 2 and obs.count("O") == 2
    custom = gym.make("turnrl/Sokoban-v0", preset="large", num_boxes=1, dim_room=[7, 9]).unwrapped
    assert (custom.dim_room, custom.num_boxes) == ((7, 9), 1)
    assert custom.reset(seed=0)[0].split("\n")[0] == "#" * 9


def test_same_seed_same_level_across_envs_and_retries_are_deterministic() -> None:
    # A one-step walk carves a single patch that rarely admits a pull, so most resets need several attempts.
    first, second = envs.make("sokoban", num_gen_steps=1), envs.make("sokoban", num_gen_steps=1)
    levels = [first.reset(seed=seed)[0] for seed in range(20)]
    assert levels == [second.reset(seed=seed)[0] for seed in range(20)]
    assert all(solve(level) for level in levels)
    default = envs.make("sokoban")
    assert len({default.reset(seed=seed)[0] for seed in range(50)}) >= 45


def test_generation_gives_up_with_a_clear_error() -> None:
    env = SokobanEnv(dim_room=(5, 5), num_boxes=4, max_generation_attempts=5)  # 4 boxes never fit 3x3
    with pytest.raises(RuntimeError, match=r"dim_room=\(5, 5\), num_boxes=4 in 5 attempts"):
        env.reset(seed=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim_room": (2, 6)}, r"dim_room=\(2, 6\) is too small"),
        ({"dim_room": (4, 4)}, r"dim_room=\(4, 4\) is too small"),
        ({"dim_room": "6x6"}, "dim_room='6x6' is invalid"),
        ({"dim_room": (6.0, 6)}, "dim_room=.* is invalid"),
        ({"dim_room": (6, 6, 6)}, "dim_room=.* is invalid"),
        ({"num_boxes": 0}, "num_boxes=0 is invalid"),
        ({"num_boxes": 1.5}, "num_boxes=1.5 is invalid"),
        ({"num_boxes": 8}, r"num_boxes=8 does not fit dim_room=\(6, 6\)"),
        ({"max_steps": 0}, "max_steps=0"),
        ({"search_depth": True}, "search_depth=True"),
        ({"num_gen_steps": -1}, "num_gen_steps=-1"),
        ({"max_generation_attempts": 0}, "max_generation_attempts=0"),
        ({"preset": "huge"}, "preset='huge' is unknown"),
    ],
)
def test_bad_constructor_arguments_raise_value_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SokobanEnv(**kwargs)


def test_instructions_name_legend_actions_and_rewards() -> None:
    text = SokobanEnv().instructions
    for part in ("# wall", "_ floor", "O target", "X box", "√ box on target", "P you", "S you on a target",
                 "Up, Down, Left, Right", "-0.1 per action", "+10 when all boxes"):
        assert part in text, part


# A player on a target, a box off and a box on a target, a free target.
COORD_ROOM = "######\n#_S__#\n#_X√_#\n#O_X_#\n######"
COORD_TEXT = (
    "Board size: 5 rows x 6 cols (zero-indexed).\n"
    "Targets: (1, 2), (2, 3), (3, 1)\n"
    "Boxes: (2, 2), (3, 3)\n"
    "Boxes on target: (2, 3)\n"
    "Player on target: (1, 2)"
)


def test_coordinate_observations_follow_ragens_wording() -> None:
    env = SokobanEnv(observation_format="coord")
    assert env.load_room(COORD_ROOM) == COORD_TEXT
    obs, *_ = env.step(LEFT)
    assert obs == COORD_TEXT.replace("Player on target: (1, 2)", "Player: (1, 1)")
    both = SokobanEnv(observation_format="grid_coord")
    assert both.load_room(COORD_ROOM) == f"Coordinates: \n{COORD_TEXT}\nGrid Map: \n{COORD_ROOM}"
    assert SokobanEnv().load_room(COORD_ROOM) == COORD_ROOM


def test_coordinate_formats_keep_the_level_and_the_picture() -> None:
    grid_env = SokobanEnv(render_mode="rgb_array")
    coord_env = SokobanEnv(render_mode="rgb_array", observation_format="coord")
    grid_obs, _ = grid_env.reset(seed=3)
    coord_obs, _ = coord_env.reset(seed=3)
    assert coord_obs.startswith("Board size: 6 rows x 6 cols") and coord_env.room == grid_env.room
    assert np.array_equal(coord_env.render(), grid_env.render())
    assert "zero-indexed (row, column)" in coord_env.instructions and "zero-indexed" not in grid_env.instructions
    with pytest.raises(ValueError, match=r"observation_format='ascii' is invalid; allowed: \['grid'"):
        SokobanEnv(observation_format="ascii")
