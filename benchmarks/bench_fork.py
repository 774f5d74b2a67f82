"""Classic fork of a populated 1 GiB private anonymous region (copy_page_range).

Baseline: a numpy lower bound for the same work -- copy 512 PTE tables (2 MiB) while
clearing RW, and raise 262,144 refcounts and mapcounts by fancy indexing.
"""
import time

import numpy as np
import pytest

from conftest import GIB, populated, ratio


@pytest.fixture(scope="module")
def parent():
    m, p, a = populated(GIB)
    yield m, p, a


def _numpy_fork_lower_bound(state):
    tables, ref, mapc, pfns, rw = state
    out = tables & ~rw
    tables &= ~rw
    ref[pfns] += 1
    mapc[pfns] += 1
    return out


def test_fork_1g_classic(benchmark, parent):
    m, p, a = parent
    children = []

    def setup():
        while children:
            children.pop().exit()

    def fork():
        children.append(p.fork())

    benchmark.pedantic(fork, setup=setup, rounds=30, warmup_rounds=3)
    setup()
    # numpy lower bound, same run
    n = 262144
    tables = np.arange(n, dtype=np.uint64) << np.uint64(12) | np.uint64(0x67)
    state = (tables, np.ones(n * 2, np.int32), np.ones(n * 2, np.int32),
             np.arange(0, 2 * n, 2, dtype=np.int64), np.uint64(2))
    best = float("inf")
    for _ in range(30):
        t = time.perf_counter()
        _numpy_fork_lower_bound(state)
        best = min(best, time.perf_counter() - t)
    r = ratio(benchmark, best, "ratio_to_numpy_lower_bound")
    benchmark.extra_info["fork_ms_mean"] = round(benchmark.stats.stats.mean * 1e3, 3)
    benchmark.extra_info["numpy_lower_bound_ms"] = round(best * 1e3, 3)
    m.check()
    assert r < 5, f"classic fork is {r:.1f}x the numpy lower bound"
