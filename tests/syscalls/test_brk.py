"""brk: LTP brk01, brk02 and SCENARIOS 55 (SEMANTICS 1.11, mm/mmap.c brk/do_brk_flags)."""
from __future__ import annotations

from mmemu import MAP_FIXED, PROT_READ
from mmemu.layout import DEFAULT_BRK
from conftest import PG, RW, SHARED


def test_spawn_sets_break(m, p):
    assert p.mm.start_brk == p.mm.brk == DEFAULT_BRK
    assert p.brk(0) == DEFAULT_BRK                 # below start_brk: the current break
    assert p.mm.vmas == []


def test_ltp_brk01_cycles(m, p):
    """LTP brk01: +2p-1, same, -(2p-1) cycles; new memory is writable."""
    cur = p.brk(0)
    for i in range(33):
        if i % 3 == 0:
            new = cur + 2 * PG - 1
        elif i % 3 == 1:
            new = cur
        else:
            new = cur - (2 * PG - 1)
        assert p.brk(new) == new
        assert p.brk(0) == new
        if new > cur:
            p.write(cur, b"\xff" * (new - cur))
        cur = new
    assert [(v.start, v.end) for v in p.mm.vmas] == []
    assert p.status()["VmData"] == 0


def test_ltp_brk02_shrink_after_mprotect_split(m, p):
    """LTP brk02: grow 2 pages, mprotect one (VMA split), shrink back over both VMAs."""
    cur = p.brk(0)
    assert p.brk(cur + 2 * PG) == cur + 2 * PG
    assert p.mprotect(cur + PG, PG, PROT_READ) == 0
    assert len(p.mm.vmas) == 2
    assert p.brk(cur) == cur
    assert p.mm.vmas == []
    assert p.status()["VmSize"] == 0 and p.status()["VmData"] == 0


def test_grow_extends_and_names_heap(m, p):
    b = p.brk(0)
    assert p.brk(b + PG) == b + PG
    assert p.brk(b + 3 * PG) == b + 3 * PG
    assert [(v.start, v.end) for v in p.mm.vmas] == [(b, b + 3 * PG)]
    assert p.maps()[0].endswith("[heap]") and " rw-p " in p.maps()[0]
    assert p.status()["VmData"] == 12 and p.status()["VmSize"] == 12
    p.write(b, b"heap")
    assert p.status()["RssAnon"] == 4


def test_same_page_updates_only_brk(m, p):
    b = p.brk(0)
    assert p.brk(b + 10) == b + 10
    assert p.brk(b + 100) == b + 100           # same page-aligned end: no VMA change
    assert len(p.mm.vmas) == 1 and p.mm.brk == b + 100


def test_grow_blocked_by_mapping_returns_old(m, p):
    b = p.brk(0)
    p.mmap(b + 4 * PG, PG, RW, SHARED | MAP_FIXED)
    before = p.status()
    assert p.brk(b + 4 * PG) == b                 # newbrk + PAGE_SIZE > next->vm_start
    assert p.brk(b + 3 * PG) == b + 3 * PG
    assert before["VmSize"] == 4


def test_shrink_of_unmapped_heap_fails(m, p):
    b = p.brk(0)
    assert p.brk(b + 2 * PG) == b + 2 * PG
    p.munmap(b, 2 * PG)
    assert p.brk(b) == b + 2 * PG               # no VMA in [newbrk, oldbrk): old break


def test_brk_after_fork_makes_new_vma(m, p):
    """do_brk_flags cannot extend a VMA whose anon_vma was cloned at fork."""
    b = p.brk(0)
    p.brk(b + PG)
    p.write(b, b"x")
    c = p.fork()
    assert c.brk(b + 2 * PG) == b + 2 * PG
    assert len(c.mm.vmas) == 2
    assert p.brk(b + 2 * PG) == b + 2 * PG
    assert len(p.mm.vmas) == 1
