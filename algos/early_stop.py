"""RAGEN's early stop on reward-variance collapse: a pure predicate over the per-step in-group reward std.

When every group's rollouts earn the same reward, group-relative advantages vanish and training stalls.
RAGEN stops a run once the in-group reward std (``rollout/in_group_std``) has stayed below a fraction of
its early level for a whole window of steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def reward_variance_collapsed(
    history: Sequence[float], *, baseline_steps: int = 10, window: int = 10, ratio: float = 0.1
) -> bool:
    """True when the last ``window`` values of ``history`` are all below ``ratio * baseline``.

    ``history`` holds ``rollout/in_group_std`` of each training step, oldest first. The baseline is the
    mean of the first ``baseline_steps`` values; the window only looks at steps after them, so nothing
    stops before ``baseline_steps + window`` steps. A zero baseline never triggers (nothing to collapse from).
    """
    if baseline_steps < 1 or window < 1:
        raise ValueError(f"baseline_steps={baseline_steps} and window={window} are invalid; allowed: ints >= 1")
    if not 0 < ratio <= 1:
        raise ValueError(f"ratio={ratio!r} is invalid; allowed: a number in (0, 1]")
    if any(not math.isfinite(value) for value in history):
        raise ValueError("history must hold finite numbers")
    if len(history) < baseline_steps + window:
        return False
    baseline = sum(history[:baseline_steps]) / baseline_steps
    return all(value < ratio * baseline for value in history[-window:])
