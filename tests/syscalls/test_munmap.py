"""munmap(2): errors, access after unmap, holes, page-table freeing, max_map_count.

Sources: SCENARIOS 29-33, LTP testcases/kernel/syscalls/munmap (munmap01-04), SEMANTICS 1.7
(R7.1-R7.3). Page-table numbers were measured on the Linux 6.18 machine the tests run on, in an
otherwise empty 512 GiB span (so VmPTE deltas are exact).
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import MAP_FIXED_NOREPLACE

from conftest import PG, PRIV, RW, anon_line, assert_errno, mi, snapshot, st

M2 = 2 << 20
B = 0x500000000000              # 512 GiB aligned, unused span
TASK_SIZE = 0x7FFFFFFFF000


def mapped(p, addr, length, prot=RW):
    a = p.mmap(addr, length, prot, PRIV | MAP_FIXED_NOREPLACE)
    assert a == addr
    return a


# ----------------------------------------------------------------------------- errors
def test_munmap_errors_einval(m, p):
    """LTP munmap03 + SEMANTICS R7.1: EINVAL for an unaligned start, len 0, a range past
    TASK_SIZE, a start past TASK_SIZE and a length that overflows.

    Verified on Linux 6.18: munmap(B+1, 4096), munmap(B, 0), munmap(0x7ffffffff000, 8192),
    munmap(0x800000000000, 4096), munmap(B, 2**64-4096), munmap(B, 2**64-1),
    munmap(B, 1<<47) -> EINVAL each.
    """
    mapped(p, B, 4 * PG)
    p.write(B, b"\x11" * (4 * PG))
    assert_errno(errno.EINVAL, p.munmap, B + 1, PG)
    assert_errno(errno.EINVAL, p.munmap, B + PG - 1, PG)
    assert_errno(errno.EINVAL, p.munmap, B, 0)
    assert_errno(errno.EINVAL, p.munmap, TASK_SIZE, 2 * PG)
    assert_errno(errno.EINVAL, p.munmap, TASK_SIZE - PG, 2 * PG)
    assert_errno(errno.EINVAL, p.munmap, 0x800000000000, PG)
    assert_errno(errno.EINVAL, p.munmap, B, 2**64 - PG)
    assert_errno(errno.EINVAL, p.munmap, B, 2**64 - 1)
    assert_errno(errno.EINVAL, p.munmap, B, 1 << 47)
    assert p.read(B, 4 * PG) == b"\x11" * (4 * PG)


def test_munmap_hole_returns_zero(m, p):
    """SCENARIO 31 + SEMANTICS R7.1: munmap of a range with no VMA returns 0 and changes nothing.

    Verified on Linux 6.18: munmap of an unmapped page -> 0; munmap(NULL, 4096) -> 0.
    """
    mapped(p, B, 4 * PG)
    p.write(B, b"\x22" * PG)
    before = snapshot(m)
    assert p.munmap(B + 8 * PG, PG) == 0
    assert p.munmap(0, PG) == 0
    assert p.munmap(B - 16 * PG, 16 * PG) == 0         # ends exactly at the VMA start
    assert p.munmap(B + 4 * PG, 4 * PG) == 0           # starts exactly at the VMA end
    assert snapshot(m) == before


# ----------------------------------------------------------------------------- access
def test_access_after_full_unmap(m, p):
    """LTP munmap01 + SCENARIO 30: after munmap of the whole mapping any access -> SIGSEGV
    (SEGV_MAPERR); RSS, VmSize, VmPTE and the tables go back to zero."""
    free0 = mi(m, "MemFree")
    mapped(p, B, 3 * PG)
    p.write(B, b"\x33" * (3 * PG))
    assert p.munmap(B, 3 * PG) == 0
    for addr in (B, B + PG + 17, B + 3 * PG - 1):
        with pytest.raises(mmemu.SegmentationFault) as e:
            p.read(addr, 1)
        assert e.value.code == "SEGV_MAPERR" and e.value.address == addr
        with pytest.raises(mmemu.SegmentationFault) as e:
            p.write(addr, b"y")
        assert e.value.code == "SEGV_MAPERR" and e.value.address == addr
    assert list(p.maps()) == []
    assert st(p, "RssAnon") == 0 and st(p, "VmSize") == 0 and st(p, "VmPTE") == 0
    assert st(p, "VmHWM") == 12
    assert mi(m, "AnonPages") == 0
    assert mi(m, "PageTables") == 4
    assert mi(m, "MemFree") == free0


def test_access_after_partial_unmap(m, p):
    """LTP munmap02 + SCENARIO 30: unmap the middle page of 3; the middle -> SEGV_MAPERR, the
    rest keeps its data; maps shows two VMAs; RssAnon -4 kB; VmPTE unchanged."""
    mapped(p, B, 3 * PG)
    p.write(B, b"\x01" * PG + b"\x02" * PG + b"\x03" * PG)
    free0 = mi(m, "MemFree")
    assert p.munmap(B + PG, PG) == 0
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(B + PG + 5, 1)
    assert e.value.code == "SEGV_MAPERR" and e.value.address == B + PG + 5
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.write(B + PG, b"z")
    assert e.value.code == "SEGV_MAPERR"
    assert p.read(B, PG) == b"\x01" * PG
    assert p.read(B + 2 * PG, PG) == b"\x03" * PG
    p.write(B + 2 * PG, b"\x04")
    assert list(p.maps()) == [anon_line(B, B + PG), anon_line(B + 2 * PG, B + 3 * PG)]
    assert st(p, "RssAnon") == 8
    assert st(p, "VmPTE") == 12
    assert st(p, "VmSize") == 8 and st(p, "VmData") == 8
    assert mi(m, "MemFree") == free0 + 4


def test_partial_unmap_head_and_tail(m, p):
    """LTP munmap02: unmapping the head or the tail of a VMA trims it (no split)."""
    mapped(p, B, 6 * PG)
    p.write(B, b"\x09" * (6 * PG))
    p.munmap(B, PG)
    p.munmap(B + 5 * PG, PG)
    assert list(p.maps()) == [anon_line(B + PG, B + 5 * PG)]
    assert st(p, "RssAnon") == 16
    with pytest.raises(mmemu.SegmentationFault):
        p.read(B, 1)
    with pytest.raises(mmemu.SegmentationFault):
        p.read(B + 5 * PG, 1)
    assert p.read(B + PG, 4 * PG) == b"\x09" * (4 * PG)


def test_munmap_across_vmas_and_holes(m, p):
    """SEMANTICS R7.1/R7.3: one munmap covering two VMAs with a hole between removes both and,
    with no neighbours left, frees every table (VmPTE 0, PageTables = PGD only)."""
    mapped(p, B, 4 * PG)
    mapped(p, B + 4 * M2, 4 * PG, RW | 4)   # rwx: not mergeable anyway, 8 MiB apart
    p.touch(B, 4 * PG)
    p.touch(B + 4 * M2, 4 * PG)
    assert st(p, "VmPTE") == 16                    # PUD + PMD + 2 PTE tables
    assert mi(m, "PageTables") == 20               # + PGD
    assert p.munmap(B, 8 * M2) == 0
    assert list(p.maps()) == []
    assert st(p, "VmPTE") == 0 and st(p, "RssAnon") == 0
    assert mi(m, "PageTables") == 4


# ----------------------------------------------------------------------------- page-table freeing
def test_pgtable_freeing_scenario32(m, p):
    """SCENARIO 32 + SEMANTICS R7.3 (free_pgd_range floor/ceiling).

    Verified on Linux 6.18: 4 MiB at a 2 MiB-aligned address in an empty 512 GiB span, all
    written: VmPTE +16 kB. munmap of the first 2 MiB: VmPTE 12 kB (its PTE table freed),
    RssAnon -2048 kB. munmap of one page in the middle of the rest: VmPTE 12, RssAnon -4 kB.
    munmap of everything: VmPTE 0 (PTE, PMD and PUD tables freed).
    """
    free0 = mi(m, "MemFree")
    mapped(p, B, 2 * M2)
    p.touch(B, 2 * M2)
    assert st(p, "VmPTE") == 16
    assert mi(m, "PageTables") == 20
    assert st(p, "RssAnon") == 4096
    assert mi(m, "MemFree") == free0 - 4096 - 16

    p.munmap(B, M2)
    assert st(p, "VmPTE") == 12
    assert mi(m, "PageTables") == 16
    assert st(p, "RssAnon") == 2048
    assert mi(m, "AnonPages") == 2048
    assert mi(m, "MemFree") == free0 - 2048 - 12

    p.munmap(B + M2 + 5 * PG, PG)
    assert st(p, "VmPTE") == 12
    assert st(p, "RssAnon") == 2044
    assert mi(m, "MemFree") == free0 - 2044 - 12

    p.munmap(B + M2, M2)
    assert st(p, "VmPTE") == 0
    assert mi(m, "PageTables") == 4
    assert st(p, "RssAnon") == 0
    assert mi(m, "MemFree") == free0
    assert st(p, "VmHWM") == 4096


def test_pgtable_ceiling_next_vma_shares_last_span(m, p):
    """SEMANTICS R7.3 example: VMA [0,3M) removed with the next VMA at 3.5M -> only the PTE
    table of [0,2M) is freed.

    Verified on Linux 6.18: 3 MiB + 1 page at +3.5 MiB, all written: VmPTE 16; after munmap of
    the 3 MiB: 12; after munmap of the page: 0.
    """
    mapped(p, B, 3 * M2 // 2)
    mapped(p, B + 7 * M2 // 4, PG)
    p.touch(B, 3 * M2 // 2)
    p.touch(B + 7 * M2 // 4, PG)
    assert st(p, "VmPTE") == 16
    p.munmap(B, 3 * M2 // 2)
    assert st(p, "VmPTE") == 12
    assert mi(m, "PageTables") == 16
    assert p.read(B + 7 * M2 // 4, 1) == b"\x00"
    p.munmap(B + 7 * M2 // 4, PG)
    assert st(p, "VmPTE") == 0
    assert mi(m, "PageTables") == 4


def test_pgtable_ceiling_next_vma_in_next_span(m, p):
    """SEMANTICS R7.3 example: VMA [0,3M) removed with the next VMA at 4M -> both PTE tables
    are freed.

    Verified on Linux 6.18: VmPTE 20 with both mapped and written, 12 after munmap of the 3 MiB,
    0 after munmap of the page.
    """
    mapped(p, B, 3 * M2 // 2)
    mapped(p, B + 2 * M2, PG)
    p.touch(B, 3 * M2 // 2)
    p.touch(B + 2 * M2, PG)
    assert st(p, "VmPTE") == 20
    assert mi(m, "PageTables") == 24
    p.munmap(B, 3 * M2 // 2)
    assert st(p, "VmPTE") == 12
    assert mi(m, "PageTables") == 16
    p.munmap(B + 2 * M2, PG)
    assert st(p, "VmPTE") == 0


def test_pgtable_floor_prev_vma_in_same_span(m, p):
    """SEMANTICS R7.3 (floor = prev->vm_end): a VMA whose PTE table is shared with the previous
    VMA keeps the table.

    Verified on Linux 6.18: two 4-page VMAs 4 pages apart, both written: VmPTE 12; munmap of the
    upper one: 12; munmap of the lower one: 0.
    """
    mapped(p, B, 4 * PG)
    mapped(p, B + 8 * PG, 4 * PG)
    p.touch(B, 4 * PG)
    p.touch(B + 8 * PG, 4 * PG)
    assert st(p, "VmPTE") == 12
    p.munmap(B + 8 * PG, 4 * PG)
    assert st(p, "VmPTE") == 12
    assert st(p, "RssAnon") == 16
    p.munmap(B, 4 * PG)
    assert st(p, "VmPTE") == 0
    assert mi(m, "PageTables") == 4


def test_pgtable_pmd_kept_for_neighbour_in_same_gib(m, p):
    """SEMANTICS R7.3 at PMD level: removing a VMA whose 1 GiB PMD span still holds another
    VMA frees only the PTE table; the PMD and PUD tables stay."""
    mapped(p, B, PG)
    mapped(p, B + 512 * M2 - PG, PG)         # last page of the same 1 GiB span
    p.touch(B, PG)
    p.touch(B + 512 * M2 - PG, PG)
    assert st(p, "VmPTE") == 16               # PUD + PMD + 2 PTE
    p.munmap(B, PG)
    assert st(p, "VmPTE") == 12
    p.munmap(B + 512 * M2 - PG, PG)
    assert st(p, "VmPTE") == 0


def test_read_only_zero_page_tables_freed(m, p):
    """SEMANTICS R4.2/R7.3: tables allocated by read faults (zero page) are freed by munmap;
    RSS never moved."""
    mapped(p, B, 8 * PG)
    assert p.read(B, 8 * PG) == bytes(8 * PG)
    assert st(p, "VmPTE") == 12 and st(p, "RssAnon") == 0
    p.munmap(B, 8 * PG)
    assert st(p, "VmPTE") == 0
    assert mi(m, "PageTables") == 4


# ----------------------------------------------------------------------------- max_map_count
def _fill_vmas(p, n, base=B):
    for i in range(n):
        p.mmap(base + 2 * i * PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)


def test_munmap_split_at_max_map_count_enomem():
    """LTP munmap04 + SCENARIO 33 + SEMANTICS R7.1 (vms_gather_munmap_vmas:
    map_count >= max_map_count before a split that leaves both sides -> ENOMEM).

    Verified on Linux 6.18: at map_count == 65530 munmap of the middle page of a 3-page VMA ->
    ENOMEM and the VMA is intact; one VMA fewer (65529) or less -> the middle munmap succeeds.
    """
    m = mmemu.Machine("1G", max_map_count=8)
    p = m.spawn()
    x = p.mmap(B + 0x100000, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(x, b"\x44" * (4 * PG))
    _fill_vmas(p, 7)
    assert p.mm.map_count == 8
    assert_errno(errno.ENOMEM, p.munmap, x + PG, PG)
    assert_errno(errno.ENOMEM, p.munmap, x + PG, 2 * PG)
    assert p.read(x, 4 * PG) == b"\x44" * (4 * PG)
    # trimming the head or unmapping a whole VMA never needs an extra VMA
    assert p.munmap(x, PG) == 0
    assert p.mm.map_count == 8
    p.munmap(B, PG)
    assert p.mm.map_count == 7
    # at max-1 the split is allowed and map_count reaches max
    assert p.munmap(x + 2 * PG, PG) == 0
    assert p.mm.map_count == 8
    assert list(p.maps())[-2:] == [anon_line(x + PG, x + 2 * PG), anon_line(x + 3 * PG, x + 4 * PG)]
    assert p.read(x + PG, PG) == b"\x44" * PG
    assert p.read(x + 3 * PG, PG) == b"\x44" * PG
    assert p.status()["RssAnon"] == 8
    m.check()
