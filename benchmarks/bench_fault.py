"""Faults: first-touch write faults and zero-page read faults over 1 GiB; COW breaks with
data (the child writes every page the parent filled), cold and warm. Baselines: the real
kernel's per-page COW fault (cold and warm), numpy building the same PTE values, and
np.copyto of the same bytes."""
import pytest

from conftest import GIB, MIB, kernel_baseline, median, numpy_bound, record_ratio, run_scenario


@pytest.mark.parametrize("op", ["touch", "zero_read"])
def test_first_touch(benchmark, op):
    s, t = run_scenario(benchmark, op, GIB, rounds=5)
    record_ratio(benchmark, "ratio_to_numpy_pte_build", t, numpy_bound("touch", GIB, 5))
    s.m.check()


@pytest.mark.parametrize("size", [64 * MIB, GIB], ids=["64M", "1G"])
def test_cow_breaks_with_data(benchmark, size):
    from mmemu.bench.scenarios import CowData
    cold = CowData(size).measure(1)["times"][0]   # a fresh machine: host memory never touched
    s, warm = run_scenario(benchmark, "cow_data", size, rounds=3, warmup=1)
    pages = size // 4096
    benchmark.extra_info["cold_us_per_page"] = round(cold / pages * 1e6, 3)
    benchmark.extra_info["warm_us_per_page"] = round(warm / pages * 1e6, 3)
    record_ratio(benchmark, "ratio_to_numpy_copy", warm, numpy_bound("cow_data", size, 3))
    k = kernel_baseline(size)
    record_ratio(benchmark, "warm_ratio_to_kernel_cow", warm, median(k["cow_s"][1:]))
    record_ratio(benchmark, "cold_ratio_to_kernel_cow", cold, k["cow_s"][0])
    assert s.m.vmstat()["pages_copied"] >= pages
    s.m.check()
