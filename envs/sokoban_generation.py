"""Procedural Sokoban rooms, made the way gym-sokoban makes them, but exact and fast.

1. Topology: a random walk inside the outer wall stamps small floor patches (a bar, an L, a 2x2 block)
   around each position it visits.
2. Placement: the player and `num_boxes` targets on distinct random floor cells; boxes start on the
   targets (the solved state).
3. Reverse play: the player walks and *pulls* boxes away from the targets. Walking never changes
   which pulls are possible, so a state is (box cells, the floor region the player can reach), and a
   breadth-first search over those states visits every state reachable with at most `search_depth`
   pulls. Each state is scored `box_switches * displacement` (gym-sokoban's score): `displacement` is
   the summed Manhattan distance of every box from its own target, `box_switches` counts how often
   the pulled box changed along the search path (the first pull counts 1). The best state with every
   box and the player off the targets wins (ties: the one found last, i.e. needing the most pulls);
   the player stands where it ended the last pull.
4. A few random player steps (without revisiting a cell) so the player is not always next to a box.

Every room is therefore solvable (replay the pulls as pushes) and not solved. A topology whose
targets admit no such state is thrown away and the next attempt draws a new one from the same
generator, so the result depends only on the generator's state.

Cells are flat indices `row * width + col`; sets of cells are int bitmasks in the hot loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

P_CHANGE_DIRECTION = 0.35
MAX_REVERSE_STATES = 100_000  # bounds time and memory of the reverse search besides search_depth
# Random player steps at the end: taken with P_MOVE (P_MOVE_SHORT when the boxes moved one cell in all),
# up to MAX_RANDOM_STEPS, each further step with probability P_CONTINUE.
P_MOVE, P_MOVE_SHORT, P_CONTINUE, MAX_RANDOM_STEPS = 0.5, 0.8, 0.5, 3
# Floor patches stamped around each walk position, as (row, col) offsets.
STAMPS: tuple[tuple[tuple[int, int], ...], ...] = (
    ((0, -1), (0, 0), (0, 1)),
    ((-1, 0), (0, 0), (1, 0)),
    ((0, -1), (0, 0), (1, 0)),
    ((0, -1), (0, 0), (1, -1), (1, 0)),
    ((0, 0), (0, 1), (1, 0)),
)


@dataclass(frozen=True)
class Room:
    """A Sokoban room on a `height` x `width` grid; cells are flat indices `row * width + col`.

    `floor` holds every walkable cell (targets included); all other cells are walls. `boxes[k]` and
    `targets[k]` are cells; a box on a target counts as solved whichever target it is.
    """

    height: int
    width: int
    floor: frozenset[int]
    targets: tuple[int, ...]
    boxes: tuple[int, ...]
    player: int


@dataclass(frozen=True)
class Geometry:
    """Tables of one grid size, shared by every room of that size (see `geometry`)."""

    height: int
    width: int
    deltas: tuple[int, int, int, int]  # index change of Up, Down, Left, Right
    interior: tuple[int, ...]  # cells not on the outer wall
    walk_next: tuple[tuple[int, ...], ...]  # walk_next[cell][direction]: next walk cell, kept in the interior
    stamps: tuple[tuple[int, ...], ...]  # stamps[cell][s]: bitmask of STAMPS[s] around cell, interior only
    distance: tuple[tuple[int, ...], ...]  # Manhattan distance between two cells


@lru_cache(maxsize=32)
def geometry(height: int, width: int) -> Geometry:
    """The (cached) tables of a `height` x `width` grid."""
    size = height * width
    inside = [1 <= cell // width <= height - 2 and 1 <= cell % width <= width - 2 for cell in range(size)]
    steps = ((-1, 0), (1, 0), (0, -1), (0, 1))

    def clamp(row: int, col: int) -> int:
        return min(max(row, 1), height - 2) * width + min(max(col, 1), width - 2)

    def stamp_mask(cell: int, offsets: tuple[tuple[int, int], ...]) -> int:
        row, col = divmod(cell, width)
        mask = 0
        for d_row, d_col in offsets:
            r, c = row + d_row, col + d_col
            if 0 <= r < height and 0 <= c < width and inside[r * width + c]:
                mask |= 1 << (r * width + c)
        return mask

    return Geometry(
        height=height,
        width=width,
        deltas=(-width, width, -1, 1),
        interior=tuple(cell for cell in range(size) if inside[cell]),
        walk_next=tuple(
            tuple(clamp(cell // width + d_row, cell % width + d_col) for d_row, d_col in steps) for cell in range(size)
        ),
        stamps=tuple(tuple(stamp_mask(cell, offsets) for offsets in STAMPS) for cell in range(size)),
        distance=tuple(
            tuple(abs(a // width - b // width) + abs(a % width - b % width) for b in range(size)) for a in range(size)
        ),
    )


def reachable(start: int, free: int, width: int) -> int:
    """Bitmask of the cells of `free` connected to bitmask `start` by Up/Down/Left/Right steps.

    `free` must not touch the outer wall (so shifting by one column never wraps onto a free cell).
    """
    region = start & free
    while True:
        grown = (region | region << 1 | region >> 1 | region << width | region >> width) & free
        if grown == region:
            return region
        region = grown


def bits(mask: int) -> list[int]:
    """The set cells of a bitmask, ascending."""
    cells = []
    while mask:
        low = mask & -mask
        cells.append(low.bit_length() - 1)
        mask ^= low
    return cells


def generate_room(
    rng: np.random.Generator,
    dim_room: tuple[int, int],
    num_boxes: int,
    num_gen_steps: int,
    search_depth: int,
    max_attempts: int,
) -> Room:
    """A solvable, unsolved room drawn from `rng` (see the module docstring for the procedure).

    Raises RuntimeError when `max_attempts` topologies in a row admit no such room.
    """
    height, width = dim_room
    geo = geometry(height, width)
    draws_per_attempt = 3 * num_gen_steps + num_boxes + 4 + 2 * MAX_RANDOM_STEPS
    for _ in range(max_attempts):
        uniforms = iter(rng.random(draws_per_attempt).tolist())
        floor = _random_floor(geo, num_gen_steps, uniforms)
        cells = bits(floor)
        if len(cells) < num_boxes + 2:
            continue
        floor_cells = frozenset(cells)
        player = cells.pop(int(next(uniforms) * len(cells)))
        targets = tuple(cells.pop(int(next(uniforms) * len(cells))) for _ in range(num_boxes))
        found = _farthest_reverse_state(geo, floor, targets, player, search_depth)
        if found is None:
            continue
        boxes, player, region, displacement = found
        p_move = P_MOVE_SHORT if displacement == 1 else P_MOVE
        if next(uniforms) < p_move:
            player = _random_steps(geo, player, region, uniforms)
        return Room(height, width, floor_cells, targets, boxes, player)
    raise RuntimeError(
        f"could not generate a Sokoban room with dim_room={dim_room}, num_boxes={num_boxes} in "
        f"{max_attempts} attempts (every topology left no room to pull the boxes off their targets); "
        "use a larger dim_room, fewer boxes or more num_gen_steps"
    )


def _random_floor(geo: Geometry, num_steps: int, uniforms: Iterator[float]) -> int:
    """Bitmask of the floor carved by a random walk of `num_steps` steps (3 uniforms per step + 2)."""
    position = geo.interior[int(next(uniforms) * len(geo.interior))]
    direction = int(next(uniforms) * 4)
    num_stamps = len(STAMPS)
    floor = 0
    for _ in range(num_steps):
        change, new_direction, stamp = next(uniforms), next(uniforms), next(uniforms)
        if change < P_CHANGE_DIRECTION:
            direction = int(new_direction * 4)
        position = geo.walk_next[position][direction]
        floor |= geo.stamps[position][int(stamp * num_stamps)]
    return floor


def _farthest_reverse_state(
    geo: Geometry, floor: int, targets: tuple[int, ...], player: int, search_depth: int
) -> tuple[tuple[int, ...], int, int, int] | None:
    """Breadth-first reverse play from the solved state; the best-scoring unsolved state, or None.

    Returns (boxes, player cell, player region bitmask, displacement).
    """
    width, deltas, distance = geo.width, geo.deltas, geo.distance
    target_mask = 0
    for target in targets:
        target_mask |= 1 << target
    # A state: (boxes, bitmask of boxes, player region, index of the last pulled box, box switches).
    level = [(targets, target_mask, reachable(1 << player, floor & ~target_mask, width), -1, 0)]
    regions_seen: dict[tuple[int, ...], list[int]] = {targets: [level[0][2]]}
    num_states = 1
    best, best_score = None, 1
    for _ in range(search_depth):
        next_level = []
        for boxes, box_mask, region, last_pulled, switches in level:
            free = floor & ~box_mask
            for k, box in enumerate(boxes):
                for delta in deltas:
                    # The player stands at box + delta and steps to box + 2 * delta, pulling the box along.
                    new_box = box + delta
                    new_player = new_box + delta
                    if not (region >> new_box & 1 and free >> new_player & 1):
                        continue
                    new_boxes = (*boxes[:k], new_box, *boxes[k + 1 :])
                    seen = regions_seen.setdefault(new_boxes, [])
                    if any(known >> new_player & 1 for known in seen):
                        continue
                    new_free = free ^ (1 << box) ^ (1 << new_box)
                    new_region = reachable(1 << new_player, new_free, width)
                    seen.append(new_region)
                    new_switches = switches + (k != last_pulled)
                    new_box_mask = box_mask ^ (1 << box) ^ (1 << new_box)
                    next_level.append((new_boxes, new_box_mask, new_region, k, new_switches))
                    num_states += 1
                    if new_box_mask & target_mask or target_mask >> new_player & 1:
                        continue
                    displacement = sum(distance[b][t] for b, t in zip(new_boxes, targets, strict=True))
                    score = new_switches * displacement
                    if score >= best_score:
                        best, best_score = (new_boxes, new_player, new_region, displacement), score
        if not next_level or num_states >= MAX_REVERSE_STATES:
            break
        level = next_level
    return best


def _random_steps(geo: Geometry, player: int, region: int, uniforms: Iterator[float]) -> int:
    """Walk the player up to MAX_RANDOM_STEPS steps inside `region`, never back onto a visited cell."""
    visited = 1 << player
    for _ in range(MAX_RANDOM_STEPS):
        options = [player + delta for delta in geo.deltas if (region & ~visited) >> (player + delta) & 1]
        if not options:
            break
        player = options[int(next(uniforms) * len(options))]
        visited |= 1 << player
        if next(uniforms) >= P_CONTINUE:
            break
    return player
