"""COW page-table fork (copy_cow_pte_range) against a classic fork of the same region,
measured in the same run: 1 GiB and 16 GiB of private anonymous memory, every page touched.

The tracked number is the ratio classic / COW; pytest-benchmark records both times.
"""
import time

import pytest

from conftest import GIB, populated


def _fork_times(p, cow, rounds):
    ts = []
    for _ in range(rounds):
        t = time.perf_counter()
        c = p.fork(cow_pgtable=cow)
        ts.append(time.perf_counter() - t)
        c.exit()
    ts.sort()
    return ts[len(ts) // 2]


def _bench_cow_fork(benchmark, p, rounds, warmup):
    """Benchmark p.fork(cow_pgtable=True) (each round exits the previous child), then time
    classic forks of the same process; returns (COW median, classic median) in seconds."""
    children = []

    def setup():
        while children:
            children.pop().exit()

    def fork():
        children.append(p.fork(cow_pgtable=True))

    benchmark.pedantic(fork, setup=setup, rounds=rounds, warmup_rounds=warmup)
    setup()
    # the ratio uses medians measured here, the same way for both designs
    cow = _fork_times(p, True, rounds)
    classic = _fork_times(p, False, max(5, rounds // 3))
    benchmark.extra_info["cow_fork_us_median"] = round(cow * 1e6, 1)
    benchmark.extra_info["classic_fork_us_median"] = round(classic * 1e6, 1)
    benchmark.extra_info["classic_over_cow"] = round(classic / cow, 1)
    return cow, classic


@pytest.mark.parametrize("accounting", ["deferred", "eager"])
def test_cow_fork_1g(benchmark, accounting):
    m, p, a = populated(GIB)
    m.phys.cow_pte_accounting = accounting
    cow, classic = _bench_cow_fork(benchmark, p, 50, 5)
    m.check()
    if accounting == "deferred":
        assert classic / cow >= 30, f"COW fork only {classic / cow:.1f}x faster than classic"


def test_cow_fork_ratio_16g(benchmark):
    """The same comparison at 16 GiB (8192 PTE tables, 4 Mi pages)."""
    m, p, a = populated(16 * GIB, memory="64G")
    cow, classic = _bench_cow_fork(benchmark, p, 20, 2)
    assert classic / cow >= 30


@pytest.mark.parametrize("design", ["classic", "deferred", "eager"])
def test_fork_then_child_writes_everything(benchmark, design):
    """The other side of the trade: fork plus the child writing every page of 1 GiB (the
    parent filled it with data), warm. COW page tables move the table copies from fork
    to the child's first write in each 2 MiB span; the page copies are the same."""
    m, p, a = populated(GIB, data=True)
    if design != "classic":
        m.phys.cow_pte_accounting = design
    cow = design != "classic"
    p.fork(cow_pgtable=cow).exit()          # warm: the child's frames are reused next time
    children = []

    def setup():
        while children:
            children.pop().exit()

    def fork_and_write():
        c = p.fork(cow_pgtable=cow)
        children.append(c)
        c.touch(a, GIB)

    benchmark.pedantic(fork_and_write, setup=setup, rounds=3, warmup_rounds=1)
    setup()
    ev = m.vmstat()
    c = p.fork(cow_pgtable=cow)
    c.touch(a, GIB)
    work = m.vmstat() - ev
    benchmark.extra_info["pte_tables_copied"] = work["fork_pte_tables_copied"] + work["cow_pte_tables_duplicated"]
    benchmark.extra_info["pages_copied"] = work["pages_copied"]
    assert work["pages_copied"] == 262144
    assert benchmark.extra_info["pte_tables_copied"] == 512
    c.exit()
    m.check()
