"""The episode page of ``scripts/render_episode.py`` in a real headless browser (Debian's chromium):
its DOM holds the token view (one span per token, the log-prob and advantage in the hover title) and the
board legend, and its screenshot shows the token colours and the board's tiles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agents.config import AgentProxyConfig
from agents.replay import replay

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

import render_episode  # noqa: E402
from render_episode import Token  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed and .ci/run could not "
                                "install it (apt-get install chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars"]
WALL = (90, 70, 60)  # envs.sokoban.PALETTE["#"]


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))


def chromium(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *arguments],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """Sokoban level 7, two turns (the first with a format error); hand-made tokens with known numbers."""
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "obs 1"},
                {"role": "assistant", "content": "<think>go</think><answer>Up || Jump</answer>"},
                {"role": "user", "content": "obs 2"},
                {"role": "assistant", "content": "<think>more</think><answer>Left</answer>"}]
    episode = replay("sokoban", {}, 7, 0, messages, AgentProxyConfig(max_actions_per_turn=5), 10, -0.1, render=True)
    tokens = [[Token("<think>", 0, None, 0.0), Token("go", 1, -0.5, 0.7), Token("</think>", 1, -1.25, 0.7)],
              [Token("<think>", 0, None, 0.0), Token("more", 1, -2.0, 0.7)]]
    path = tmp_path_factory.mktemp("page") / "episode.html"
    path.write_text(render_episode.html_page("sokoban seed 7", "test page", "sokoban", episode.first_frame,
                                             episode.turns, tokens))
    return path


def test_dom_holds_the_token_view_and_the_legend(page, tmp_path):
    result = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout
    assert dom.count('class="tok gen"') == 3 + 1 and dom.count('class="tok ctx"') == 2 + 1  # + the legend
    assert "log-prob -0.500 | advantage +0.700" in dom and "log-prob -2.000 | advantage +0.700" in dom
    assert dom.count("<h3>Turn ") == 2 and "format error, penalty -0.1" in dom
    for meaning in ("wall", "floor", "target", "box on target", "player on target"):
        assert f"{meaning}</span>" in dom


def test_screenshot_shows_token_colours_and_board_tiles(page, tmp_path):
    shot = tmp_path / "page.png"
    result = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1100,1400", page.as_uri())
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    seen = {tuple(c): n for c, n in zip(colours.tolist(), counts.tolist(), strict=True)}
    assert len(seen) > 50  # not blank: text, pictures, colours
    assert seen.get(hex_rgb(render_episode.GENERATED_COLOUR), 0) > 200  # generated-token spans
    assert seen.get(hex_rgb(render_episode.CONTEXT_COLOUR), 0) > 200  # prompt-token spans
    assert seen.get(WALL, 0) > 1000  # wall tiles of the legend and the boards
