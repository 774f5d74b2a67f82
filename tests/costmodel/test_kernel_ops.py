"""The calibration side of the kernel helper (`kernel_helper.py --op`): each operation on the
live kernel, timed by wall clock and by the process's CPU time."""
import pytest

from mmemu.bench import kernel

pytestmark = pytest.mark.one_design
MIB = 1 << 20


@pytest.mark.parametrize("op", ["fork", "first_touch", "zero_read", "mprotect", "munmap", "exit"])
def test_every_op_is_timed_on_the_live_kernel(op):
    r = kernel.measure_op(op, 4 * MIB, 3, 512)
    assert r["op"] == op and r["stride"] == 512
    assert r["ptes"] == 2                       # one page in every 512 of 1024 pages
    assert r["tables"] in (2, 3)                # 4 MiB over 2 MiB tables, aligned or not
    assert len(r["times"]) == len(r["cpu_times"]) == 3
    assert all(t > 0 for t in r["times"]) and all(c > 0 for c in r["cpu_times"])


def test_bad_op_is_an_error():
    with pytest.raises(RuntimeError, match="unknown op"):
        kernel.measure_op("swap", 4 * MIB, 1)


def test_bench_mode_reports_cpu_time_beside_wall_time():
    r = kernel.measure(4 * MIB, 2)
    assert len(r["fork_cpu_s"]) == len(r["cow_cpu_s"]) == 2
    assert all(c > 0 for c in r["cow_cpu_s"]) and r["pages"] == 1024
