"""import_process of live helper processes (mmemu.procfs): 30,000 one-page VMAs whose pages
were MADV_DONTNEED'd (the kernel keeps their PTE tables, so the importer places 30,000
empty tables) against the same VMAs with their pages present, measured in the same run;
and a process with a 16 TiB PROT_NONE reservation (a sanitizer's shadow), which must
import in under 2 s."""
import sys
import time

import pytest

import mmemu
from mmemu.oracle.live import linux_proc_available

sys.path.insert(0, __file__.rsplit("/benchmarks/", 1)[0] + "/tests/live")
from live_layouts import RESERVATION, one_page_vmas, start_helper, stop_helper  # noqa: E402

pytestmark = pytest.mark.skipif(bool(linux_proc_available()),
                                reason=linux_proc_available() or "live kernel")
N = 30000


def _import(body, benchmark=None, rounds=3):
    """Median seconds of import_process of one helper (into a fresh machine each round),
    timed by pytest-benchmark if given."""
    from mmemu.procfs import import_process
    h = start_helper(body)
    times = []

    def once(m):
        t = time.perf_counter()
        p = import_process(m, h.pid, stop=True)
        times.append(time.perf_counter() - t)
        assert p.import_report.mismatches() == {}
    try:
        if benchmark is None:
            for _ in range(rounds):
                once(mmemu.Machine("4G"))
        else:
            benchmark.pedantic(once, setup=lambda: ((mmemu.Machine("4G"),), {}), rounds=rounds)
    finally:
        stop_helper(h)
    return sorted(times)[len(times) // 2]


def test_import_dontneed_vmas(benchmark):
    if benchmark.disabled:
        pytest.skip("timing benchmark: run with benchmarks enabled")
    present = _import(one_page_vmas(N, dontneed=False))
    dontneed = _import(one_page_vmas(N, dontneed=True), benchmark)
    benchmark.extra_info["present_s"] = round(present, 3)
    benchmark.extra_info["ratio_dontneed_to_present"] = round(dontneed / present, 3)
    assert dontneed < 2 * present          # was 9x: the empty-table placement was quadratic


def test_import_16tib_reservation(benchmark):
    if benchmark.disabled:
        pytest.skip("timing benchmark: run with benchmarks enabled")
    assert _import(RESERVATION, benchmark) < 2.0
