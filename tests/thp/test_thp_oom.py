"""Out of memory at every allocation of THP operations (the sweep of
tests/properties/test_oom.py): fail the k-th page allocation, for every k.

- a THP fault whose order-9 allocation fails falls back to base pages (thp_fault_fallback)
  and succeeds; a failure of anything else (a page table, the base page) is ENOMEM with
  what Linux keeps (the upper tables allocated on the way), and the huge PMD is never half
  made;
- fork, partial munmap / mprotect / madvise and mremap of THP-backed memory are atomic:
  ENOMEM and the machine exactly as it was (vmstat included), or success;
- a COW write to a THP shared with a child splits the PMD, then copies one page: when the
  copy fails the split stays (as in Linux) and the retry finishes the fault.
Retrying gives the undisturbed result, the checker passes, and when everything exits the
machine has all its memory back."""
import errno

import pytest

import mmemu
from conftest import PG, PRIV, RW
from properties.test_oom import _assert_progress_within, state, teardown

M = 1 << 20
A = 0x300000000000


def setup(m):
    """Three THPs (one split by an mprotect: PTE-mapped), an advised empty span."""
    p = m.spawn()
    p.mmap(A, 8 * M, RW, PRIV | mmemu.MAP_FIXED)
    p.madvise(A, 8 * M, mmemu.MADV_HUGEPAGE)
    for i in range(3):
        p.write(A + i * 2 * M + 5 * PG, bytes([i + 1]) * 100)
    p.mprotect(A + 4 * M + 9 * PG, PG, mmemu.PROT_READ)
    p.mprotect(A + 4 * M + 9 * PG, PG, RW)
    return {"p": p}


def forked(m):
    ctx = setup(m)
    ctx["c"] = ctx["p"].fork()
    return ctx


# name: (setup, operation, kind)
OPS = {
    "thp_write_fault": (setup, lambda m, x: x["p"].write(A + 6 * M + 3 * PG, b"new"), "fault"),
    "thp_fault_far": (setup, lambda m, x: (x["p"].mmap(A + 64 * M, 2 * M, RW, PRIV | mmemu.MAP_FIXED),
                                          x["p"].madvise(A + 64 * M, 2 * M, mmemu.MADV_HUGEPAGE),
                                          x["p"].write(A + 64 * M, b"far")), "fault"),
    "fork": (setup, lambda m, x: x["p"].fork(), "atomic"),
    "fork_of_a_child": (forked, lambda m, x: x["c"].fork(), "atomic"),
    "munmap_part_of_a_thp": (forked, lambda m, x: x["c"].munmap(A + 2 * M + PG, PG), "atomic"),
    "mprotect_part_of_a_thp": (forked, lambda m, x: x["p"].mprotect(A + PG, 3 * M, mmemu.PROT_READ),
                               "atomic"),
    "dontneed_part_of_a_thp": (forked, lambda m, x: x["p"].madvise(A + 3 * PG, 2 * PG, mmemu.MADV_DONTNEED),
                               "atomic"),
    "mremap_thps": (forked, lambda m, x: x["c"].mremap(A + PG, 4 * M, 4 * M,
                                                       mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED,
                                                       A + 256 * M + PG), "atomic"),
    "cow_write_to_a_shared_thp": (forked, lambda m, x: x["p"].write(A + 2 * M + 7 * PG, b"P"), "partial"),
}


def fresh(setup_fn):
    m = mmemu.Machine("64M")
    return m, m.meminfo()["MemFree"], setup_fn(m)


@pytest.mark.parametrize("name", sorted(OPS))
def test_fail_every_allocation_of_a_thp_operation(name, fork_design):
    setup_fn, op, kind = OPS[name]
    m, free, ctx = fresh(setup_fn)
    calls = m.phys.alloc_calls
    op(m, ctx)
    n = m.phys.alloc_calls - calls
    want = state(m, vmstat=False)
    teardown(m, free)
    fallbacks = 0
    for k in range(1, n + 1):
        m, free, ctx = fresh(setup_fn)
        before = state(m)
        fb = m.vmstat()["thp_fault_fallback"]
        m.fail_page_alloc(k)
        try:
            op(m, ctx)
        except mmemu.MMError as e:
            assert e.errno == errno.ENOMEM, e
            m.fail_page_alloc(0)
            m.check()
            if kind == "atomic":
                assert state(m) == before, f"allocation {k}/{n} failed and the machine changed"
            else:
                _assert_progress_within(before, state(m), want)
            op(m, ctx)
            assert state(m, vmstat=False) == want, f"retry after failing allocation {k}/{n}"
        else:
            # only the order-9 allocation of a THP fault may fail without an error
            assert kind == "fault" and m.vmstat()["thp_fault_fallback"] == fb + 1, k
            fallbacks += 1
        m.fail_page_alloc(0)
        m.check()
        teardown(m, free)
    assert fallbacks == (1 if kind == "fault" else 0)
