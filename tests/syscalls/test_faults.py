"""Page faults and the zero page (SCENARIOS section A, items 1-6) plus access mechanics.

Every expectation is derived from the Linux rules in SEMANTICS.md (R1.x, R2.1, R4.x) and,
where noted, checked against the real kernel (Linux 6.18 x86-64, THP madvise, no swap).
"""
from __future__ import annotations

import pytest

import mmemu
from mmemu import (
    MAP_FIXED, PROT_EXEC, PROT_NONE, PROT_READ,
    PROT_WRITE,
)

from conftest import PG, PRIV, RW, SHARED, mi, per_design, st

KB = 1024

# x86-64 PTE bits (arch/x86/include/asm/pgtable_types.h)
P_BIT = 1 << 0
RW_BIT = 1 << 1
US_BIT = 1 << 2
A_BIT = 1 << 5
D_BIT = 1 << 6
SPECIAL_BIT = 1 << 9
NX_BIT = 1 << 63
PFN_MASK = ((1 << 52) - 1) & ~0xFFF

# /proc/PID/pagemap bits (Documentation/admin-guide/mm/pagemap.rst)
PM_PRESENT = 1 << 63
PM_FILE = 1 << 61          # file-page or shared-anon
PM_EXCLUSIVE = 1 << 56     # page exclusively mapped
PM_PFN = (1 << 55) - 1

PG_ANON_EXCLUSIVE = 128

# A fresh 512 GiB PGD slot, 1 GiB aligned, far from mmap_base: the first touch there
# needs a PUD table, a PMD table and a PTE table.
BASE = 0x100000000000


def pte_of(proc, addr):
    return proc.mm.core.walk(addr)[3]


def pte_pfn(e):
    return (e & PFN_MASK) >> 12


def pm_pfn(proc, addr):
    return int(proc.pagemap(addr, 1)[0]) & PM_PFN


# ---------------------------------------------------------------------------------- A.1
def test_read_then_write_anon(m, p):
    """SCENARIOS A.1; memory.c:do_anonymous_page; cow.c run_with_zeropage setup.

    Read of a fresh private anon page maps the zero page: value 0, no RSS, no AnonPages,
    but __handle_mm_fault allocates PUD+PMD (and do_anonymous_page the PTE table), so
    VmPTE +12 kB (verified on Linux 6.18: read of a fresh 512 GiB slot -> VmPTE +12,
    RssAnon +0). The write then allocates exactly one zeroed page.
    """
    a = p.mmap(0, PG, RW, PRIV)
    free0, pt0, anon0 = mi(m, "MemFree"), mi(m, "PageTables"), mi(m, "AnonPages")
    assert st(p, "VmPTE") == 0          # mmap allocates no tables

    assert p.read(a, PG) == bytes(PG)
    assert st(p, "RssAnon") == 0
    assert st(p, "VmRSS") == 0
    assert mi(m, "AnonPages") == anon0
    assert st(p, "VmPTE") == 12               # PUD + PMD + PTE table
    assert mi(m, "PageTables") == pt0 + 12    # same three tables, system-wide
    assert mi(m, "MemFree") == free0 - 12     # only the three table pages

    p.write(a, b"\x5a")
    assert st(p, "RssAnon") == 4
    assert st(p, "VmRSS") == 4
    assert mi(m, "AnonPages") == anon0 + 4
    assert mi(m, "MemFree") == free0 - 12 - 4
    assert st(p, "VmPTE") == 12               # no new table for the same page
    assert mi(m, "PageTables") == pt0 + 12
    assert p.read(a, PG) == b"\x5a" + bytes(PG - 1)


# ---------------------------------------------------------------------------------- A.2
def test_zero_page_is_not_rss(m, p):
    """SCENARIOS A.2; task_mmu.c:smaps_pte_entry; memory.c:vm_normal_page.

    Reading N pages maps the zero page N times read-only; the zero page is never counted
    (no RSS, no smaps Rss, no mapcount) (verified on Linux 6.18: pagemap shows one shared
    PFN with kpagecount 0, exclusive bit clear).
    """
    n = 16
    a = p.mmap(0, n * PG, RW, PRIV)
    z = m.phys.zero_pfn
    zref, zmap = int(m.phys.refcount[z]), int(m.phys.mapcount[z])
    anon0, free0 = mi(m, "AnonPages"), mi(m, "MemFree")

    assert p.read(a, n * PG) == bytes(n * PG)

    assert st(p, "VmRSS") == 0
    assert st(p, "RssAnon") == 0
    sm = [e for e in p.smaps() if e["start"] == a]
    assert len(sm) == 1
    assert sm[0]["Rss"] == 0 and sm[0]["Pss"] == 0 and sm[0]["Anonymous"] == 0
    assert sm[0]["Private_Clean"] == 0 and sm[0]["Private_Dirty"] == 0
    for i in range(n):
        e = pte_of(p, a + i * PG)
        assert e & P_BIT
        assert not e & RW_BIT                       # the zero page is never writable
        assert e & SPECIAL_BIT                      # pte_mkspecial
        assert pte_pfn(e) == z
    pm = p.pagemap(a, n)
    assert all(int(v) == PM_PRESENT | z for v in pm)  # no file bit, no exclusive bit
    assert int(m.phys.refcount[z]) == zref
    assert int(m.phys.mapcount[z]) == zmap
    assert mi(m, "AnonPages") == anon0
    assert mi(m, "MemFree") == free0 - 12             # tables only, no data page


# ---------------------------------------------------------------------------------- A.3
def test_write_after_zero_page_read(m, p):
    """SCENARIOS A.3; memory.c:do_wp_page -> wp_page_copy with pfn_is_zero.

    The write fault on the zero-page PTE allocates a new *zeroed* page (nothing copied),
    RssAnon +4 kB, NR_ANON_MAPPED +1; the new page is exclusive (AE), mapcount 1.
    """
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.read(a, 2 * PG)
    z = m.phys.zero_pfn
    ev0 = m.vmstat()
    anon0, free0 = mi(m, "AnonPages"), mi(m, "MemFree")

    p.write(a + PG + 100, b"abc")

    d = m.vmstat() - ev0
    assert d["pgfault"] == 1
    assert d["cow_fault"] == 1
    assert d["cow_zero_fault"] == 1
    assert d["pages_copied"] == 0
    assert d["pgalloc"] == 1
    assert d["wp_reuse"] == 0
    assert d["fault_anon"] == 0
    assert d["fault_zero_page"] == 0
    assert st(p, "RssAnon") == 4
    assert mi(m, "AnonPages") == anon0 + 4
    assert mi(m, "MemFree") == free0 - 4
    pfn = pm_pfn(p, a + PG)
    assert pfn != z
    assert int(m.phys.mapcount[pfn]) == 1
    assert int(m.phys.refcount[pfn]) == 1
    assert int(m.phys.flags[pfn]) & PG_ANON_EXCLUSIVE
    assert pte_pfn(pte_of(p, a)) == z                   # the other page still maps zero
    assert p.read(a, 2 * PG) == bytes(PG + 100) + b"abc" + bytes(PG - 103)


# ---------------------------------------------------------------------------------- A.4
def test_prot_write_only_is_readable(m, p):
    """SCENARIOS A.4; fault.c:access_error (vma_is_accessible = READ|WRITE|EXEC); LTP mmap05.

    mmap(PROT_WRITE) then read -> 0, no signal; the zero page is mapped (verified on Linux
    6.18: a read of a PROT_WRITE-only page returns zeros and pagemap shows the zero PFN).
    """
    a = p.mmap(0, PG, PROT_WRITE, PRIV)
    assert p.read(a, 8) == bytes(8)
    assert pm_pfn(p, a) == m.phys.zero_pfn
    assert st(p, "RssAnon") == 0
    p.write(a, b"w")
    assert p.read(a, 2) == b"w\x00"
    assert st(p, "RssAnon") == 4


def test_prot_exec_only_is_readable(m, p):
    """SCENARIOS A.4 (exec variant); fault.c:access_error: PROT_EXEC VMAs are readable on x86."""
    a = p.mmap(0, PG, PROT_EXEC, PRIV)
    assert p.read(a, 4) == bytes(4)
    assert pm_pfn(p, a) == m.phys.zero_pfn
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a, b"x")
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a


def test_prot_none_access_segv_accerr(m, p):
    """SCENARIOS A.4; fault.c:access_error; LTP mmap05 / mprotect04.

    Read or write of a PROT_NONE VMA -> SIGSEGV SEGV_ACCERR at the exact address. The check
    happens before handle_mm_fault, so no table, no page and no fault is accounted.
    """
    a = p.mmap(0, 2 * PG, PROT_NONE, PRIV)
    ev0 = m.vmstat()
    free0 = mi(m, "MemFree")
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.read(a + PG + 7, 1)
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a + PG + 7
    assert exc.value.signo == 11
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a + 3, b"x")
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a + 3
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.touch(a, 2 * PG, write=False)
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a
    d = m.vmstat() - ev0
    assert d["pgfault"] == 0
    assert d["pgtable_alloc"] == 0
    assert st(p, "VmPTE") == 0
    assert mi(m, "MemFree") == free0


# ---------------------------------------------------------------------------------- A.5
def test_write_to_readonly_private_anon_segv_accerr(m, p):
    """SCENARIOS A.5; fault.c:access_error (write to !VM_WRITE); LTP mprotect02 first half.

    Both before any fault and after a read mapped the zero page: SEGV_ACCERR at the exact
    address, and the zero-page PTE is left as it was.
    """
    a = p.mmap(0, 2 * PG, PROT_READ, PRIV)
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a + 5, b"x")
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a + 5
    assert st(p, "VmPTE") == 0                   # the failed write allocated nothing

    assert p.read(a, 1) == b"\x00"
    before = pte_of(p, a)
    ev0 = m.vmstat()
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a + 100, b"y")
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == a + 100
    assert pte_of(p, a) == before
    d = m.vmstat() - ev0
    assert d["pgfault"] == 0 and d["pgalloc"] == 0
    assert st(p, "RssAnon") == 0


def test_unmapped_access_segv_maperr(m, p):
    """SCENARIOS A.5; fault.c (no VMA -> SEGV_MAPERR); LTP mprotect02, munmap01.

    Read or write with no VMA -> SEGV_MAPERR at the exact address, also for a page that was
    munmapped out of the middle of a VMA (the rest still works).
    """
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.read(BASE + 0x123, 1)
    assert exc.value.code == "SEGV_MAPERR"
    assert exc.value.address == BASE + 0x123
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(BASE + 0x456, b"z")
    assert exc.value.code == "SEGV_MAPERR"
    assert exc.value.address == BASE + 0x456
    assert st(p, "VmPTE") == 0

    a = p.mmap(BASE, 3 * PG, RW, PRIV | MAP_FIXED)
    p.write(a, b"A" * (3 * PG))
    p.munmap(a + PG, PG)
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.read(a + PG + 9, 1)
    assert exc.value.code == "SEGV_MAPERR"
    assert exc.value.address == a + PG + 9
    assert p.read(a, 2) == b"AA"
    assert p.read(a + 2 * PG, 2) == b"AA"
    assert st(p, "RssAnon") == 8


# ---------------------------------------------------------------------------------- A.6
def test_shared_anon_read_allocates_shmem(m, p):
    """SCENARIOS A.6; mmap.c:do_mmap (MAP_SHARED|MAP_ANONYMOUS = shmem); meminfo.c.

    Shmem has no zero page: a read fault on a hole allocates a page-cache page and maps it:
    RssShmem +4, Shmem +4, Mapped +4, AnonPages +0, RssAnon +0. MemFree drops by the page
    and the three tables.
    """
    a = p.mmap(0, PG, RW, SHARED)
    free0 = mi(m, "MemFree")
    shm0, mapped0, anon0 = mi(m, "Shmem"), mi(m, "Mapped"), mi(m, "AnonPages")
    ev0 = m.vmstat()

    assert p.read(a, PG) == bytes(PG)

    assert st(p, "RssShmem") == 4
    assert st(p, "RssAnon") == 0
    assert st(p, "RssFile") == 0
    assert st(p, "VmRSS") == 4
    assert mi(m, "Shmem") == shm0 + 4
    assert mi(m, "Mapped") == mapped0 + 4
    assert mi(m, "AnonPages") == anon0
    assert st(p, "VmPTE") == 12
    assert mi(m, "MemFree") == free0 - 4 - 12
    d = m.vmstat() - ev0
    assert d["fault_file"] == 1
    assert d["fault_file_alloc"] == 1
    assert d["fault_zero_page"] == 0
    pfn = pm_pfn(p, a)
    assert pfn != m.phys.zero_pfn
    assert int(m.phys.mapcount[pfn]) == 1
    assert int(m.phys.refcount[pfn]) == 2        # the PTE + the page cache


def test_shared_anon_write_after_read_no_new_page(m, p):
    """SCENARIOS A.6 follow-up; R2.1 (shared writable vm_page_prot has RW, no write-notify
    for shmem) and R4.3 (write to a writable PTE only sets A/D).

    The read fault already maps the shmem page writable, so the write takes no fault and
    allocates nothing; the data lands in the same page.
    """
    a = p.mmap(0, PG, RW, SHARED)
    p.read(a, 1)
    pfn = pm_pfn(p, a)
    assert pte_of(p, a) & RW_BIT
    ev0 = m.vmstat()
    p.write(a + 10, b"shm")
    d = m.vmstat() - ev0
    assert d["pgfault"] == 0
    assert d["pgalloc"] == 0
    assert pm_pfn(p, a) == pfn
    assert pte_of(p, a) & D_BIT
    assert m.phys.frame(pfn)[10:13] == b"shm"
    assert st(p, "RssShmem") == 4 and st(p, "RssAnon") == 0


# ------------------------------------------------------------------ touch() and counters
def test_touch_read_counters(m, p):
    """SCENARIOS A.2 via touch(write=False); memory.c:handle_pte_fault / do_anonymous_page.

    One read fault per page, each mapping the zero page; a second read pass takes no fault
    (the PTEs are present and readable).
    """
    n = 8
    a = p.mmap(0, n * PG, RW, PRIV)
    ev0 = m.vmstat()
    p.touch(a, n * PG, write=False)
    d = m.vmstat() - ev0
    assert d["pgfault"] == n
    assert d["fault_zero_page"] == n
    assert d["fault_anon"] == 0
    assert d["pgalloc"] == 0
    assert d["pgtable_alloc"] == 3            # PUD, PMD, PTE
    assert st(p, "VmRSS") == 0

    ev1 = m.vmstat()
    p.touch(a, n * PG, write=False)
    d = m.vmstat() - ev1
    assert d["pgfault"] == 0
    assert d["pgalloc"] == 0


def test_touch_write_counters_fresh(m, p):
    """SCENARIOS A.1 via touch(write=True); memory.c:do_anonymous_page (write).

    One fault and one new zeroed page per page; a second write pass takes no fault since
    the PTEs are writable; a read pass afterwards takes none either.
    """
    n = 8
    a = p.mmap(0, n * PG, RW, PRIV)
    ev0 = m.vmstat()
    p.touch(a, n * PG, write=True)
    d = m.vmstat() - ev0
    assert d["pgfault"] == n
    assert d["fault_anon"] == n
    assert d["pgalloc"] == n
    assert d["fault_zero_page"] == 0
    assert d["cow_fault"] == 0
    assert st(p, "RssAnon") == 4 * n
    assert mi(m, "AnonPages") == 4 * n

    ev1 = m.vmstat()
    p.touch(a, n * PG, write=True)
    p.touch(a, n * PG, write=False)
    d = m.vmstat() - ev1
    assert d["pgfault"] == 0
    assert d["pgalloc"] == 0
    assert st(p, "RssAnon") == 4 * n


def test_touch_write_after_read_counters(m, p):
    """SCENARIOS A.3 via touch; memory.c:wp_page_copy (zero page -> new zeroed page).

    Every page: one write-protect fault, one new page, no copy, no reuse.
    """
    n = 8
    a = p.mmap(0, n * PG, RW, PRIV)
    p.touch(a, n * PG, write=False)
    ev0 = m.vmstat()
    p.touch(a, n * PG, write=True)
    d = m.vmstat() - ev0
    assert d["pgfault"] == n
    assert d["cow_fault"] == n
    assert d["cow_zero_fault"] == n
    assert d["pages_copied"] == 0
    assert d["pgalloc"] == n
    assert d["wp_reuse"] == 0
    assert d["pgtable_alloc"] == 0
    assert st(p, "RssAnon") == 4 * n
    assert mi(m, "AnonPages") == 4 * n


def test_touch_partial_page_range(m, p):
    """touch() semantics: every page of [addr, addr+length) is accessed once, so an
    unaligned 2-byte range across a page boundary faults exactly two pages."""
    a = p.mmap(0, 4 * PG, RW, PRIV)
    ev0 = m.vmstat()
    p.touch(a + PG - 1, 2, write=True)
    d = m.vmstat() - ev0
    assert d["pgfault"] == 2
    assert d["fault_anon"] == 2
    assert st(p, "RssAnon") == 8
    pm = p.pagemap(a, 4)
    assert [bool(int(v) & PM_PRESENT) for v in pm] == [True, True, False, False]


# --------------------------------------------------------- accesses spanning boundaries
def test_write_read_spanning_page_boundary(m, p):
    """Access mechanics (cow.c-style memset/memcmp over several pages): a 6000-byte write at
    offset 3000 touches pages 0, 1 and 2 and nothing else; bytes outside stay zero."""
    a = p.mmap(0, 4 * PG, RW, PRIV)
    data = bytes((i * 7 + 3) & 0xFF for i in range(6000))
    p.write(a + 3000, data)
    assert st(p, "RssAnon") == 12
    assert mi(m, "AnonPages") == 12
    pm = p.pagemap(a, 4)
    assert [bool(int(v) & PM_PRESENT) for v in pm] == [True, True, True, False]
    assert p.read(a, 4 * PG) == bytes(3000) + data + bytes(4 * PG - 9000)
    assert p.read(a + 4000, 200) == data[1000:1200]


def test_write_read_spanning_two_vmas(m, p):
    """Access mechanics across two adjacent VMAs that cannot merge (private anon followed by
    shared anon): one write crossing the boundary faults one anon page and one shmem page;
    a read across the boundary returns exactly what was written."""
    a = p.mmap(BASE, PG, RW, PRIV | MAP_FIXED)
    b = p.mmap(BASE + PG, PG, RW, SHARED | MAP_FIXED)
    assert b == a + PG
    assert len(p.maps()) == 2
    payload = b"0123456789abcdef"
    p.write(b - 8, payload)
    assert st(p, "RssAnon") == 4
    assert st(p, "RssShmem") == 4
    assert mi(m, "AnonPages") == 4
    assert mi(m, "Shmem") == 4
    assert mi(m, "Mapped") == 4
    assert p.read(b - 8, 16) == payload
    assert p.read(a, PG) == bytes(PG - 8) + payload[:8]
    assert p.read(b, PG) == payload[8:] + bytes(PG - 8)
    pa, pb = (int(v) for v in p.pagemap(a, 2))
    assert pa & (PM_PRESENT | PM_FILE | PM_EXCLUSIVE) == PM_PRESENT | PM_EXCLUSIVE
    assert pb & (PM_PRESENT | PM_FILE | PM_EXCLUSIVE) == PM_PRESENT | PM_FILE | PM_EXCLUSIVE


def test_read_spanning_into_unmapped_maperr(m, p):
    """fault.c: an access that runs off the end of a VMA into a hole faults with SEGV_MAPERR
    at the first unmapped address (the first byte of the next page)."""
    a = p.mmap(BASE, PG, RW, PRIV | MAP_FIXED)
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.read(a + PG - 4, 8)
    assert exc.value.code == "SEGV_MAPERR"
    assert exc.value.address == a + PG
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a + PG - 4, b"12345678")
    assert exc.value.code == "SEGV_MAPERR"
    assert exc.value.address == a + PG


def test_write_spanning_into_readonly_vma_accerr(m, p):
    """fault.c:access_error: a write that crosses from a RW VMA into an adjacent PROT_READ
    VMA faults with SEGV_ACCERR at the first byte of the read-only VMA."""
    p.mmap(BASE, PG, RW, PRIV | MAP_FIXED)
    b = p.mmap(BASE + PG, PG, PROT_READ, PRIV | MAP_FIXED)
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(b - 2, b"abcd")
    assert exc.value.code == "SEGV_ACCERR"
    assert exc.value.address == b
    assert p.read(b, 4) == bytes(4)
    # A forward copy (rep movsb) commits the bytes before the faulting one.
    assert p.read(b - 2, 2) == b"ab"
    assert st(p, "RssAnon") == 4


def test_write_across_a_pud_boundary_allocates_each_table_once(m, p):
    """memory.c:__handle_mm_fault: one write from the last two pages below a 1 GiB boundary
    into the first two above it (a fresh PGD slot) faults each page once and allocates a
    PUD table, then a PMD and a PTE table on each side; the bytes land where written."""
    a = p.mmap(BASE + (1 << 30) - 2 * PG, 4 * PG, RW, PRIV | MAP_FIXED)
    data = bytes((i * 13 + 5) & 0xFF for i in range(4 * PG - 100))
    ev0 = m.vmstat()
    p.write(a + 50, data)
    d = m.vmstat() - ev0
    assert d["pgfault"] == 4 and d["fault_anon"] == 4
    assert d["pgtable_alloc"] == 5
    assert st(p, "RssAnon") == 16
    assert p.read(a, 4 * PG) == bytes(50) + data + bytes(50)
    assert len({pm_pfn(p, a + i * PG) for i in range(4)}) == 4


def test_child_write_across_two_pte_tables_copies_every_page(m, p, fork_design):
    """memory.c:wp_page_copy, page by page, after a fork: one child write over the last four
    pages of a 2 MiB span and the first four of the next copies all eight (pages_copied).
    With COW page tables each span's shared PTE table is duplicated at its first fault
    (handle_cow_pte_fault) and the rest of the span's faults land in the child's copy."""
    a = p.mmap(BASE + (2 << 20) - 4 * PG, 8 * PG, RW, PRIV | MAP_FIXED)
    parent = bytes((i * 7 + 1) & 0xFF for i in range(8 * PG))
    p.write(a, parent)
    c = p.fork()
    child = bytes((i * 11 + 3) & 0xFF for i in range(8 * PG - 2))
    ev0 = m.vmstat()
    c.write(a + 1, child)
    d = m.vmstat() - ev0
    assert d["pgfault"] == 8 and d["cow_fault"] == 8 and d["pages_copied"] == 8
    assert d["cow_pte_tables_duplicated"] == per_design(fork_design, 0, deferred=2, eager=2)
    assert c.read(a, 8 * PG) == parent[:1] + child + parent[-1:]
    assert p.read(a, 8 * PG) == parent
    pfns = [pm_pfn(proc, a + i * PG) for proc in (p, c) for i in range(8)]
    assert len(set(pfns)) == 16
    assert st(c, "RssAnon") == 32 and st(p, "RssAnon") == 32


# ------------------------------------------------------------------------------ pagemap
def test_pagemap_bits_zero_anon_shmem(m, p):
    """task_mmu.c:pte_to_pagemap_entry. Verified on Linux 6.18 (root, PFNs visible):
    zero page -> present, PFN = zero pfn, no exclusive, no file bit;
    written private anon -> present | exclusive | PFN;
    shmem (MAP_SHARED|MAP_ANONYMOUS) after a read -> present | file | exclusive | PFN;
    unfaulted page in a VMA and unmapped address -> 0."""
    z = m.phys.zero_pfn
    a = p.mmap(BASE, 3 * PG, RW, PRIV | MAP_FIXED)
    s = p.mmap(BASE + (1 << 30), PG, RW, SHARED | MAP_FIXED)
    p.read(a, 1)
    p.write(a + PG, b"x")
    p.read(s, 1)
    mask = PM_PRESENT | PM_FILE | PM_EXCLUSIVE | PM_PFN

    zero_e, anon_e, none_e = (int(v) & mask for v in p.pagemap(a, 3))
    assert zero_e == PM_PRESENT | z
    anon_pfn = pte_pfn(pte_of(p, a + PG))
    assert anon_e == PM_PRESENT | PM_EXCLUSIVE | anon_pfn
    assert anon_pfn != z
    assert none_e == 0
    shm_pfn = pte_pfn(pte_of(p, s))
    assert int(p.pagemap(s, 1)[0]) & mask == PM_PRESENT | PM_FILE | PM_EXCLUSIVE | shm_pfn
    assert int(p.pagemap(BASE + (2 << 30), 1)[0]) == 0          # no VMA at all
    assert len({z, anon_pfn, shm_pfn}) == 3


def test_pagemap_exclusive_bit_cleared_when_shared(m, p, fork_design):
    """task_mmu.c:pte_to_pagemap_entry (PM_MMAP_EXCLUSIVE iff the page's mapcount is 1).
    Verified on Linux 6.18: after fork the anon page shows exclusive=0 in both processes;
    a shmem page mapped by two processes also loses the bit; the file bit stays.

    COW page tables (README table): eager takes the mapcount at fork (not exclusive, as
    classic); deferred does not, so the page still reads as exclusively mapped in both
    processes until a table copy. The shmem mapping is never copied nor shared at fork."""
    a = p.mmap(BASE, PG, RW, PRIV | MAP_FIXED)
    s = p.mmap(BASE + (1 << 30), PG, RW, SHARED | MAP_FIXED)
    p.write(a, b"x")
    p.write(s, b"y")
    c = p.fork()
    pfn = pte_pfn(pte_of(p, a))
    excl = per_design(fork_design, 0, deferred=PM_EXCLUSIVE)
    assert int(p.pagemap(a, 1)[0]) == PM_PRESENT | excl | pfn
    assert int(c.pagemap(a, 1)[0]) == PM_PRESENT | excl | pfn
    assert c.read(a, 1) == b"x"
    spfn = pte_pfn(pte_of(p, s))
    # shmem is not copied at fork: still exclusive in P, not present in C
    assert int(p.pagemap(s, 1)[0]) == PM_PRESENT | PM_FILE | PM_EXCLUSIVE | spfn
    assert int(c.pagemap(s, 1)[0]) == 0
    assert c.read(s, 1) == b"y"
    assert int(p.pagemap(s, 1)[0]) == PM_PRESENT | PM_FILE | spfn
    assert int(c.pagemap(s, 1)[0]) == PM_PRESENT | PM_FILE | spfn
    # the child's write COWs (after a table copy): both pages exclusive in every design
    c.write(a, b"c")
    cpfn = pte_pfn(pte_of(c, a))
    assert cpfn != pfn
    assert int(p.pagemap(a, 1)[0]) == PM_PRESENT | PM_EXCLUSIVE | pfn
    assert int(c.pagemap(a, 1)[0]) == PM_PRESENT | PM_EXCLUSIVE | cpfn
    assert p.read(a, 1) == b"x" and c.read(a, 1) == b"c"


def test_anon_pte_bits_after_write_fault(m, p):
    """memory.c:do_anonymous_page (write): mk_pte(vm_page_prot) + young + dirty + write.
    vm_page_prot of a private RW VMA is PAGE_COPY = P|US|A|NX (no RW, R2.1); RW and D come
    from the fault. The zero-page PTE of a read fault is P|US|A|NX + special, no RW/D."""
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.read(a, 1)
    p.write(a + PG, b"x")
    ze = pte_of(p, a)
    ae = pte_of(p, a + PG)
    for bit in (P_BIT, US_BIT, A_BIT, NX_BIT, SPECIAL_BIT):
        assert ze & bit
    assert not ze & (RW_BIT | D_BIT)
    for bit in (P_BIT, RW_BIT, US_BIT, A_BIT, D_BIT, NX_BIT):
        assert ae & bit
    assert not ae & SPECIAL_BIT


def test_shared_anon_write_fault_first(m, p):
    """SCENARIOS A.6 variant; memory.c:do_shared_fault: a first *write* to a shmem hole
    allocates the cache page and maps it writable and dirty (no COW, no anon page)."""
    a = p.mmap(0, PG, RW, SHARED)
    ev0 = m.vmstat()
    p.write(a, b"w")
    d = m.vmstat() - ev0
    assert d["pgfault"] == 1
    assert d["fault_file"] == 1 and d["fault_file_alloc"] == 1
    assert d["cow_fault"] == 0 and d["fault_anon"] == 0
    assert d["pgalloc"] == 1
    e = pte_of(p, a)
    assert e & RW_BIT and e & D_BIT and e & P_BIT
    assert st(p, "RssShmem") == 4 and st(p, "RssAnon") == 0
    assert mi(m, "Shmem") == 4 and mi(m, "Mapped") == 4 and mi(m, "AnonPages") == 0


def test_shared_anon_readonly_read_then_write_accerr(m, p):
    """SCENARIOS A.5/A.6: a PROT_READ MAP_SHARED|MAP_ANONYMOUS page: the read allocates the
    shmem page (RssShmem 4) and maps it read-only (vm_page_prot PAGE_READONLY); a write is
    SEGV_ACCERR and changes nothing."""
    a = p.mmap(0, PG, PROT_READ, SHARED)
    assert p.read(a, 4) == bytes(4)
    assert st(p, "RssShmem") == 4
    assert not pte_of(p, a) & RW_BIT
    with pytest.raises(mmemu.SegmentationFault) as exc:
        p.write(a + 1, b"x")
    assert exc.value.code == "SEGV_ACCERR" and exc.value.address == a + 1
    assert p.read(a, 4) == bytes(4)
