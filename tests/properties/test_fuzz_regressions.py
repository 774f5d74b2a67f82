"""Regression tests for the bugs the reference-model fuzzing (tests/test_fuzz.py) and the
bad-input catalogue (tests/test_bad_input_catalogue.py) found, one per bug, named after it."""
import errno

import numpy as np
import pytest

import mmemu
from conftest import PG, PRIV, RW, snapshot
from mmemu import MAP_FIXED, Madv

A = 0x7F0000000000


def test_regression_execve_leaves_no_program_break(m, p):
    """execve gave an address space with brk 0, so brk() could never grow the heap of an
    exec'd program; it now starts like spawn()'s empty one."""
    start = p.brk(0)
    p.brk(start + 4 * PG)
    p.execve()
    assert p.brk(0) == start
    assert p.brk(start + 2 * PG) == start + 2 * PG
    p.write(start, b"heap after exec")
    assert p.read(start, 4) == b"heap"


def test_regression_execve_forgets_pr_set_cow_pte(m, p):
    """execve dropped PR_SET_COW_PTE (and a Machine(cow_pgtable=True) default): forks after
    an exec silently went back to classic. The flag is kept, as MMF_INIT_MASK flags are."""
    p.prctl(mmemu.PR_SET_COW_PTE, 1)
    p.execve()
    assert p.prctl(mmemu.PR_GET_COW_PTE) == 1
    p.mmap(A, 4 * PG, RW, PRIV | MAP_FIXED)
    p.touch(A, 4 * PG)
    before = m.vmstat()
    c = p.fork()
    assert (m.vmstat() - before)["cow_pte_tables_shared"] == 1
    c.exit()


def test_regression_cow_machine_default_lost_on_execve():
    m = mmemu.Machine("64M", cow_pgtable=True)
    p = m.spawn()
    p.execve()
    assert p.prctl(mmemu.PR_GET_COW_PTE) == 1


@pytest.mark.parametrize("bad", ["4096", 4096.0, 1.5, None, b"\x00"])
def test_regression_non_integer_arguments_were_truncated_or_misreported(m, p, bad):
    """A float was silently truncated (mmap(1.5, ...) mapped memory), a str gave ValueError
    or EINVAL depending on the call; every integer argument now takes only integers and
    anything else raises TypeError with nothing changed."""
    p.mmap(A, 4 * PG, RW, PRIV | MAP_FIXED)
    before = snapshot(m)
    calls = [lambda: p.mmap(bad, PG, RW, PRIV), lambda: p.mmap(0, bad, RW, PRIV),
             lambda: p.munmap(A, bad), lambda: p.mprotect(A, PG, bad),
             lambda: p.madvise(A, PG, bad), lambda: p.mremap(A, PG, bad),
             lambda: p.brk(bad), lambda: p.read(bad, 1), lambda: p.touch(A, bad),
             lambda: p.prctl(bad), lambda: p.clone3(bad)]
    for call in calls:
        with pytest.raises(TypeError):
            call()
    assert snapshot(m) == before


def test_numpy_and_intflag_arguments_are_integers(m, p):
    a = p.mmap(np.uint64(A), np.int64(2 * PG), mmemu.PROT_READ | mmemu.PROT_WRITE, PRIV | MAP_FIXED)
    assert a == A
    p.write(np.uint64(A), b"x")
    assert p.read(A, np.int32(1)) == b"x"


def test_regression_madv_hwpoison_gave_eperm(m, p):
    """MADV_HWPOISON and MADV_SOFT_OFFLINE gave EPERM (a caller without CAP_SYS_ADMIN);
    processes are root, and the development kernel (no CONFIG_MEMORY_FAILURE) says EINVAL."""
    p.mmap(A, PG, RW, PRIV | MAP_FIXED)
    for advice in (Madv.HWPOISON, Madv.SOFT_OFFLINE):
        with pytest.raises(mmemu.MMError) as e:
            p.madvise(A, PG, advice)
        assert e.value.errno == errno.EINVAL


def test_regression_read_longer_than_the_address_space(m, p):
    """read(addr, 2**70) failed inside numpy ("Maximum allowed dimension exceeded") instead
    of faulting where the mappings end."""
    p.mmap(A, 2 * PG, RW, PRIV | MAP_FIXED)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(A, 2**70)
    assert e.value.address == A + 2 * PG and e.value.code == "SEGV_MAPERR"


def test_regression_sigbus_and_guard_fault_address_was_page_aligned(m, p):
    """A SIGBUS past the end of a file and a SIGSEGV on a guard region reported the start
    of the page; Linux's si_addr is the faulting byte (checked on 6.18 with a C program:
    a write at page + 1 past EOF gives BUS_ADRERR at page + 1, a read at guard + 5 gives
    SEGV_MAPERR at guard + 5)."""
    f = m.create_file("/half", size=PG // 2)
    a = p.mmap(0, 2 * PG, RW, mmemu.MAP_SHARED, file=f)
    with pytest.raises(mmemu.BusError) as e:
        p.write(a + PG + 1, b"z")
    assert e.value.address == a + PG + 1 and e.value.code == "BUS_ADRERR"
    g = p.mmap(0, 2 * PG, RW, PRIV)
    p.madvise(g, PG, Madv.GUARD_INSTALL)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(g + 5, 1)
    assert e.value.address == g + 5 and e.value.code == "SEGV_MAPERR"
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(g + PG - 2, 4)         # starts in the guard page
    assert e.value.address == g + PG - 2


def test_regression_mremap_dontunmap_cleared_vm_account_on_the_source(m, p):
    """MREMAP_DONTUNMAP cleared VM_ACCOUNT on the source VMA (the old dontunmap_complete);
    since "mm/mremap: correctly account old mapping after MREMAP_DONTUNMAP remap" (in the
    development kernel, checked there) only VM_LOCKED/VM_LOCKONFAULT go, from the whole
    source VMA, which is not split."""
    a = p.mmap(A, 8 * PG, RW, PRIV | MAP_FIXED | mmemu.MAP_LOCKED)
    p.mremap(a + 2 * PG, 3 * PG, 3 * PG, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED
             | mmemu.MREMAP_DONTUNMAP, A - 64 * PG)
    flags = {v["start"]: v["VmFlags"] for v in p.smaps()}
    assert "ac" in flags[A] and "lo" not in flags[A]
    assert "lo" in flags[A - 64 * PG]
    assert len(flags) == 2          # the source VMA was not split


def test_dontunmap_of_mlocked_memory_keeps_counting_the_source_in_vmlck(m, p):
    """Not a bug of mmemu but of Linux, reproduced on purpose (the fuzzing's model first
    disagreed): MREMAP_DONTUNMAP unlocks the source without uncounting it (mm/mremap.c:
    "we won't unmap we don't need to touch locked_vm"), so VmLck counts it until exit.
    On 6.18: 4 kB locked, 8 kB after the move, still 8 after unmapping the source, 4 after
    unmapping both."""
    a = p.mmap(A, PG, mmemu.PROT_NONE, PRIV | MAP_FIXED | mmemu.MAP_LOCKED)
    assert p.status()["VmLck"] == 4
    b = p.mremap(a, PG, PG, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED | mmemu.MREMAP_DONTUNMAP,
                 A - 64 * PG)
    assert p.status()["VmLck"] == 8
    p.munmap(a, PG)
    assert p.status()["VmLck"] == 8
    p.munmap(b, PG)
    assert p.status()["VmLck"] == 4
