"""The peak-RSS sampler the benchmarks use: it sees memory held while it runs."""

from __future__ import annotations

import mmap
import time
from pathlib import Path

import psutil
import pytest

from algos.training.memory import PeakRSS, peak_rss_gib, reset_peak_rss


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
