"""munmap and exit of a populated 1 GiB region (zap_page_range, free_pgtables, exit_mmap);
baseline: numpy clearing the PTEs and dropping the refcounts and mapcounts."""
import pytest

from conftest import GIB, numpy_bound, record_ratio, run_scenario


@pytest.mark.parametrize("op", ["munmap", "exit"])
def test_unmap(benchmark, op):
    s, t = run_scenario(benchmark, op, GIB, rounds=5)
    record_ratio(benchmark, "ratio_to_numpy_zap", t, numpy_bound("munmap", GIB, 5))
    s.m.check()
