"""Numpy-only pictures of grid games, and writing an episode's frames as PNG or GIF.

A grid is a 2D array of one-character symbols (the env's text rendering, see `grid_from_text`); a
`palette` maps each symbol to a `Tile`: a background colour with shapes drawn on top of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np

RGB = tuple[int, int, int]
SHAPES = ("square", "circle", "ring", "diamond", "cross")
GRID_LINE: RGB = (40, 40, 40)


class Tile(NamedTuple):
    """How one symbol is drawn: `background`, then each (shape, colour) of `layers` in order."""

    background: RGB
    layers: tuple[tuple[str, RGB], ...] = ()


@lru_cache(maxsize=64)
def _shape_mask(shape: str, tile_size: int) -> np.ndarray:
    """Boolean [tile_size, tile_size] mask of `shape`, centred, in coordinates scaled to [-1, 1]."""
    centre = (tile_size - 1) / 2
    y, x = (np.mgrid[0:tile_size, 0:tile_size] - centre) / (tile_size / 2)
    radius_sq = x**2 + y**2
    masks = {
        "square": (np.abs(x) <= 0.6) & (np.abs(y) <= 0.6),
        "circle": radius_sq <= 0.6**2,
        "ring": (radius_sq >= 0.45**2) & (radius_sq <= 0.7**2),
        "diamond": np.abs(x) + np.abs(y) <= 0.7,
        "cross": ((np.abs(x - y) <= 0.2) | (np.abs(x + y) <= 0.2)) & (np.maximum(np.abs(x), np.abs(y)) <= 0.7),
    }
    if shape not in masks:
        raise ValueError(f"shape={shape!r} is unknown; allowed: {list(SHAPES)}")
    return masks[shape]


def grid_from_text(text: str) -> np.ndarray:
    """The text rendering of a grid (one row per line, equal widths) as a 2D array of symbols."""
    rows = text.split("\n")
    if len({len(row) for row in rows}) != 1:
        raise ValueError(f"grid text rows must have equal lengths, got {[len(row) for row in rows]}")
    return np.array([list(row) for row in rows], dtype="<U1")


def draw_grid(symbols: np.ndarray | Sequence[Sequence[str]], palette: Mapping[str, Tile], tile_size: int = 32) -> np.ndarray:
    """Draw `symbols` [H, W] as an [H*tile_size, W*tile_size, 3] uint8 picture with 1-pixel grid lines."""
    if tile_size < 4:
        raise ValueError(f"tile_size={tile_size} is too small; allowed: >= 4")
    grid = np.asarray(symbols)
    if grid.ndim != 2 or grid.size == 0:
        raise ValueError(f"symbols must be a non-empty 2D grid, got shape {grid.shape}")
    unknown = sorted(set(grid.ravel().tolist()) - set(palette))
    if unknown:
        raise ValueError(f"symbols {unknown} have no tile; allowed: {sorted(palette)}")
    tiles = {symbol: _draw_tile(tile, tile_size) for symbol, tile in palette.items()}
    rows = [np.concatenate([tiles[symbol] for symbol in row], axis=1) for row in grid.tolist()]
    return np.concatenate(rows, axis=0)


def _draw_tile(tile: Tile, tile_size: int) -> np.ndarray:
    picture = np.empty((tile_size, tile_size, 3), dtype=np.uint8)
    picture[:] = tile.background
    for shape, colour in tile.layers:
        picture[_shape_mask(shape, tile_size)] = colour
    picture[-1, :] = GRID_LINE
    picture[:, -1] = GRID_LINE
    return picture


def save_episode(frames: Sequence[np.ndarray], path: str | Path, frame_duration_ms: int = 400) -> Path:
    """Write `frames` (each HxWx3 uint8) to `path`: `.png` = the frames side by side, `.gif` = an animation.

    Smaller frames are padded with white at the bottom and right. Returns the path written.
    """
    from PIL import Image

    path = Path(path)
    if not frames:
        raise ValueError("frames is empty; allowed: at least one HxWx3 uint8 frame")
    for index, frame in enumerate(frames):
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            raise ValueError(f"frames[{index}] must be an HxWx3 uint8 array, got {getattr(frame, 'shape', type(frame))}")
    height, width = (max(frame.shape[axis] for frame in frames) for axis in (0, 1))
    padded = [
        np.pad(f, ((0, height - f.shape[0]), (0, width - f.shape[1]), (0, 0)), constant_values=255) for f in frames
    ]
    suffix = path.suffix.lower()
    if suffix == ".png":
        Image.fromarray(np.concatenate(padded, axis=1)).save(path)
    elif suffix == ".gif":
        images = [Image.fromarray(frame) for frame in padded]
        images[0].save(path, save_all=True, append_images=images[1:], duration=frame_duration_ms, loop=0)
    else:
        raise ValueError(f"path suffix {path.suffix!r} is not supported; allowed: '.png', '.gif'")
    return path
