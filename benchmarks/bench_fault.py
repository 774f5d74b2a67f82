"""Faults: first-write faults over 1 GiB (do_anonymous_page) and COW faults in a child
(wp_page_copy of 262,144 written pages).

Baselines: numpy builds the same 262,144 PTE values (touch), and copies 1 GiB with
np.copyto (COW: the data movement itself).
"""
import time

import numpy as np

import mmemu
from conftest import GIB, PRIV, RW, populated, ratio


def test_touch_1g(benchmark):
    state = {}

    def setup():
        if "m" in state:
            state["p"].exit()
        m = state.setdefault("m", mmemu.Machine("32G"))
        p = m.spawn()
        state["p"] = p
        state["a"] = p.mmap(0, GIB, RW, PRIV)
        return (), {}

    def touch():
        state["p"].touch(state["a"], GIB)

    benchmark.pedantic(touch, setup=setup, rounds=5, warmup_rounds=1)
    best = float("inf")
    pfns = np.arange(262144, dtype=np.uint64)
    for _ in range(5):
        t = time.perf_counter()
        (pfns << np.uint64(12)) | np.uint64(0x8000000000000067)
        best = min(best, time.perf_counter() - t)
    benchmark.extra_info["touch_ms_mean"] = round(benchmark.stats.stats.mean * 1e3, 2)
    r = ratio(benchmark, best, "ratio_to_numpy_pte_build")
    assert state["p"].status()["RssAnon"] == GIB >> 10
    state["m"].check()
    assert r < 200


def test_cow_1g_warm(benchmark):
    """Second fork-and-write round: the child's copies reuse frames the first child freed."""
    m, p, a = populated(GIB, data=True)
    first = p.fork()
    t0 = time.perf_counter()
    first.touch(a, GIB)
    cold = time.perf_counter() - t0
    first.exit()
    children = []

    def setup():
        while children:
            children.pop().exit()
        children.append(p.fork())
        return (), {}

    def cow():
        children[-1].touch(a, GIB)

    benchmark.pedantic(cow, setup=setup, rounds=3, warmup_rounds=0)
    c = children[-1]
    assert c.read(a + GIB - 4096, 4) == b"\x5a" * 4
    ev = m.vmstat()
    children.pop().exit()
    src = np.full(GIB, 0x5A, np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    benchmark.extra_info["cow_ms_mean"] = round(benchmark.stats.stats.mean * 1e3, 1)
    benchmark.extra_info["cow_first_round_ms"] = round(cold * 1e3, 1)
    benchmark.extra_info["numpy_copy_1g_ms"] = round(best * 1e3, 1)
    r = ratio(benchmark, best, "ratio_to_numpy_1g_copy")
    m.check()
    assert ev["pages_copied"] >= 262144 * 2
    assert r < 10
