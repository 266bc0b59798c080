"""FrozenLake on a random map (RAGEN's defaults), with gymnasium's slip rule.

Map: `size` x `size`, each cell frozen with probability `p` (else a hole), start and goal two distinct
random cells, and a path of frozen cells from start to goal guaranteed (checked by BFS; a map without
one is redrawn from the same generator, so the level stays a function of the seed).

Actions 0 Left, 1 Down, 2 Right, 3 Up. A move goes in the intended direction with probability
`success_rate`, else in one of the two perpendicular ones, (1 - success_rate) / 2 each (gymnasium's
and RAGEN's `success_rate`); a move off the map stays put. `is_slippery` picks the default: 1/3 (each of
the three directions equally likely) when true, 1 (deterministic) when false; success_rate 1 never slips.
Reward 1 on reaching the goal, else 0; the episode ends in a hole or on the goal, and is truncated
after `max_steps` steps.

Text legend: `P` player, `_` frozen, `O` hole, `G` goal, `X` player in a hole, `√` player on the goal.
`observation_format` "coord" lists zero-indexed coordinates of start, goal, player and holes instead
(RAGEN's CoordFrozenLake), "grid_coord" both (see `envs.observation_formats`).
"""

from __future__ import annotations

from collections import deque
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np

from envs.base import MAX_OBSERVATION_LENGTH, TextEnv
from envs.observation_formats import check_observation_format, compose_observation, coordinate_text
from envs.rendering import Tile, draw_grid, grid_from_text

LEFT, DOWN, RIGHT, UP = range(4)
MOVES: dict[int, tuple[int, int]] = {LEFT: (0, -1), DOWN: (1, 0), RIGHT: (0, 1), UP: (-1, 0)}
MAX_MAP_ATTEMPTS = 10_000
MAX_SIZE = 63  # the map text, size * (size + 1) - 1 characters, must fit base.MAX_OBSERVATION_LENGTH
SLIPPERY_SUCCESS_RATE = 1 / 3
COORDINATE_NOTE = "\nCoordinates are zero-indexed (row, column) pairs: row 0 is the top row, column 0 the left."

Cell = tuple[int, int]

_ICE, _HOLE, _GOAL, _PLAYER = (200, 230, 250), (20, 40, 90), (60, 170, 80), (220, 50, 50)
_PALETTE = {
    "_": Tile(_ICE),
    "O": Tile(_ICE, (("circle", _HOLE),)),
    "G": Tile(_ICE, (("square", _GOAL),)),
    "P": Tile(_ICE, (("circle", _PLAYER),)),
    "X": Tile(_ICE, (("circle", _HOLE), ("cross", _PLAYER))),
    "√": Tile(_ICE, (("square", _GOAL), ("circle", _PLAYER))),
}


def goal_distances(frozen: np.ndarray, goal: Cell) -> dict[Cell, int]:
    """BFS from ``goal`` over 4-neighbour frozen cells: the fewest moves from each cell that can reach it."""
    size = frozen.shape[0]
    distances = {goal: 0}
    queue = deque([goal])
    while queue:
        row, col = queue.popleft()
        for d_row, d_col in MOVES.values():
            cell = (row + d_row, col + d_col)
            if 0 <= cell[0] < size and 0 <= cell[1] < size and frozen[cell] and cell not in distances:
                distances[cell] = distances[(row, col)] + 1
                queue.append(cell)
    return distances


def has_path(frozen: np.ndarray, start: Cell, goal: Cell) -> bool:
    """Can ``goal`` be reached from ``start`` over frozen cells?"""
    return start in goal_distances(frozen, goal)


def shortest_path_moves(frozen: np.ndarray, cell: Cell, goal: Cell) -> list[int]:
    """The actions that start a shortest frozen path from ``cell`` to ``goal`` without slipping (each
    moves onto a frozen cell one move closer to the goal); empty when the goal is unreachable or reached."""
    distances = goal_distances(frozen, goal)
    if cell not in distances or cell == goal:
        return []
    return [action for action, (d_row, d_col) in MOVES.items()
            if distances.get((cell[0] + d_row, cell[1] + d_col)) == distances[cell] - 1]


def generate_map(size: int, p: float, rng: np.random.Generator) -> tuple[np.ndarray, Cell, Cell]:
    """(frozen [size, size] bool, start, goal) with a frozen path from start to goal, drawn from `rng`."""
    for _ in range(MAX_MAP_ATTEMPTS):
        frozen = rng.random((size, size)) < p
        start_index, goal_index = rng.choice(size * size, size=2, replace=False)
        start, goal = divmod(int(start_index), size), divmod(int(goal_index), size)
        frozen[start] = frozen[goal] = True
        if has_path(frozen, start, goal):
            return frozen, start, goal
    raise RuntimeError(
        f"no FrozenLake map with a path from start to goal in {MAX_MAP_ATTEMPTS} attempts for size={size}, "
        f"p={p}; use a larger p"
    )


class FrozenLakeEnv(TextEnv):
    """Random-map FrozenLake with text observations; see the module docstring."""

    palette: ClassVar[dict[str, Tile]] = _PALETTE
    board_legend: ClassVar[dict[str, str]] = {"_": "ice", "O": "hole", "G": "goal", "P": "player",
                                              "X": "player in a hole", "√": "player on the goal"}

    def __init__(
        self,
        size: int = 4,
        p: float = 0.8,
        is_slippery: bool = True,
        max_steps: int = 100,
        success_rate: float | None = None,
        observation_format: str = "grid",
        render_mode: str | None = None,
    ) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or not 2 <= size <= MAX_SIZE:
            raise ValueError(f"size={size!r} is invalid; allowed: an int in [2, {MAX_SIZE}]")
        if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p={p!r} is invalid; allowed: a probability in [0, 1]")
        if not isinstance(is_slippery, bool):
            raise ValueError(f"is_slippery={is_slippery!r} is invalid; allowed: True or False")
        if not isinstance(max_steps, int) or isinstance(max_steps, bool) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r} is invalid; allowed: an int >= 1")
        self.success_rate = _checked_success_rate(success_rate, is_slippery)
        self.observation_format = check_observation_format(observation_format)
        longest = _longest_observation(size, self.observation_format)
        if longest > MAX_OBSERVATION_LENGTH:
            raise ValueError(
                f"size={size} is too large for observation_format={observation_format!r}: its text can reach "
                f"{longest} characters; allowed: at most {MAX_OBSERVATION_LENGTH} (use a smaller size)"
            )
        super().__init__(action_names=("Left", "Down", "Right", "Up"), render_mode=render_mode)
        self.size, self.p, self.is_slippery, self.max_steps = size, float(p), is_slippery, max_steps
        self.frozen = np.ones((size, size), dtype=bool)
        self.start: Cell = (0, 0)
        self.goal: Cell = (size - 1, size - 1)
        self.player: Cell = self.start
        self.num_steps = 0

    @property
    def instructions(self) -> str:
        slip = ""
        if self.success_rate < 1:
            slip = (
                "The ice is slippery: each move goes in the direction you chose only "
                f"{_probability_text(self.success_rate)} of the time; otherwise you slide to one of the two "
                f"perpendicular directions ({_probability_text((1 - self.success_rate) / 2)} each).\n"
            )
        return (
            "You are walking on a frozen lake. Reach the goal G without falling into a hole O.\n"
            f"{slip}"
            "Moving off the edge of the map leaves you where you are. Reaching the goal gives reward 1; "
            "the game ends when you reach the goal or fall into a hole.\n"
            "Legend: P you, _ frozen ice, O hole, G goal, X you in a hole, √ you on the goal.\n"
            f"Valid actions: {', '.join(self.action_names)}."
            + ("" if self.observation_format == "grid" else COORDINATE_NOTE)
        )

    @property
    def in_terminal_cell(self) -> bool:
        """The player is in a hole or on the goal."""
        return self.player == self.goal or not self.frozen[self.player]

    def _new_episode(self, rng: np.random.Generator) -> None:
        self.frozen, self.start, self.goal = generate_map(self.size, self.p, rng)
        self.player = self.start
        self.num_steps = 0

    def step(self, action: int) -> tuple[str, float, bool, bool, dict[str, Any]]:
        """Move (possibly slipping); an invalid action leaves the state as is but still uses a step."""
        if self.in_terminal_cell or self.num_steps >= self.max_steps:
            raise RuntimeError("the FrozenLake episode is over; call reset()")
        self.num_steps += 1
        valid = self.is_valid_action(action)
        before = self.player
        if valid:
            direction = int(action)
            if self.success_rate < 1:
                direction = (direction + self._slip_offset()) % 4
            d_row, d_col = MOVES[direction]
            row, col = before[0] + d_row, before[1] + d_col
            if 0 <= row < self.size and 0 <= col < self.size:
                self.player = (row, col)
        success = self.player == self.goal
        terminated = self.in_terminal_cell
        truncated = not terminated and self.num_steps >= self.max_steps
        info = self._info(success=success, action_is_valid=valid, action_is_effective=self.player != before)
        return self._render_text(), float(success), terminated, truncated, info

    def _slip_offset(self) -> int:
        """0 (the intended direction) with probability success_rate, else -1 or +1 (a perpendicular one)."""
        if self.success_rate == SLIPPERY_SUCCESS_RATE:  # uniform: the draw of earlier versions, so seeded runs repeat
            return int(self.outcome_rng.integers(-1, 2))
        draw = self.outcome_rng.random()
        if draw < self.success_rate:
            return 0
        return -1 if draw < self.success_rate + (1 - self.success_rate) / 2 else 1

    def _render_grid(self) -> str:
        rows = []
        for row in range(self.size):
            line = []
            for col in range(self.size):
                cell = (row, col)
                if cell == self.player:
                    line.append("√" if cell == self.goal else "P" if self.frozen[cell] else "X")
                else:
                    line.append("G" if cell == self.goal else "_" if self.frozen[cell] else "O")
            rows.append("".join(line))
        return "\n".join(rows)

    def _render_coordinates(self) -> str:
        player = "Player on goal" if self.player == self.goal else "Player" if self.frozen[self.player] else "Player in hole"
        holes = [(int(row), int(col)) for row, col in np.argwhere(~self.frozen)]
        entries = [("Start", [self.start]), ("Goal", [self.goal]), (player, [self.player]), ("Holes", holes)]
        return coordinate_text((self.size, self.size), entries)

    def _render_text(self) -> str:
        coordinates = "" if self.observation_format == "grid" else self._render_coordinates()
        return compose_observation(self.observation_format, self._render_grid(), coordinates)

    def _render_rgb(self) -> np.ndarray:
        return draw_grid(grid_from_text(self._render_grid()), _PALETTE)


def _checked_success_rate(success_rate: object, is_slippery: bool) -> float:
    """The probability of the intended move: 1/3 if slippery, else 1, unless given (a number in [0, 1])."""
    if success_rate is None:
        return SLIPPERY_SUCCESS_RATE if is_slippery else 1.0
    if not isinstance(success_rate, (int, float)) or isinstance(success_rate, bool) or not 0 <= success_rate <= 1:
        raise ValueError(f"success_rate={success_rate!r} is invalid; allowed: None or a probability in [0, 1]")
    if not is_slippery and success_rate != 1:
        raise ValueError(
            f"success_rate={success_rate!r} contradicts is_slippery=False; allowed: None or 1 when is_slippery "
            "is false (or set is_slippery=True)"
        )
    return float(success_rate)


def _probability_text(probability: float) -> str:
    """A probability as a small fraction ("1/3") when it is one, else in %g form."""
    fraction = Fraction(probability).limit_denominator(12)
    return f"{fraction}" if abs(float(fraction) - probability) < 1e-9 else f"{probability:g}"


def _longest_observation(size: int, observation_format: str) -> int:
    """An upper bound on the observation length: every cell but start and goal a hole, the player in one."""
    cells = [(row, col) for row in range(size) for col in range(size)]
    coordinates = coordinate_text((size, size), [("Start", cells[:1]), ("Goal", cells[1:2]),
                                                 ("Player in hole", cells[2:3]), ("Holes", cells[2:])])
    return len(compose_observation(observation_format, "_" * (size * (size + 1) - 1), coordinates))
