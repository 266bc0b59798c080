"""One recorded rollout replayed at every step: benchmarks that compare update variants on the same batch.

The batch is saved as its fields (tensors and plain types), so it loads weights-only: no file read here
can run code.
"""

from __future__ import annotations

from pathlib import Path

import torch

from agents.rollout import RolloutBatch


def save_batch(batch: RolloutBatch, path: Path) -> None:
    torch.save(vars(batch), path)


def load_batch(path: Path) -> RolloutBatch:
    return RolloutBatch(**torch.load(path, weights_only=True))


class FixedRollout:
    """A rollout engine whose every rollout is ``batch``; weight pushes are no-ops."""

    def __init__(self, batch: RolloutBatch) -> None:
        self.batch, self.backend = batch, self

    def update_weights(self, model: torch.nn.Module) -> None:
        pass

    def rollout(self, step: int, params: object, *args: object, **kwargs: object) -> RolloutBatch:
        return self.batch
