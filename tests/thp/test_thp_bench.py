"""The THP scenarios of `mmemu bench` (first touch, fork and split of THP-backed memory)
run and count their work, and the kernel's THP helper measures the same three things."""
import pytest

from mmemu.bench import kernel
from mmemu.bench.scenarios import run

pytestmark = pytest.mark.one_design
MIB = 1 << 20


@pytest.mark.parametrize("op, counters", [
    ("thp_touch", {"thp_fault_alloc": 4, "pgfault": 4}),
    ("thp_fork", {"pgtable_alloc": 3 + 4}),         # PUD, PMD, four deposited tables
    ("thp_split", {"thp_split_pmd": 4}),
])
def test_thp_scenarios_run_and_count_their_work(op, counters):
    r = run(op, 8 * MIB, None, 2)
    assert len(r["times"]) == 2 and r["pages"] == 2048
    for k, v in counters.items():
        assert r["work"].get(k, 0) == v, (op, r["work"])
    assert r["work"].get("fault_anon", 0) == 0 and r["work"].get("fork_ptes_copied", 0) == 0


@pytest.mark.skipif(bool(kernel.thp_available()), reason=kernel.thp_available() or "THP here")
def test_kernel_thp_helper_measures_touch_fork_and_split():
    k = kernel.measure_thp(8 * MIB, 2)
    assert len(k["fork_s"]) == 2 and k["touch_s"] > 0 and k["split_s"] > 0
    assert k["AnonHugePages_kb"] == 8192 and k["pages"] == 2048
