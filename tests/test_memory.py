"""The peak-RSS sampler the benchmarks use: it sees memory held while it runs."""

from __future__ import annotations

import ctypes
import mmap
import time
from pathlib import Path

import psutil
import pytest
import torch

from algos.training import engine as engine_module
from algos.training.memory import PeakRSS, glibc, peak_rss_gib, release_free_heap, reset_peak_rss
from algos.training.schema import TrainerActorConfig


def resident_block(size: int) -> mmap.mmap:
    """``size`` bytes of fresh anonymous pages, each written once, so all are resident (never reused heap)."""
    block = mmap.mmap(-1, size)
    for offset in range(0, size, mmap.PAGESIZE):
        block[offset] = 1
    return block


def test_peak_rss_sampler_sees_a_64_mib_block_held_while_it_samples():
    before = psutil.Process().memory_info().rss / 2**30
    sampler = PeakRSS(interval_s=0.005)
    block = resident_block(64 * 2**20)
    deadline = time.monotonic() + 10  # a loaded machine may schedule the sampler thread late
    while sampler.peak_gib < before + 60 / 1024 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    block.close()
    assert sampler.peak_gib >= before + 60 / 1024


def test_peak_rss_sampler_rejects_a_non_positive_interval():
    with pytest.raises(ValueError, match="interval_s=0"):
        PeakRSS(interval_s=0)


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc/self/clear_refs")
def test_peak_rss_since_reset_forgets_a_freed_block_and_sees_a_new_one():
    block = b"\x01" * (256 * 2**20)
    del block  # freed: the peak so far keeps it, the count after a reset must not
    before_reset = peak_rss_gib()
    assert reset_peak_rss()
    after_reset = peak_rss_gib()
    assert after_reset < before_reset - 200 / 1024
    block = resident_block(64 * 2**20)
    assert peak_rss_gib() >= after_reset + 60 / 1024
    block.close()


@pytest.mark.skipif(glibc() is None, reason="malloc_trim is glibc's")
def test_release_free_heap_returns_freed_heap_pages_that_glibc_keeps():
    """128 MiB of 64 KiB blocks (below glibc's mmap threshold: heap memory), written, then freed but the
    last, which pins the heap's top: glibc keeps the freed pages resident until ``malloc_trim``."""
    libc = glibc()
    libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
    rss_mib = lambda: psutil.Process().memory_info().rss / 2**20  # noqa: E731
    chunk, count = 64 * 2**10, 2048
    release_free_heap()
    blocks = [libc.malloc(chunk) for _ in range(count)]
    for block in blocks:
        ctypes.memset(block, 1, chunk)
    for block in blocks[:-1]:
        libc.free(block)
    kept = rss_mib()
    assert release_free_heap()
    released = kept - rss_mib()
    libc.free(blocks[-1])
    assert released >= 100, f"only {released:.0f} MiB of ~128 MiB freed heap went back to the OS"


def test_every_cpu_micro_batch_backward_releases_the_freed_heap(monkeypatch):
    """``engine.accumulate`` trims the heap after each CPU backward (the fragmentation it stops is
    measured in BENCHMARKS.md); the step it returns is unchanged."""
    calls = []
    monkeypatch.setattr(engine_module, "release_free_heap", lambda: calls.append(1) or True)
    engine = engine_module.build_engine(torch.nn.Linear(3, 2), TrainerActorConfig(lr=0.1))
    x = torch.ones(4, 3)
    assert engine_module.accumulate(engine, engine(x).sum(), is_last=False) is None
    assert engine_module.accumulate(engine, engine(x).sum(), is_last=True) > 0
    assert len(calls) == 2
