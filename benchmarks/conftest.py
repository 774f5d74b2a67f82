"""Benchmark fixtures: a 1 GiB process populated once per module.

Run with ``python -m pytest benchmarks``; every benchmark also measures a baseline in the
same run (a numpy lower bound for the same data movement), and the ratio is what is
asserted and tracked, because these machines are shared and noisy.
"""
import numpy as np
import pytest

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

GIB = 1 << 30
RW = PROT_READ | PROT_WRITE
PRIV = MAP_PRIVATE | MAP_ANONYMOUS


def populated(size=GIB, data=False, memory="32G"):
    """A machine and a process with `size` bytes of private anonymous memory, every page
    written (touched, or filled with a byte pattern when data=True)."""
    m = mmemu.Machine(memory)
    p = m.spawn()
    a = p.mmap(0, size, RW, PRIV)
    if data:
        chunk = 64 << 20
        pattern = np.full(chunk, 0x5A, dtype=np.uint8)
        for off in range(0, size, chunk):
            p.write(a + off, pattern[: min(chunk, size - off)])
    else:
        p.touch(a, size)
    return m, p, a


def ratio(benchmark, baseline_stats, name):
    """Record mean time / baseline mean time in the benchmark's extra_info."""
    if benchmark.stats is None:
        pytest.fail("this benchmark compares timings: run it with benchmarks enabled")
    r = benchmark.stats.stats.mean / baseline_stats
    benchmark.extra_info[name] = round(r, 3)
    return r
