"""Host memory on CPU runs: glibc heap tuning and the process's peak resident memory (its own, and sampled
with its children for the benchmarks)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import resource
import sys
import threading
from pathlib import Path

import psutil


def glibc() -> ctypes.CDLL | None:
    """The C library when it is Linux glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name)
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # not musl & co.


def limit_heap_slack(threshold: int) -> bool:
    """CPU memory workaround (Linux glibc): give every host allocation of ``threshold`` bytes or more its
    own mapping, returned to the OS when freed. Returns whether the setting took (False off glibc).

    glibc serves blocks below its mmap threshold (which it raises up to 32 MiB as large blocks are
    freed) from per-thread heaps that keep freed memory. After the format warm-up frees its AdamW
    state, and after every step frees gradients and activations, that memory stayed resident: the
    trainer held ~1.3 GiB more than its live tensors between steps and peaked 0.3 GiB higher
    (SmolLM2-135M, Bandit; BENCHMARKS.md). The price: fresh pages are faulted in for every large
    activation, which made a training step ~1.4x slower on a 2-core VM. ``system.cpu_heap_mmap_threshold_kib``
    sets ``threshold`` in KiB; 0 skips this call.
    """
    if threshold <= 0:
        raise ValueError(f"threshold={threshold} is invalid; allowed: > 0 bytes")
    libc = glibc()
    if libc is None:
        return False
    m_mmap_threshold = -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, threshold))


def release_free_heap() -> bool:
    """Hand the heap's free pages back to the OS (glibc ``malloc_trim``); whether anything was released."""
    libc = glibc()
    return libc is not None and bool(libc.malloc_trim(0))


def peak_rss_gib() -> float:
    """Peak resident memory of this process in GiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def reset_peak_rss() -> bool:
    """Restart this process's peak-RSS count (Linux: ``VmHWM`` via ``/proc/self/clear_refs``, which
    ``getrusage``'s ``ru_maxrss`` reads), so a later :func:`peak_rss_gib` covers one phase (e.g. training
    without the model load). False where ``/proc`` has no ``clear_refs``."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakRSS:
    """Samples the resident memory of this process plus its children (e.g. a vLLM engine) every
    ``interval_s`` seconds from a daemon thread, from construction until ``stop()``; ``peak_gib`` is the
    largest sample so far."""

    def __init__(self, interval_s: float = 1.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s={interval_s} is invalid; allowed: > 0 seconds")
        self.peak_gib = 0.0
        self.interval_s = interval_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._done.wait(self.interval_s):
            total = 0
            for process in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += process.memory_info().rss
            self.peak_gib = max(self.peak_gib, total / 2**30)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
