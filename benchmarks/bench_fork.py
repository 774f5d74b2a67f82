"""fork: classic (copy_page_range), COW page tables deferred and eager, at 64 MiB, 1 GiB
and 16 GiB populated; baselines: the real kernel's fork of the same populated size, and a
numpy lower bound for the same work (PTE bytes copied, refcounts and mapcounts raised)."""
import pytest

from conftest import GIB, MIB, kernel_baseline, median, numpy_bound, record_ratio, run_scenario

SIZES = [64 * MIB, GIB, 16 * GIB]
ROUNDS = {64 * MIB: 30, GIB: 20, 16 * GIB: 5}


@pytest.mark.parametrize("design", ["classic", "deferred", "eager"])
@pytest.mark.parametrize("size", SIZES, ids=["64M", "1G", "16G"])
def test_fork(benchmark, size, design):
    s, t = run_scenario(benchmark, "fork", size, design, rounds=ROUNDS[size], warmup=2)
    s.m.check()
    nb = numpy_bound("fork", size, 5 if size > GIB else 15)
    r_numpy = record_ratio(benchmark, "ratio_to_numpy_lower_bound", t, nb)
    if design == "classic":
        assert r_numpy < 5, f"classic fork is {r_numpy:.1f}x the numpy lower bound"
    if design == "deferred" and size >= GIB:
        assert r_numpy < 0.2, "a COW page-table fork is O(tables), far below per-page work"
    if size <= GIB:
        k = kernel_baseline(size)
        record_ratio(benchmark, "ratio_to_kernel_fork", t, median(k["fork_s"]))
    else:
        assert t < 0.5, f"16 GiB fork took {t:.3f} s"
