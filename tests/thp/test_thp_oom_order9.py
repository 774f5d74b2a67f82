"""Out of memory at order 9 only (fail_page_alloc's min-order: m.fail_page_alloc(1, -1,
min_order=9), every order-9 allocation fails, smaller ones do not): an anonymous THP fault
falls back to a 4 KiB page (thp_fault_fallback, a PTE table instead of the huge PMD and
its deposited table), a read fault maps the 4 KiB zero page when the huge zero folio cannot
be allocated, a write to the huge zero PMD splits it and copies the zero page; fork, the
splits (partial munmap / mprotect / DONTNEED, mremap, a COW write to a shared THP) need no
order-9 block and give exactly the undisturbed result; MADV_COLLAPSE is ENOMEM with the
machine exactly as before but thp_collapse_alloc_failed. Every operation runs in every
fork design, and the checker passes after each."""
import errno

import pytest

import mmemu
from conftest import PG, PRIV, RW
from properties.test_oom import state
from test_thp_oom import A, M, forked, setup

HUGE_ZERO = A + 6 * M


def with_huge_zero(m):
    ctx = setup(m)
    ctx["p"].read(HUGE_ZERO, 1)             # the huge zero folio, mapped by a PMD
    return ctx


def pte_mapped(m):
    p = m.spawn()
    p.mmap(A, 4 * M, RW, PRIV | mmemu.MAP_FIXED)
    for i in (0, 9, 511):
        p.write(A + i * PG, b"pte")
    return {"p": p}


# name: (setup, operation, vmstat changes the order-9 failures make: None for ENOMEM),
# and for a fallback what the process reads afterwards
READ = {"write_fault": (A + 6 * M + 3 * PG, b"new"), "read_fault": (A + 6 * M, b"\0"),
        "write_to_the_huge_zero_pmd": (HUGE_ZERO + PG - 1, b"\0w\0")}
OPS = {
    "write_fault": (setup, lambda x: x["p"].write(A + 6 * M + 3 * PG, b"new"),
                    {"thp_fault_fallback": 1}),
    "read_fault": (setup, lambda x: x["p"].read(A + 6 * M, 1), {"thp_fault_fallback": 1}),
    "write_to_the_huge_zero_pmd": (with_huge_zero, lambda x: x["p"].write(HUGE_ZERO + PG, b"w"),
                                   {"thp_fault_fallback": 1}),
    "fork": (setup, lambda x: x["p"].fork(), {}),
    "munmap_part_of_a_thp": (forked, lambda x: x["c"].munmap(A + 2 * M + PG, PG), {}),
    "mprotect_part_of_a_thp": (forked, lambda x: x["p"].mprotect(A + PG, 3 * M, mmemu.PROT_READ), {}),
    "dontneed_part_of_a_thp": (forked, lambda x: x["p"].madvise(A + 3 * PG, 2 * PG, mmemu.MADV_DONTNEED), {}),
    "mremap_thps": (forked, lambda x: x["c"].mremap(A + PG, 4 * M, 4 * M,
                                                    mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED,
                                                    A + 256 * M + PG), {}),
    "cow_write_to_a_shared_thp": (forked, lambda x: x["p"].write(A + 2 * M + 7 * PG, b"P"), {}),
    "collapse": (pte_mapped, lambda x: x["p"].madvise(A, 2 * M, mmemu.MADV_COLLAPSE), None),
}


def teardown(m, free):
    """Every process exits: all memory back but the huge zero folio (kept once made)."""
    for proc in list(m.processes):
        proc.exit()
    m.check()
    kept = 2048 if m.vmstat()["thp_zero_page_alloc"] else 0
    assert m.meminfo()["MemFree"] == free - kept, "frames leaked"


def run(setup_fn, op, inject):
    m = mmemu.Machine("64M")
    free = m.meminfo()["MemFree"]
    ctx = setup_fn(m)
    before, vm = state(m, vmstat=False), m.vmstat()
    if inject:
        m.fail_page_alloc(1, -1, min_order=9)
    err = None
    try:
        op(ctx)
    except mmemu.MMError as e:
        err = e.errno
    m.fail_page_alloc(0)
    m.check()
    return m, free, before, state(m, vmstat=False), (m.vmstat() - vm).nonzero(), err


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_order9_allocation_fails(name, fork_design):
    setup_fn, op, fallback = OPS[name]
    m, free, _, want, want_vm, err = run(setup_fn, op, False)
    assert err is None
    teardown(m, free)
    m, free, before, got, got_vm, err = run(setup_fn, op, True)
    if fallback is None:         # MADV_COLLAPSE: all or nothing
        assert err == errno.ENOMEM and got == before
        assert got_vm == {"thp_collapse_alloc_failed": 1}
    elif not fallback:           # no order-9 allocation: the undisturbed result
        assert err is None and got == want and got_vm == want_vm
    else:                        # the fault fell back to base pages
        assert err is None and got != want
        for k, v in fallback.items():
            assert got_vm.get(k, 0) == want_vm.get(k, 0) + v, (k, got_vm, want_vm)
        assert got_vm.get("thp_fault_alloc", 0) == 0
        addr, data = READ[name]
        assert m.processes[0].read(addr, len(data)) == data
    teardown(m, free)


def test_a_fallback_fault_maps_one_page_in_a_pte_table():
    """VmPTE +4 kB (a PTE table, no deposited one), RssAnon +4 kB, AnonHugePages 0."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(A, 4 * M, RW, PRIV | mmemu.MAP_FIXED)
    p.madvise(A, 4 * M, mmemu.MADV_HUGEPAGE)
    p.write(A, b"x")
    st = p.status()
    m.fail_page_alloc(1, -1, min_order=9)
    p.write(A + 2 * M + 5 * PG, b"y")
    after = p.status()
    assert (after["VmPTE"] - st["VmPTE"], after["RssAnon"] - st["RssAnon"]) == (4, 4)
    assert [e["AnonHugePages"] for e in p.smaps()] == [2048]
    assert p.read(A + 2 * M + 5 * PG, 2) == b"y\0"
    m.fail_page_alloc(0)
    p.write(A + 2 * M + 9 * PG, b"z")       # the PMD has a table now: base pages go on
    assert [e["AnonHugePages"] for e in p.smaps()] == [2048]
    m.check()


def test_min_order_is_checked():
    m = mmemu.Machine("64M")
    with pytest.raises(ValueError):
        m.fail_page_alloc(1, 1, min_order=11)
    with pytest.raises(ValueError):
        m.fail_page_alloc(1, 1, min_order=-1)
