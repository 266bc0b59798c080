"""Console lines and progress bars that keep a run's output clean and reach its ``train.log``.

- :func:`say`: a line on stdout written through tqdm (an open bar is cleared first and redrawn after,
  so no line is glued to a bar) and, at INFO on the ``turnrl`` logger, into the run's ``train.log``
  (``conf/config.yaml`` gives that logger Hydra's file handler only; outside Hydra it has no handler).
- :func:`note`: the log file only (e.g. per-step numbers that a bar already shows).
- :func:`bar`: a tqdm bar on stderr, off when stderr is not a terminal (no carriage returns or cursor
  escapes in redirected output).
"""

from __future__ import annotations

import logging
import sys

from tqdm.auto import tqdm

LOGGER = logging.getLogger("turnrl")


def say(message: str) -> None:
    tqdm.write(message, file=sys.stdout)
    LOGGER.info(message)


def note(message: str) -> None:
    LOGGER.info(message)


def bar(total: int | None, description: str, unit: str, enabled: bool = True, initial: int = 0) -> tqdm:
    return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True, leave=False,
                disable=not (enabled and sys.stderr.isatty()))
