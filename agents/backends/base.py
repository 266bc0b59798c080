"""The generation backend interface: batched token ids in, new token ids out, and weight sync.

Contract of ``Backend.generate(prompts, params, max_new_tokens=None)``:
- ``prompts`` are token id lists of different lengths; the result has one list per prompt holding
  only the newly generated ids, exactly as sampled.
- A sequence ends at the first EOS token (kept) or at the first token that completes one of
  ``params.stop`` (kept, even if it runs past the stop string); nothing after it is returned.
- ``max_new_tokens`` optionally caps each prompt separately (each cap <= ``params.max_new_tokens``);
  a result never exceeds its cap.
- ``temperature == 0`` is greedy; with ``params.seed`` set, sampling is reproducible for the same
  prompts and weights.
``generate_scored`` (optional, :class:`ScoringBackend`) also returns each returned token's log-prob
under the sampling policy, ``log softmax(logits / temperature)`` over the full vocabulary at the step
that sampled it (temperature 1 when greedy), the quantity the trainer computes; a backend whose
sampler truncates the distribution (vLLM with ``top_p < 1``) reports the truncated one.
``update_weights(model)`` makes later generations use the weights of the trainer's ``model``;
``close()`` frees what the backend holds (an engine, its caches); the backend is unusable afterwards.
Which backend a run gets is decided in ``agents.backends.factory``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings. ``temperature=0`` means greedy; ``top_p=1`` disables nucleus sampling."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    stop: tuple[str, ...] = ("</answer>",)
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} is invalid; allowed: >= 0 (0 = greedy)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} is invalid; allowed: 0 < top_p <= 1")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens} is invalid; allowed: >= 1")
        if self.seed is not None and self.seed < 0:
            raise ValueError(f"seed={self.seed} is invalid; allowed: None or an int >= 0")
        object.__setattr__(self, "stop", tuple(self.stop))
        if any(not s for s in self.stop):
            raise ValueError(f"stop={self.stop!r} is invalid; allowed: non-empty strings")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@runtime_checkable
class Backend(Protocol):
    """What the rollout engine needs from an inference engine (see the module docstring)."""

    def generate(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> list[list[int]]: ...

    def update_weights(self, model: torch.nn.Module) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ScoringBackend(Backend, Protocol):
    """A backend that also reports the log-prob of every token it returns (module docstring)."""

    def generate_scored(
        self, prompts: list[list[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None = None
    ) -> tuple[list[list[int]], list[list[float]]]: ...


def resolve_caps(
    prompts: Sequence[Sequence[int]], params: SamplingParams, max_new_tokens: Sequence[int] | None
) -> list[int]:
    """Check that every prompt has a token, and return the per-prompt token caps: ``params.max_new_tokens``
    or the given caps (validated)."""
    if any(len(prompt) == 0 for prompt in prompts):
        raise ValueError("every prompt needs at least one token")
    num_prompts = len(prompts)
    if max_new_tokens is None:
        return [params.max_new_tokens] * num_prompts
    caps = [int(cap) for cap in max_new_tokens]
    if len(caps) != num_prompts:
        raise ValueError(f"max_new_tokens has {len(caps)} entries for {num_prompts} prompts; they must match")
    if any(not 1 <= cap <= params.max_new_tokens for cap in caps):
        raise ValueError(f"max_new_tokens caps {caps} must each be in [1, {params.max_new_tokens}]")
    return caps


def trim_completion(
    ids: Sequence[int],
    cap: int,
    eos_token_ids: Iterable[int],
    stop: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
) -> list[int]:
    """Cut raw generated ``ids`` after the first EOS, the first token completing a stop string, or ``cap``."""
    ids = list(ids[:cap])
    eos = set(eos_token_ids)
    end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
    ids = ids[:end]
    if stop and any(s in tokenizer.decode(ids) for s in stop):
        low, high = 1, len(ids)  # smallest prefix length whose text contains a stop string
        while low < high:
            mid = (low + high) // 2
            if any(s in tokenizer.decode(ids[:mid]) for s in stop):
                high = mid
            else:
                low = mid + 1
        ids = ids[:low]
    return ids


def generate_checked(
    backend: Backend, prompts: list[list[int]], params: SamplingParams, caps: list[int], vocab_size: int
) -> tuple[list[list[int]], list[list[float]] | None]:
    """``backend``'s replies, and from a :class:`ScoringBackend` their token log-probs (else None), if it
    kept its contract: one reply per prompt, reply ``i`` at most ``caps[i]`` ids, every id an int in
    ``[0, vocab_size)``, one log-prob per id; else ValueError naming the backend class and the bad value."""
    name = type(backend).__name__
    if isinstance(backend, ScoringBackend):
        replies, log_probs = backend.generate_scored(prompts, params, caps)
    else:
        replies, log_probs = backend.generate(prompts, params, caps), None
    if len(replies) != len(caps):
        raise ValueError(f"{name}.generate returned {len(replies)} replies for {len(caps)} prompts")
    for i, (reply, cap) in enumerate(zip(replies, caps, strict=True)):
        if len(reply) > cap:
            raise ValueError(f"{name}.generate returned {len(reply)} ids for prompt {i}; allowed: at most its cap {cap}")
        bad = [t for t in reply if not isinstance(t, numbers.Integral) or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"{name}.generate returned token id {bad[0]!r} for prompt {i}; "
                             f"allowed: ints in [0, {vocab_size}) (the tokenizer's vocabulary)")
        if log_probs is not None and (i >= len(log_probs) or len(log_probs[i]) != len(reply)):
            raise ValueError(f"{name}.generate_scored returned no log-prob per token for prompt {i}; "
                             "allowed: one per returned id")
    return replies, log_probs
