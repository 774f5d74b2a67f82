"""COW page tables after the fork: break_cow_pte (one write in every 2 MiB span copies
each shared table), and the fork-then-write workload (fork + the child writes every page
the parent filled) in the three designs, against the pure-Python reference model."""
import pytest

from conftest import GIB, MIB, median, numpy_bound, record_ratio, run_scenario
from mmemu.bench import reference


@pytest.mark.parametrize("design", ["deferred", "eager"])
def test_break_cow_pte(benchmark, design):
    s, t = run_scenario(benchmark, "break_cow_pte", GIB, design, rounds=5)
    benchmark.extra_info["us_per_table"] = round(t / 512 * 1e6, 3)
    record_ratio(benchmark, "ratio_to_numpy_fork_lower_bound", t, numpy_bound("fork", GIB, 5))
    s.m.check()


@pytest.mark.parametrize("design", ["classic", "deferred", "eager"])
def test_fork_then_write(benchmark, design):
    size = 64 * MIB
    s, t = run_scenario(benchmark, "fork_write", size, design, rounds=5)
    work = s.measure(1)["work"]
    assert work["pages_copied"] == size // 4096
    try:
        ref = median(reference.fork_write(size, 2)["times"])
    except reference.Unavailable as e:
        pytest.skip(str(e))
    benchmark.extra_info["speedup_over_reference"] = round(ref / t, 2)
    s.m.check()
