"""The page-table walks behind Process.read: read a whole 256 MiB region the process
filled; baseline: numpy copying the same bytes into a new buffer."""
from conftest import MIB, numpy_bound, record_ratio, run_scenario


def test_read(benchmark):
    s, t = run_scenario(benchmark, "read", 256 * MIB, rounds=5)
    assert s.p.read(s.a + 256 * MIB - 4, 4) == b"\x5a" * 4
    record_ratio(benchmark, "ratio_to_numpy_copy", t, numpy_bound("read", 256 * MIB, 5))
    s.m.check()
