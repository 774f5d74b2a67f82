"""Out of memory at every point: fail the k-th page allocation of an operation, for every k.

`Machine.fail_page_alloc(k)` makes the k-th allocation attempt from now fail, like the
kernel's fail_page_alloc. For each operation below, an undisturbed run counts its
allocation attempts N; then, on a fresh identical machine per k in 1..N, the k-th attempt
fails and the outcome must be exactly one of:

- atomic (fork, COW page-table breaks of munmap/mprotect/madvise/truncate, mremap, guard
  install, execve, spawn): MMError(ENOMEM) and the machine exactly as it was, vmstat work
  counters included (the operation reserved its page-table frames before changing
  anything);
- partial (page faults: write, touch, COW faults): MMError(ENOMEM) with what Linux keeps --
  the pages faulted in before the failing one and the page tables allocated on the way
  (Linux frees those only at munmap);
- ignored (mmap with MAP_POPULATE): the call succeeds with the range partly populated, as
  mmap ignores __mm_populate's result;
- short (write(2) to a file): the bytes before the failing page are written and counted.

In every case the invariant checker passes, retrying the operation gives exactly the state
(PFNs included) of the undisturbed run, and when every process exits and every file is
unlinked the machine has all its memory back.
"""
import errno

import numpy as np
import pytest

import mmemu
from conftest import PG, PRIV, RW, SHARED, mi, snapshot
from mmemu import MADV_DONTNEED, MAP_FIXED, MAP_POPULATE, MAP_PRIVATE, PROT_READ

MB2 = 2 << 20
A = 0x7F0000000000 - MB2           # a private area over three PMD spans (and two PUDs' worth
                                   # of PMD tables would be more than the sweep needs)
FAR = 0x500000000000               # a distant, empty part of the address space


def state(m, vmstat=True):
    """Everything observable: snapshot() plus file contents and (optionally) vmstat."""
    s = snapshot(m, vmstat=vmstat)
    s["files"] = {name: (f.size, f.read(0, f.size)) for name, f in sorted(m._files.items())}
    return s


def setup(m):
    """A process with private anonymous data over three PMD spans, shared anonymous
    memory, a private file mapping with one COW-ed page, a heap and a DONTFORK range."""
    p = m.spawn()
    p.mmap(A, 3 * MB2, RW, PRIV | MAP_FIXED)
    for i in range(3):
        p.write(A + i * MB2 + 5 * PG, bytes([i + 1]) * 100)
        p.write(A + i * MB2 + 300 * PG, b"tail")
    s = p.mmap(0, 4 * PG, RW, SHARED)
    p.write(s, b"shared" * 1000)
    f = m.create_file("f", data=b"F" * (3 * PG))
    fm = p.mmap(A + 3 * MB2, 3 * PG, RW, MAP_PRIVATE | MAP_FIXED, file=f)     # a span of its own
    p.write(fm + PG, b"cow")
    top = p.brk(0)
    p.brk(top + 4 * PG)
    p.write(top, b"heap")
    d = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(d, b"dontfork")
    p.madvise(d, 2 * PG, mmemu.MADV_DONTFORK)
    return {"p": p, "f": f, "fm": fm, "s": s}


def with_far(m):
    ctx = setup(m)
    ctx["p"].mmap(FAR, 2 * MB2, RW, PRIV | MAP_FIXED)     # no page tables there yet
    return ctx


def swapped(m):
    ctx = setup(m)
    assert ctx["p"].swap_out(A, MB2) == 2        # the two written pages of the first span
    return ctx


def forked(m):
    ctx = setup(m)
    ctx["c"] = ctx["p"].fork()
    return ctx


# name: (setup, operation, kind)
OPS = {
    "fork": (setup, lambda m, x: x["p"].fork(), "atomic"),
    "fork_of_a_child": (forked, lambda m, x: x["c"].fork(), "atomic"),
    "fork_cow_pgtable": (setup, lambda m, x: x["p"].fork(cow_pgtable=True), "atomic"),
    "child_write_fault": (forked, lambda m, x: x["c"].write(A + MB2 + 7 * PG, b"w"), "partial"),
    "parent_cow_fault": (forked, lambda m, x: x["p"].write(A + 5 * PG, b"P"), "partial"),
    "child_write_across_spans": (forked, lambda m, x: x["c"].write(A + MB2 - 2 * PG, b"s" * (4 * PG)),
                                 "partial"),
    "touch_new_area": (with_far, lambda m, x: x["p"].touch(FAR + MB2 - 4 * PG, 8 * PG), "partial"),
    "munmap_part_of_shared_span": (forked, lambda m, x: x["c"].munmap(A + PG, PG), "atomic"),
    "mprotect_every_span": (forked, lambda m, x: x["c"].mprotect(A + PG, 3 * MB2 - 2 * PG, PROT_READ),
                            "atomic"),
    "madvise_dontneed": (forked, lambda m, x: x["p"].madvise(A + 5 * PG, PG, MADV_DONTNEED), "atomic"),
    "mremap_far": (forked, lambda m, x: x["c"].mremap(A, MB2, MB2, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED,
                                                      FAR), "atomic"),
    "guard_install": (with_far, lambda m, x: x["p"].madvise(FAR + MB2 - 2 * PG, 4 * PG, mmemu.MADV_GUARD_INSTALL),
                      "atomic"),
    "truncate_shared_file": (forked, lambda m, x: x["f"].truncate(PG), "atomic"),
    "execve": (setup, lambda m, x: x["p"].execve(), "atomic"),
    "fork_with_swap_entries": (swapped, lambda m, x: x["p"].fork(), "atomic"),
    "swap_in_faults": (swapped, lambda m, x: x["p"].write(A + 4 * PG, b"s" * (3 * PG)), "partial"),
    "spawn": (setup, lambda m, x: m.spawn(), "atomic"),
    "mmap_populate": (setup, lambda m, x: x["p"].mmap(FAR, 6 * PG, RW, PRIV | MAP_FIXED | MAP_POPULATE),
                      "ignored"),
    "file_write": (setup, lambda m, x: x["f"].write(PG, b"W" * (5 * PG)), "short"),
}


# operations that allocate only to break COW-shared page tables
NEED_SHARED_TABLES = {"munmap_part_of_shared_span", "mprotect_every_span", "madvise_dontneed",
                      "truncate_shared_file"}


def teardown(m, free_at_boot):
    for proc in list(m.processes):
        proc.exit()
    for f in list(m._files.values()):
        f.unlink()
    m.check()
    assert mi(m, "MemFree") == free_at_boot, "frames leaked"
    assert m.phys.reservation_depth == 0


def fresh(setup_fn):
    m = mmemu.Machine("64M")
    free = mi(m, "MemFree")
    return m, free, setup_fn(m)


@pytest.mark.parametrize("name", sorted(OPS))
def test_fail_every_allocation(name, fork_design):
    setup_fn, op, kind = OPS[name]
    m, free, ctx = fresh(setup_fn)
    calls = m.phys.alloc_calls
    want_result = op(m, ctx)
    n = m.phys.alloc_calls - calls
    want = state(m, vmstat=False)
    m.check()
    teardown(m, free)
    if n == 0:
        # only the page-table breaks allocate nothing, and only without COW page tables;
        # then they succeed even when every allocation would fail
        assert name in NEED_SHARED_TABLES and fork_design == "classic", name
        m, free, ctx = fresh(setup_fn)
        m.fail_page_alloc(1, times=-1)
        op(m, ctx)
        m.fail_page_alloc(0)
        assert state(m, vmstat=False) == want
        teardown(m, free)
    for k in range(1, n + 1):
        m, free, ctx = fresh(setup_fn)
        before = state(m)
        m.fail_page_alloc(k)
        if kind == "ignored":
            op(m, ctx)
        elif kind == "short":
            got = op(m, ctx)
            assert 0 < got < want_result, got
        else:
            with pytest.raises(mmemu.MMError) as e:
                op(m, ctx)
            assert e.value.errno == errno.ENOMEM, e.value
        assert not m.phys.fail_pending, f"the {k}-th allocation was never attempted"
        m.fail_page_alloc(0)
        m.check()
        after = state(m)
        if kind == "atomic":
            assert after == before, f"allocation {k}/{n} failed and the machine changed"
        else:
            _assert_progress_within(before, after, want)
        if kind == "short":         # write the rest, as a program does after a short write
            ctx["f"].write(PG + got, b"W" * (5 * PG - got))
        elif kind == "ignored":     # fault the rest in, as the program's accesses would
            ctx["p"].touch(FAR, 6 * PG)
        else:
            op(m, ctx)
        assert state(m, vmstat=False) == want, f"retry after failing allocation {k}/{n} differs"
        m.check()
        teardown(m, free)


def _assert_progress_within(before, after, want):
    """A partial outcome lies between the state before and the undisturbed result: every
    page present after the failure maps the frame it mapped before or the frame it maps
    in the result (its exclusive bit may differ: the other side of a COW may not have
    copied yet), and every page present before is still present."""
    pfn = np.uint64((1 << 55) - 1)

    def pages(st, pid):
        return dict(st[pid]["pagemap"]) if pid in st else {}

    for pid in after:
        if not isinstance(pid, int):
            continue
        old, final = pages(before, pid), pages(want, pid)
        for start, raw in pages(after, pid).items():
            got = np.frombuffer(raw, dtype=np.uint64)
            present = (got >> np.uint64(63)) == 1
            ok = ~present
            for ref in (old, final):
                if start in ref:
                    r = np.frombuffer(ref[start], dtype=np.uint64)
                    n = min(len(r), len(got))
                    ok[:n] |= ((r[:n] >> np.uint64(63)) == 1) & ((r[:n] & pfn) == (got[:n] & pfn))
            assert ok.all(), f"pid {pid}: a page at {start:#x} maps a frame of neither state"
            if start in old:
                was = (np.frombuffer(old[start], dtype=np.uint64) >> np.uint64(63)) == 1
                assert not (was & ~present).any(), f"pid {pid}: a present page went away at {start:#x}"


def test_touch_keeps_the_pages_before_the_failing_one():
    """A fault that cannot get a frame fails at that page; the pages before it stay."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 16 * PG, RW, PRIV)
    p.touch(a, PG)                   # tables exist now: every further attempt is a data page
    m.fail_page_alloc(5)
    with pytest.raises(mmemu.MMError) as e:
        p.touch(a, 16 * PG)
    assert e.value.errno == errno.ENOMEM
    present = (p.pagemap(a, 16) >> np.uint64(63)).tolist()
    assert present == [1] * 5 + [0] * 11    # page 0 was there; pages 1-4 got frames 1-4
    assert p.status()["RssAnon"] == 5 * 4
    m.check()


def test_cow_fault_that_breaks_a_table_then_fails_keeps_the_private_table(fork_design):
    """With COW page tables a write fault first copies the shared table, then the page; if
    the page cannot be had, the private table stays (the series' break_cow_pte has no
    undo, like the page tables a failed fault allocates) and nothing else changes."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(A, MB2, RW, PRIV | MAP_FIXED)
    p.write(a, b"x" * (4 * PG))
    c = p.fork()
    pte_before = c.status()["VmPTE"]
    m.fail_page_alloc(2 if fork_design != "classic" else 1)
    with pytest.raises(mmemu.MMError):
        c.write(a, b"y")
    assert c.read(a, 1) == b"x" and p.read(a, 1) == b"x"
    grown = {"classic": 0, "cow-deferred": 4, "cow-eager": 0}[fork_design]
    assert c.status()["VmPTE"] == pte_before + grown   # eager counted the table at fork
    m.check()
    c.write(a, b"y")
    assert c.read(a, 1) == b"y" and p.read(a, 1) == b"x"
    m.check()


def test_every_allocation_failing():
    """fail_page_alloc(1, times=-1): nothing can be allocated; every syscall that needs a
    frame fails with ENOMEM and changes nothing; the rest still works."""
    m = mmemu.Machine("64M")
    free = mi(m, "MemFree")
    x = with_far(m)
    p = x["p"]
    before = state(m)
    m.fail_page_alloc(1, times=-1)
    for call in (lambda: p.fork(), lambda: m.spawn(), lambda: p.execve(),
                 lambda: p.write(A + 9 * PG, b"n"), lambda: p.touch(FAR, PG),
                 lambda: p.mremap(A, MB2, MB2, mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED, FAR + 4 * MB2)):
        with pytest.raises(mmemu.MMError) as e:
            call()
        assert e.value.errno == errno.ENOMEM
    assert state(m, vmstat=False) == {k: v for k, v in before.items() if k != "vmstat"}
    assert p.read(A + 5 * PG, 3) == b"\x01\x01\x01"       # reads need no frame
    p.mprotect(A, MB2, PROT_READ)                         # nor does a private mprotect
    p.munmap(A + MB2, MB2)
    m.fail_page_alloc(0)
    m.check()
    teardown(m, free)


@pytest.mark.parametrize("what", ["data", "fork", "cow"])
def test_whole_machine_out_of_memory(what, fork_design):
    """A machine genuinely out of frames: ENOMEM, never a crash or a leak; everything is
    given back when the processes exit."""
    m = mmemu.Machine("2M")          # 512 frames
    free = mi(m, "MemFree")
    p = m.spawn()
    a = p.mmap(0, 4 << 20, RW, PRIV)
    with pytest.raises(mmemu.MMError) as e:
        p.write(a, b"z" * (4 << 20))
    assert e.value.errno == errno.ENOMEM
    assert mi(m, "MemFree") == 0
    m.check()
    if what == "fork":
        before = state(m)
        with pytest.raises(mmemu.MMError) as e:
            p.fork()
        assert e.value.errno == errno.ENOMEM and state(m) == before
    elif what == "cow":
        p.munmap(a + (1 << 20), 3 << 20)                # room for a fork, not for the copies
        c = p.fork()
        with pytest.raises(mmemu.MMError) as e:
            c.write(a, b"c" * (1 << 20))
        assert e.value.errno == errno.ENOMEM
        assert p.read(a, 4) == b"zzzz"
        m.check()
    for proc in list(m.processes):
        proc.exit()
    m.check()
    assert mi(m, "MemFree") == free


def test_fail_page_alloc_arguments():
    m = mmemu.Machine("16M")
    with pytest.raises(ValueError):
        m.fail_page_alloc(-1)
    with pytest.raises(ValueError):
        m.fail_page_alloc(3, times=0)
    m.fail_page_alloc(2)
    assert m.phys.fail_pending
    m.fail_page_alloc(0)
    assert not m.phys.fail_pending
    p = m.spawn()
    p.touch(p.mmap(0, PG, RW, PRIV), PG)
    with pytest.raises(RuntimeError):
        m.phys.release()               # no reservation is open
    with pytest.raises(RuntimeError):
        m.phys.reserve(1, scope=False)
