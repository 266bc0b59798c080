"""How the grid games show their state: the grid, RAGEN's coordinate list, or both (``observation_format``).

``coord`` follows RAGEN's CoordSokoban / CoordFrozenLake wording::

    Board size: 6 rows x 6 cols (zero-indexed).
    Targets: (2, 3)
    Boxes: (3, 3)
    Player: (4, 2)

one ``Label: (row, col), ...`` line per non-empty entry, cells in row-major order. ``grid_coord`` is
``"Coordinates: \\n" + coord + "\\nGrid Map: \\n" + grid`` (RAGEN's text, trailing spaces included).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

OBSERVATION_FORMATS = ("grid", "coord", "grid_coord")

Cell = tuple[int, int]


def check_observation_format(value: object) -> str:
    """``value`` if it is one of ``OBSERVATION_FORMATS``, else ``ValueError`` naming it."""
    if value not in OBSERVATION_FORMATS:
        raise ValueError(f"observation_format={value!r} is invalid; allowed: {list(OBSERVATION_FORMATS)}")
    return str(value)


def coordinate_text(shape: tuple[int, int], entries: Sequence[tuple[str, Iterable[Cell]]]) -> str:
    """The board size line, then ``Label: (r, c), ...`` for each entry with at least one cell (sorted)."""
    rows, cols = shape
    lines = [f"Board size: {rows} rows x {cols} cols (zero-indexed)."]
    for label, cells in entries:
        cells = sorted(cells)
        if cells:
            lines.append(f"{label}: " + ", ".join(f"({row}, {col})" for row, col in cells))
    return "\n".join(lines)


def compose_observation(observation_format: str, grid: str, coordinates: str) -> str:
    """The observation in ``observation_format`` from the grid text and the coordinate text."""
    if observation_format == "grid":
        return grid
    if observation_format == "coord":
        return coordinates
    return "Coordinates: \n" + coordinates + "\nGrid Map: \n" + grid
