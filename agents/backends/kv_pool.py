"""Per-sequence KV caches kept between ``generate`` calls, matched to the next prompts by token prefix.

A multi-turn episode's next prompt is its previous prompt, the reply, and the env's next message, so
the previous call's keys and values are a prefix of what the next call needs. After each call the
pool keeps, per row, the tokens whose keys and values are in the cache (prompt + reply, less the
reply's last token where it was never fed) and those keys/values. On the next call a prompt reuses
the longest kept sequence that is a prefix of it; only the rest is computed.

Matching is by content, so the caller (the rollout engine) passes plain token lists and needs no
episode ids: a prompt that does not extend a kept sequence (a new episode, a re-prefilled row) simply
matches nothing. Entries live until the next call: the ones that call does not reuse (finished
episodes) are freed when it starts, and ``clear`` frees all (end of a rollout, new weights).

Rows of one batch cache different lengths; ``batched_cache`` lays them out right-aligned at width
``max(cached)`` with zero keys/values in the left padding (masked, so never attended to)::

    row b: [pad x (C - c_b) | cached_b (c_b) | pad x (N - n_b) | new_b (n_b)]    C = max c_b, N = max n_b

Position ids from ``attention_mask.cumsum - 1`` then number every real token as one unpadded sequence
would, which is what ``generate`` computes from the mask.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

GIB = 2**30
logger = logging.getLogger(__name__)


@dataclass
class CachedSequence:
    """``tokens`` and their keys/values, one ``(key, value)`` ``[heads, len(tokens), head_dim]`` per layer."""

    tokens: tuple[int, ...]
    layers: list[tuple[torch.Tensor, torch.Tensor]]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


class KVPool:
    """The kept sequences of the last ``generate`` call, at most ``cap_bytes`` of keys and values."""

    def __init__(self, cap_bytes: int) -> None:
        if cap_bytes < 0:
            raise ValueError(f"cap_bytes={cap_bytes} is invalid; allowed: >= 0 (0 keeps nothing)")
        self.cap_bytes = cap_bytes
        self.entries: list[CachedSequence] = []
        self.peak_bytes = 0
        self._warned = False

    def clear(self) -> None:
        self.entries = []

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries)

    def match(self, prompt: Sequence[int]) -> tuple[CachedSequence | None, int]:
        """The longest kept sequence that is a prefix of ``prompt``, and how many of its tokens to reuse
        (at most ``len(prompt) - 1``: the last prompt token is always fed, to get the next logits)."""
        best, best_len = None, 0
        prompt = tuple(prompt)
        for entry in self.entries:
            size = len(entry.tokens)
            if best_len < min(size, len(prompt) - 1) and size <= len(prompt) and prompt[:size] == entry.tokens:
                best, best_len = entry, min(size, len(prompt) - 1)
        return best, best_len

    def keep(self, rows: list[tuple[int, tuple[int, ...], torch.Tensor]], cache: DynamicCache) -> None:
        """Replace the pool by ``rows``: ``(batch_row, tokens, columns)``, ``columns`` being the cache
        columns of ``batch_row`` that hold ``tokens``. Rows past ``cap_bytes`` are not kept (they are
        prefilled again next time; logged once). Frees each layer of ``cache`` once copied out."""
        per_token = sum(layer.keys.shape[1] * layer.keys.shape[3] * layer.keys.element_size() * 2
                        for layer in cache.layers)
        kept, total = [], 0
        for row, tokens, columns in rows:
            if total + len(tokens) * per_token > self.cap_bytes:
                if not self._warned and self.cap_bytes > 0:
                    logger.warning("hf backend: the KV cache cap (%.2f GiB) is full; rows that do not fit are "
                                   "prefilled again on their next turn", self.cap_bytes / GIB)
                    self._warned = True
                continue
            total += len(tokens) * per_token
            kept.append((row, CachedSequence(tokens, []), columns))
        for layer in cache.layers:
            for row, entry, columns in kept:
                entry.layers.append((layer.keys[row, :, columns], layer.values[row, :, columns]))  # copies
            layer.reset()  # free the batch cache layer by layer (lower peak memory)
        self.entries = [entry for _, entry, _ in kept]
        self.peak_bytes = max(self.peak_bytes, total)


def batched_cache(matches: list[tuple[CachedSequence | None, int]], width: int) -> DynamicCache:
    """A cache ``[len(matches), heads, width, head_dim]`` per layer: row b's first ``c_b`` kept keys/values
    right-aligned, zeros to their left (``matches``: ``(entry, c_b)`` from :meth:`KVPool.match`)."""
    template = next(entry for entry, _ in matches if entry is not None)
    layers = []
    for index, (key0, value0) in enumerate(template.layers):
        heads, _, dim = key0.shape
        keys = key0.new_zeros((len(matches), heads, width, dim))
        values = value0.new_zeros((len(matches), heads, width, dim))
        for row, (entry, size) in enumerate(matches):
            if entry is not None and size > 0:
                keys[row, :, width - size :] = entry.layers[index][0][:, :size]
                values[row, :, width - size :] = entry.layers[index][1][:, :size]
        layers.append((keys, values))
    return DynamicCache(layers)


class GrowingLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys/values are views of buffers with spare columns: ``update`` writes the
    new columns in place and reallocates (25% headroom, at least 64 columns) only when they are full.
    ``DynamicLayer`` concatenates the whole cache for every generated token instead, which was 45% of a
    decode step (32 rows x 1200 cached tokens; BENCHMARKS.md). Same keys and values, so the same outputs."""

    _buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized or self.keys.numel() == 0:
            return super().update(key_states, value_states, *args, **kwargs)
        size, new = self.keys.shape[-2], key_states.shape[-2]
        buffers = self._buffers
        current = buffers is not None and self.keys.data_ptr() == buffers[0].data_ptr() \
            and self.keys.shape[:2] == buffers[0].shape[:2]
        if not current or size + new > buffers[0].shape[-2]:  # reallocate (or the keys were replaced)
            capacity = size + new + max(64, size // 4)
            buffers = tuple(t.new_empty((*t.shape[:2], capacity, t.shape[-1])) for t in (self.keys, self.values))
            buffers[0][:, :, :size] = self.keys
            buffers[1][:, :, :size] = self.values
            self._buffers = buffers
        buffers[0][:, :, size : size + new] = key_states
        buffers[1][:, :, size : size + new] = value_states
        self.keys, self.values = buffers[0][:, :, : size + new], buffers[1][:, :, : size + new]
        return self.keys, self.values

    def reset(self) -> None:
        self._buffers = None
        super().reset()


def grow_in_place(cache: DynamicCache) -> DynamicCache:
    """``cache`` with every ``DynamicLayer`` turned into a :class:`GrowingLayer` (same tensors, no copy)."""
    for index, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer:
            grown = GrowingLayer.__new__(GrowingLayer)
            grown.__dict__.update(layer.__dict__)
            cache.layers[index] = grown
    return cache
