"""Contracts every TurnRL env keeps: gymnasium's checker, action parsing, seeding, member streams, rendering."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import envs
from envs.base import TextEnv
from envs.rendering import Tile, draw_grid, grid_from_text, save_episode

REPO_ROOT = Path(__file__).resolve().parents[1]
SOKOBAN_EXISTS = importlib.util.find_spec("envs.sokoban") is not None
ENV_NAMES = [
    "bandit",
    "frozenlake",
    pytest.param("sokoban", marks=pytest.mark.skipif(not SOKOBAN_EXISTS, reason="envs/sokoban.py not written yet")),
]
DIRECTION_ENVS = ["frozenlake", ENV_NAMES[2]]

# sha256 of the initial observations for seeds 0..99 with default kwargs; see `initial_obs_digest`.
# A change here means every seeded level changed: only update it on purpose.
DIGESTS = {
    "bandit": "096a3100b4a2b7a5c7743e17e8f8b71896b52b732f40eac761f2c24cef134203",
    "frozenlake": "73317fca53631aad89504b3381ea0bc7fdcded6228dc665e921e281e716315ed",
    "sokoban": "312851adcfb93d069d909587468fb5188e762516f2814dceac090ccb5cfacde6",
}
# The same for each observation format and arm-name split (RAGEN's Coord* envs and BanditTest).
VARIANT_KWARGS = {
    "bandit/test": ("bandit", {"name_split": "test"}),
    "frozenlake/coord": ("frozenlake", {"observation_format": "coord"}),
    "frozenlake/grid_coord": ("frozenlake", {"observation_format": "grid_coord"}),
    "sokoban/coord": ("sokoban", {"observation_format": "coord"}),
    "sokoban/grid_coord": ("sokoban", {"observation_format": "grid_coord"}),
}
VARIANT_DIGESTS = {
    "bandit/test": "77318d5082401c1e75cab0575960801fa04eb09e9fcf03f0fc5c1d8d759b63ea",
    "frozenlake/coord": "5be845e646dbbd74a062bec1f6764e26c5509273049b319e6a122175b83fb657",
    "frozenlake/grid_coord": "a1380394266c57ebce28ea4247c3e3e70c7d9f349a5a85d13ad2a0fccc30578f",
    "sokoban/coord": "9d2e6df0adde011dd41cab5fd4ceb8214ec90db4b3ef622d303438e7021c8203",
    "sokoban/grid_coord": "3c66ab4c165cab8297dac56a22693fa06d3a64092405f6688e097f7d25f1167f",
}


def initial_obs_digest(name: str, **kwargs: object) -> str:
    """sha256 of the initial observations of seeds 0..99, joined by NUL characters."""
    env = envs.make(name, **kwargs)
    text = "\x00".join(env.reset(seed=seed)[0] for seed in range(100))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rollout(env: TextEnv, seed: int, member: int, num_steps: int = 10) -> list[tuple[str, float, bool, bool]]:
    """Observations and rewards of a fixed action sequence (last action first) from reset(seed, member)."""
    obs, _ = env.reset(seed=seed, options={"member": member})
    trajectory = [(obs, 0.0, False, False)]
    for step in range(num_steps):
        obs, reward, terminated, truncated, _ = env.step((env.action_space.n - 1 - step) % env.action_space.n)
        trajectory.append((obs, reward, terminated, truncated))
        if terminated or truncated:
            break
    return trajectory


@pytest.mark.parametrize("name", ENV_NAMES)
def test_registered_and_make_passes_kwargs(name: str) -> None:
    assert envs.ENV_IDS[name] in gym.registry
    env = envs.make(name, render_mode="ansi")
    assert isinstance(env, TextEnv) and env is env.unwrapped
    assert env.render_mode == "ansi"


def test_make_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="'chess'"):
        envs.make("chess")


@pytest.mark.parametrize("render_mode", [None, "ansi", "rgb_array"])
@pytest.mark.parametrize("name", ENV_NAMES)
def test_gymnasium_check_env_passes_without_warnings(name: str, render_mode: str | None) -> None:
    env = gym.make(envs.ENV_IDS[name], render_mode=render_mode).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_default_max_actions_per_traj(name: str) -> None:
    assert envs.make(name).default_max_actions_per_traj == (1 if name == "bandit" else 10)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_parse_action_accepts_names_in_any_dressing(name: str) -> None:
    env = envs.make(name)
    env.reset(seed=0)
    for action, action_name in enumerate(env.action_names):
        for text in (action_name, action_name.upper(), action_name.lower(), f"  **{action_name}**\n",
                     f"'{action_name}'", f"`{action_name}`", f"Action: {action_name}.", f"{action_name}!"):
            assert env.parse_action(text) == action, text


@pytest.mark.parametrize("name", DIRECTION_ENVS)
def test_parse_action_direction_aliases(name: str) -> None:
    env = envs.make(name)
    expected = {
        "north": "Up", "^": "Up", "↑": "Up", "u": "Up", "move up": "Up", "I will go up.": "Up",
        "<answer>up</answer>": "Up", "south": "Down", "v": "Down", "↓": "Down", "push down": "Down",
        "west": "Left", "<": "Left", "←": "Left", "L": "Left", "go to the left": "Left",
        "east": "Right", ">": "Right", "→": "Right", "**R**": "Right", "rightwards": "Right",
    }
    for text, action_name in expected.items():
        assert env.parse_action(text) == env.action_names.index(action_name), text
    for text in ("", "   ", "1", "0", "up down", "left or right", "jump", "don't know", "^^", "upp", "the"):
        assert env.parse_action(text) is None, text


@pytest.mark.parametrize("name", ENV_NAMES)
@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_parse_action_never_raises(name: str, text: str) -> None:
    env = envs.make(name)
    action = env.parse_action(text)
    assert action is None or 0 <= action < env.action_space.n


@pytest.mark.parametrize("name", ENV_NAMES)
def test_parse_action_non_strings_give_none(name: str) -> None:
    env = envs.make(name)
    for value in (None, 0, 1.5, b"Up", ["Up"], {"action": "Up"}):
        assert env.parse_action(value) is None


@pytest.mark.parametrize("name", ENV_NAMES)
def test_initial_observation_digest_is_pinned(name: str) -> None:
    assert initial_obs_digest(name) == DIGESTS[name]


@pytest.mark.parametrize("variant", sorted(VARIANT_KWARGS))
def test_initial_observation_digest_of_each_format_is_pinned(variant: str) -> None:
    name, kwargs = VARIANT_KWARGS[variant]
    assert initial_obs_digest(name, **kwargs) == VARIANT_DIGESTS[variant]


def test_initial_observation_digests_match_in_a_fresh_process() -> None:
    cases = {name: (name, {}) for name in DIGESTS} | VARIANT_KWARGS
    cases = {case: args for case, args in cases.items() if args[0] != "sokoban" or SOKOBAN_EXISTS}
    code = (
        "import hashlib, json, envs\n"
        + inspect.getsource(initial_obs_digest)
        + f"print(json.dumps({{case: initial_obs_digest(name, **kwargs) for case, (name, kwargs) in {cases!r}.items()}}))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {case: (DIGESTS | VARIANT_DIGESTS)[case] for case in cases}


@pytest.mark.parametrize("name", ENV_NAMES)
def test_same_seed_same_trajectory_and_different_seeds_differ(name: str) -> None:
    env = envs.make(name)
    assert rollout(env, seed=7, member=0) == rollout(env, seed=7, member=0)
    assert rollout(env, seed=7, member=0) == rollout(envs.make(name), seed=7, member=0)
    assert len({env.reset(seed=seed)[0] for seed in range(20)}) > 1


@pytest.mark.parametrize("name", ENV_NAMES)
def test_members_share_the_level_and_repeat_their_own_outcomes(name: str) -> None:
    env = envs.make(name)
    for seed in (0, 1, 2):
        levels = {env.reset(seed=seed, options={"member": member})[0] for member in range(8)}
        assert levels == {env.reset(seed=seed)[0]}
        for member in (0, 3):
            assert rollout(env, seed, member) == rollout(env, seed, member)
    assert env.reset(seed=5, options={"member": 0}) == env.reset(seed=5)


@pytest.mark.parametrize("name", ["bandit", "frozenlake"])
def test_members_get_different_outcomes_in_stochastic_envs(name: str) -> None:
    env = envs.make(name)
    assert len({tuple(rollout(env, seed=3, member=member)) for member in range(16)}) > 1


@pytest.mark.parametrize("name", ENV_NAMES)
def test_bad_reset_options_raise(name: str) -> None:
    env = envs.make(name)
    for options, bad in (({"member": -1}, "member=-1"), ({"member": "2"}, "member='2'"),
                         ({"member": True}, "member=True"), ({"level": 3}, "level")):
        with pytest.raises(ValueError, match=bad):
            env.reset(seed=0, options=options)


@pytest.mark.parametrize("name", ENV_NAMES)
def test_step_info_has_plain_bool_flags(name: str) -> None:
    env = envs.make(name)
    env.reset(seed=0)
    _, reward, terminated, truncated, info = env.step(0)
    assert isinstance(reward, float) and type(terminated) is bool and type(truncated) is bool
    for key in ("success", "action_is_valid", "action_is_effective"):
        assert type(info[key]) is bool
    assert info["action_is_valid"] is True


@pytest.mark.parametrize("name", ENV_NAMES)
def test_render_modes(name: str) -> None:
    text_env = envs.make(name, render_mode="ansi")
    obs, _ = text_env.reset(seed=0)
    assert text_env.render() == obs
    picture_env = envs.make(name, render_mode="rgb_array")
    picture_env.reset(seed=0)
    before = picture_env.render()
    assert isinstance(before, np.ndarray) and before.dtype == np.uint8 and before.ndim == 3 and before.shape[2] == 3
    picture_env.step(0)
    assert picture_env.render().shape == before.shape
    with pytest.raises(ValueError, match="render_mode='text'"):
        type(text_env)(render_mode="text")


def test_draw_grid_paints_tiles_and_rejects_unknown_symbols() -> None:
    palette = {".": Tile((255, 255, 255)), "#": Tile((0, 0, 0), (("circle", (255, 0, 0)),))}
    picture = draw_grid(grid_from_text("#.\n.."), palette, tile_size=8)
    assert picture.shape == (16, 16, 3) and picture.dtype == np.uint8
    assert tuple(picture[4, 4]) == (255, 0, 0)  # centre of the "#" tile: the circle
    assert tuple(picture[0, 0]) == (0, 0, 0)  # corner of the "#" tile: its background
    assert tuple(picture[4, 12]) == (255, 255, 255)  # centre of a "." tile
    with pytest.raises(ValueError, match="'@'"):
        draw_grid([["@"]], palette)
    with pytest.raises(ValueError, match="equal lengths"):
        grid_from_text("##\n#")


def test_save_episode_writes_png_strip_and_gif(tmp_path: Path) -> None:
    frames = [np.full((10, 20, 3), value, dtype=np.uint8) for value in (0, 128, 255)]
    png = save_episode(frames, tmp_path / "episode.png")
    with Image.open(png) as image:
        assert image.size == (60, 10)
    gif = save_episode(frames, tmp_path / "episode.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 3 and image.size == (20, 10)
    with pytest.raises(ValueError, match="'.jpg'"):
        save_episode(frames, tmp_path / "episode.jpg")
    with pytest.raises(ValueError, match="frames is empty"):
        save_episode([], tmp_path / "episode.png")
    with pytest.raises(ValueError, match=r"frames\[0\]"):
        save_episode([np.zeros((4, 4), dtype=np.uint8)], tmp_path / "episode.png")


@pytest.mark.parametrize("variant", sorted(VARIANT_KWARGS))
def test_format_variants_pass_check_env_and_draw_the_default_picture(variant: str) -> None:
    name, kwargs = VARIANT_KWARGS[variant]
    if name == "sokoban" and not SOKOBAN_EXISTS:
        pytest.skip("envs/sokoban.py not written yet")
    env = envs.make(name, render_mode="rgb_array", **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
    default = envs.make(name, render_mode="rgb_array")
    env.reset(seed=0)
    default.reset(seed=0)
    assert np.array_equal(env.render(), default.render())  # same level, same picture: only the text differs
    text_env = envs.make(name, render_mode="ansi", **kwargs)
    obs, _ = text_env.reset(seed=0)
    assert text_env.render() == obs
