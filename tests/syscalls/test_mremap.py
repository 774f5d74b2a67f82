"""mremap: ports of selftests/mm mremap_test.c and mremap_dontunmap.c, LTP mremap01-05,
SCENARIOS 41-48. Expected values follow SEMANTICS R9 (mm/mremap.c)."""
from __future__ import annotations

import errno

import numpy as np
import pytest

import mmemu
from mmemu import (
    MAP_FIXED, MAP_FIXED_NOREPLACE, MREMAP_DONTUNMAP, MREMAP_FIXED, MREMAP_MAYMOVE,
)
from conftest import PG, PRIV, RW, SHARED, assert_errno

MB = 1 << 20
PMD = 2 * MB
PUD = 1 << 30


def vmas(p):
    return [(v.start, v.end) for v in p.mm.vmas]


def is_range_mapped(p, start, end):
    """mremap_test.c is_range_mapped: [start, end) inside one line of maps."""
    return any(v.start <= start and v.end >= end for v in p.mm.vmas)


def pattern(n, seed=7):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def pfns(p, addr, npages):
    return (p.pagemap(addr, npages) & ((1 << 55) - 1)).tolist()


# ---------------------------------------------------------------- SCENARIOS 41, 42
def test_mremap_expand_merge(m, p):
    """mremap_test.c mremap_expand_merge."""
    start = p.mmap(0, 3 * PG, RW, PRIV)
    p.munmap(start + PG, PG)
    assert p.mremap(start, PG, 2 * PG, 0) == start
    assert is_range_mapped(p, start, start + 3 * PG)
    assert vmas(p) == [(start, start + 3 * PG)]
    assert p.status()["VmSize"] == 12


def test_mremap_expand_merge_offset(m, p):
    """mremap_test.c mremap_expand_merge_offset."""
    start = p.mmap(0, 3 * PG, RW, PRIV)
    p.munmap(start + 2 * PG, PG)
    assert p.mremap(start + PG, PG, 2 * PG, 0) == start + PG
    assert vmas(p) == [(start, start + 3 * PG)]


def test_expand_in_place_populates_nothing(m, p):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x" * (4 * PG))
    p.munmap(a + 2 * PG, 2 * PG)
    free = m.meminfo()["MemFree"]
    pte = p.status()["VmPTE"]
    assert p.mremap(a, 2 * PG, 4 * PG) == a
    assert m.meminfo()["MemFree"] == free and p.status()["VmPTE"] == pte
    assert p.read(a + 2 * PG, 4) == b"\0" * 4 and p.read(a, 2) == b"xx"


# ---------------------------------------------------------------- SCENARIO 43
def test_mremap_move_within_range(m, p):
    """mremap_test.c mremap_move_within_range: move the upper 1 MiB of a 2 MiB block
    2 MiB down inside one 20 MiB VMA; nothing else changes."""
    size = 20 * MB
    ptr = p.mmap(0, size, RW, PRIV)
    p.write(ptr, np.zeros(size, dtype=np.uint8))
    src = (ptr + 6 * MB) & ~(PMD - 1)
    data = pattern(PMD)
    p.write(src, data)
    dest = src - PMD
    assert p.mremap(src + MB, MB, MB, MREMAP_MAYMOVE | MREMAP_FIXED, dest + MB) == dest + MB
    got = np.frombuffer(p.read(src, MB), dtype=np.uint8)
    assert np.array_equal(got, data[:MB])
    got = np.frombuffer(p.read(dest + MB, MB), dtype=np.uint8)
    assert np.array_equal(got, data[MB:])
    assert p.read(dest, MB) == bytes(MB)
    # the hole left at src+1M reads as unmapped
    assert not is_range_mapped(p, src + MB, src + MB + PG)


def test_mremap_move_1mb_from_start(m, p):
    """mremap_test.c mremap_move_1mb_from_start: moving the lower 1 MiB of a PMD-aligned
    block next to an already moved upper 1 MiB keeps all 2 MiB intact (no realignment
    may clobber the neighbour)."""
    base = p.mmap(0, 10 * MB, RW, PRIV)
    src = (base + PMD) & ~(PMD - 1)
    p.munmap(base, 10 * MB)
    src = p.mmap(src, PMD, RW, PRIV | MAP_FIXED)
    data = pattern(PMD, 3)
    p.write(src, data)
    dest = src + 3 * PMD
    assert p.mremap(src + MB, MB, MB, MREMAP_MAYMOVE | MREMAP_FIXED, dest + MB) == dest + MB
    assert p.mremap(src, MB, MB, MREMAP_MAYMOVE | MREMAP_FIXED, dest) == dest
    got = np.frombuffer(p.read(dest, PMD), dtype=np.uint8)
    assert np.array_equal(got, data)
    assert vmas(p) == [(dest, dest + PMD)]


# ---------------------------------------------------------------- SCENARIO 44: alignment matrix
def _source_mapping(p, align, size):
    """mremap_test.c get_source_mapping: aligned to `align` but not to 2*align."""
    addr = 0
    while True:
        addr += align
        if addr < 0x10000:
            continue
        try:
            a = p.mmap(addr, size, RW, SHARED | MAP_FIXED_NOREPLACE)
        except mmemu.MMError:
            continue
        if (a & (align - 1)) or not (a & align):
            p.munmap(a, size)
            continue
        return a


def _remap_region(m, p, src_align, dest_align, size, overlapping, threshold=4 * MB):
    """mremap_test.c remap_region; returns (dest, data) or raises MMError."""
    threshold = min(threshold, size)
    src = _source_mapping(p, src_align, size)
    data = pattern(threshold, 11)
    p.write(src, data)
    offset = -dest_align if overlapping else dest_align
    addr = (src + size + offset) & ~(dest_align - 1)
    if not addr & dest_align:
        addr |= dest_align
    while not overlapping and p.mm.overlapping(addr, addr + size):
        addr += dest_align
    dest = p.mremap(src, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, addr)
    got = np.frombuffer(p.read(dest, threshold), dtype=np.uint8)
    assert np.array_equal(got, data)
    return src, dest


@pytest.mark.parametrize("src_align,dest_align,size,overlap,err", [
    (PG, PG, PG, True, errno.EINVAL),             # 0: overlapping
    (PG, PG // 4, PG, False, errno.EINVAL),       # 1: destination 1 KiB-misaligned
])
def test_alignment_matrix_failures(m, p, src_align, dest_align, size, overlap, err):
    src = _source_mapping(p, src_align, size)
    offset = -dest_align if overlap else dest_align
    addr = (src + size + offset) & ~(dest_align - 1)
    if not addr & dest_align:
        addr |= dest_align
    assert_errno(err, p.mremap, src, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, addr)


def test_alignment_matrix_source_misaligned(m, p):
    """case 2: a 1 KiB-aligned source address is EINVAL."""
    src = _source_mapping(p, PG, PG)
    assert_errno(errno.EINVAL, p.mremap, src + 1024, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED,
                 src + 4 * PG)


@pytest.mark.parametrize("src_align,dest_align,size", [
    (PG, PG, 2 * PG),          # 3
    (MB, PG, PMD),             # 4
    (MB, MB, PMD),             # 5
    (PMD, PG, 4 * MB),         # 6
    (PMD, MB, 4 * MB),         # 7
    (PMD, PMD, 4 * MB),        # 8
    (PUD, PG, 2 * PUD),        # 9
    (PUD, MB, 2 * PUD),        # 10
    (PUD, PMD, 2 * PUD),       # 11
    (PUD, PUD, 2 * PUD),       # 12
])
def test_alignment_matrix(src_align, dest_align, size):
    m = mmemu.Machine("8G")
    p = m.spawn()
    _remap_region(m, p, src_align, dest_align, size, False)
    m.check()


def test_pmd_aligned_move_relinks_tables(m, p):
    """Case 8 with accounting: a PMD-aligned move relinks both PTE tables; no PTE table
    is allocated or freed, only the upper tables of the new place (here none)."""
    src = _source_mapping(p, PMD, 4 * MB)
    p.write(src, pattern(4 * MB))
    addr = (src + 4 * MB + PMD) & ~(PMD - 1)
    if not addr & PMD:
        addr |= PMD
    pte = p.status()["VmPTE"]
    tables = m.meminfo()["PageTables"]
    owners = [m.phys.pt_owner[p.mm.core.walk(src + i * PMD)[2] >> 12 & ((1 << 40) - 1)]
              for i in range(2)]
    before = m.vmstat()
    dest = p.mremap(src, 4 * MB, 4 * MB, MREMAP_MAYMOVE | MREMAP_FIXED, addr)
    d = m.vmstat() - before
    assert d["mremap_pmds_moved"] == 2
    assert d["mremap_ptes_moved"] == 0
    assert d["pgtable_alloc"] == 0 and d["pgtable_free"] == 0
    assert p.status()["VmPTE"] == pte and m.meminfo()["PageTables"] == tables
    assert [m.phys.pt_owner[p.mm.core.walk(dest + i * PMD)[2] >> 12 & ((1 << 40) - 1)]
            for i in range(2)] == owners
    assert p.mm.core.walk(src)[2] == 0


def test_pte_aligned_move_counts_entries(m, p):
    """A page-aligned (not PMD-aligned) move copies entries into new tables and frees
    the source tables by floor/ceiling."""
    a = p.mmap(0x40000000, 16 * PG, RW, PRIV | MAP_FIXED)
    p.touch(a, 16 * PG)
    before = m.vmstat()
    d_addr = 0x80000000 + 3 * PG
    assert p.mremap(a, 16 * PG, 16 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, d_addr) == d_addr
    d = m.vmstat() - before
    assert d["mremap_ptes_moved"] == 16 and d["mremap_pmds_moved"] == 0
    # new PMD + PTE table at the destination, old PTE + PMD tables freed; one PUD table
    assert d["pgtable_alloc"] == 2 and d["pgtable_free"] == 2
    assert p.status()["VmPTE"] == 12


def test_realign_relinks_mutually_aligned_1mb(m, p):
    """try_realign_addr: a 1 MiB-offset VMA moved to a 1 MiB-offset address, reaching the
    next PMD boundary, relinks the first PTE table too."""
    a = p.mmap(0x40000000 + MB, 3 * MB, RW, PRIV | MAP_FIXED)
    p.touch(a, 3 * MB)
    before = m.vmstat()
    dest = p.mremap(a, 3 * MB, 3 * MB, MREMAP_MAYMOVE | MREMAP_FIXED, 0x80000000 + MB)
    d = m.vmstat() - before
    assert dest == 0x80000000 + MB
    assert d["mremap_pmds_moved"] == 2 and d["mremap_ptes_moved"] == 0


# ---------------------------------------------------------------- SCENARIO 45: DONTUNMAP
def test_dontunmap_simple(m, p):
    """mremap_dontunmap.c mremap_dontunmap_simple."""
    n = 5
    src = p.mmap(0, n * PG, RW, PRIV)
    p.write(src, b"\x58" * (n * PG))
    total = p.mm.total_vm
    dest = p.mremap(src, n * PG, n * PG, MREMAP_DONTUNMAP | MREMAP_MAYMOVE, 0)
    assert dest != src
    assert p.read(dest, n * PG) == b"\x58" * (n * PG)
    assert p.mm.total_vm == total + n
    assert is_range_mapped(p, src, src + n * PG)
    assert p.read(src, n * PG) == bytes(n * PG)        # zero-fill
    v = p.mm.vma_at(src)
    # VM_ACCOUNT stays (6.18 stable: "correctly account old mapping after MREMAP_DONTUNMAP")
    assert v.flags & mmemu.VmFlags.ACCOUNT and not v.flags & mmemu.VmFlags.LOCKED
    assert p.status()["RssAnon"] == n * 4


def test_dontunmap_simple_shmem(m, p):
    """mremap_dontunmap.c mremap_dontunmap_simple_shmem: the source shows the data again."""
    n = 5
    src = p.mmap(0, n * PG, RW, SHARED)
    p.write(src, b"m" * (n * PG))
    dest = p.mremap(src, n * PG, n * PG, MREMAP_DONTUNMAP | MREMAP_MAYMOVE, 0)
    assert p.read(dest, n * PG) == b"m" * (n * PG)
    assert p.read(src, n * PG) == b"m" * (n * PG)
    assert p.pagemap(src, 1)[0] & ((1 << 55) - 1) == p.pagemap(dest, 1)[0] & ((1 << 55) - 1)


def test_dontunmap_simple_fixed(m, p):
    """mremap_dontunmap.c mremap_dontunmap_simple_fixed: FIXED onto an existing mapping."""
    n = 5
    src = p.mmap(0, n * PG, RW, PRIV)
    p.write(src, b"X" * (n * PG))
    dest = p.mmap(0, n * PG, RW, PRIV)
    p.write(dest, b"Y" * (n * PG))
    r = p.mremap(src, n * PG, n * PG, MREMAP_DONTUNMAP | MREMAP_MAYMOVE | MREMAP_FIXED, dest)
    assert r == dest
    assert p.read(dest, n * PG) == b"X" * (n * PG)
    assert p.read(src, n * PG) == bytes(n * PG)


def test_dontunmap_partial_mapping(m, p):
    """mremap_dontunmap.c mremap_dontunmap_partial_mapping: half of the source moves."""
    n = 10
    src = p.mmap(0, n * PG, RW, PRIV)
    p.write(src, b"a" * (n * PG))
    half = n // 2 * PG
    dest = p.mremap(src, half, half, MREMAP_DONTUNMAP | MREMAP_MAYMOVE, 0)
    assert p.read(dest, half) == b"a" * half
    assert p.read(src, half) == bytes(half)
    assert p.read(src + half, half) == b"a" * half


def test_dontunmap_partial_mapping_overwrite(m, p):
    """mremap_dontunmap.c _partial_mapping_overwrite: FIXED into the middle of a larger
    mapping replaces only that range."""
    n = 5
    src = p.mmap(0, n * PG, RW, PRIV)
    p.write(src, b"a" * (n * PG))
    dest = p.mmap(0, 10 * PG, RW, PRIV)
    p.write(dest, b"b" * (10 * PG))
    r = p.mremap(src, n * PG, n * PG, MREMAP_DONTUNMAP | MREMAP_MAYMOVE | MREMAP_FIXED,
                 dest + n * PG)
    assert r == dest + n * PG
    assert p.read(dest, n * PG) == b"b" * (n * PG)
    assert p.read(dest + n * PG, n * PG) == b"a" * (n * PG)
    assert p.read(src, n * PG) == bytes(n * PG)


def test_dontunmap_errors(m, p):
    src = p.mmap(0, 4 * PG, RW, PRIV)
    # resize with DONTUNMAP, or without MAYMOVE
    assert_errno(errno.EINVAL, p.mremap, src, 4 * PG, 8 * PG, MREMAP_DONTUNMAP | MREMAP_MAYMOVE, 0)
    assert_errno(errno.EINVAL, p.mremap, src, 4 * PG, 4 * PG, MREMAP_DONTUNMAP, 0)


# ---------------------------------------------------------------- SCENARIO 46: LTP
def test_ltp_mremap01_grow_with_maymove(m, p):
    """LTP mremap01: grow a mapping with MAYMOVE, the data is kept. (A grown shmem
    mapping would SIGBUS past its object's size, as in Linux: LTP grows a file.)"""
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"\x01" * (4 * PG))
    p.mmap(a + 4 * PG, PG, RW, SHARED | MAP_FIXED)      # blocks growth in place
    b = p.mremap(a, 4 * PG, 1000 * PG, MREMAP_MAYMOVE)
    assert b != a
    assert p.read(b, 4 * PG) == b"\x01" * (4 * PG)
    p.write(b + 999 * PG, b"z")
    assert p.read(b + 999 * PG, 1) == b"z"


def test_ltp_mremap02_unaligned(m, p):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    assert_errno(errno.EINVAL, p.mremap, a + 1, 4 * PG, 8 * PG, MREMAP_MAYMOVE)


def test_ltp_mremap03_unmapped(m, p):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.munmap(a, 4 * PG)
    assert_errno(errno.EFAULT, p.mremap, a, 4 * PG, 8 * PG, MREMAP_MAYMOVE)


def test_ltp_mremap04_no_room_without_maymove(m, p):
    a = p.mmap(0x40000000, 4 * PG, RW, PRIV | MAP_FIXED)
    p.mmap(0x40000000 + 4 * PG, PG, RW, SHARED | MAP_FIXED)
    assert_errno(errno.ENOMEM, p.mremap, a, 4 * PG, 8 * PG, 0)


def test_ltp_mremap05(m, p):
    """LTP mremap05: FIXED without MAYMOVE, unaligned new address, overlap -> EINVAL;
    a FIXED move succeeds and replaces what was at the target."""
    old = p.mmap(0, 2 * PG, RW, PRIV)
    new = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(old, b"o" * (2 * PG))
    p.write(new, b"n" * (2 * PG))
    assert_errno(errno.EINVAL, p.mremap, old, 2 * PG, 2 * PG, MREMAP_FIXED, new)
    assert_errno(errno.EINVAL, p.mremap, old, 2 * PG, 2 * PG, MREMAP_FIXED | MREMAP_MAYMOVE, new + 1)
    assert_errno(errno.EINVAL, p.mremap, old, 2 * PG, 2 * PG, MREMAP_FIXED | MREMAP_MAYMOVE, old + PG)
    assert p.mremap(old, 2 * PG, 2 * PG, MREMAP_FIXED | MREMAP_MAYMOVE, new) == new
    assert p.read(new, 2 * PG) == b"o" * (2 * PG)
    assert p.mm.vma_at(old) is None


def test_other_errors(m, p):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    assert_errno(errno.EINVAL, p.mremap, a, 4 * PG, 8 * PG, 8)                   # unknown flag
    assert_errno(errno.EINVAL, p.mremap, a, 4 * PG, 0, MREMAP_MAYMOVE)           # new_len 0
    assert_errno(errno.EFAULT, p.mremap, a, 8 * PG, 16 * PG, MREMAP_MAYMOVE)     # crosses end
    assert_errno(errno.EFAULT, p.mremap, a + PG, 4 * PG, 5 * PG, MREMAP_MAYMOVE)


def test_max_map_count(p):
    m = p.machine
    m.max_map_count = 8
    for i in range(3):
        p.mmap(0x40000000 + 2 * i * PG, PG, RW, PRIV | MAP_FIXED)
    a = 0x40000000
    # map_count + 2 >= max_map_count - 3 with a new address: ENOMEM
    assert_errno(errno.ENOMEM, p.mremap, a, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, 0x50000000)
    m.max_map_count = 65530


# ---------------------------------------------------------------- SCENARIO 47, 48
def test_move_preserves_identity_and_cow(m, p):
    n = 8
    a = p.mmap(0, n * PG, RW, PRIV)
    p.write(a, b"P" * (n * PG))
    c = p.fork()
    before = pfns(p, a, n)
    rss = p.status()["RssAnon"]
    anon = m.meminfo()["AnonPages"]
    dest = p.mremap(a, n * PG, 2 * n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, 0x60000000)
    assert pfns(p, dest, n) == before
    assert [int(m.phys.refcount[f]) for f in before] == [2] * n
    assert [int(m.phys.mapcount[f]) for f in before] == [2] * n
    assert p.status()["RssAnon"] == rss and m.meminfo()["AnonPages"] == anon
    # soft-dirty is set on moved entries (move_soft_dirty_pte)
    assert all(p.mm.core.walk(dest + i * PG)[3] >> 11 & 1 for i in range(n))
    # still COW: a write copies
    ev = m.vmstat()
    p.write(dest, b"Q")
    assert (m.vmstat() - ev)["cow_fault"] == 1
    assert c.read(a, 1) == b"P" and p.read(dest, 2) == b"QP"
    assert pfns(c, a, 1) == before[:1]


def test_move_keeps_exclusive_and_dirty(m, p):
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(a, b"x" * (2 * PG))
    f = pfns(p, a, 2)
    dest = p.mremap(a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, 0x60000000)
    e = p.mm.core.walk(dest)[3]
    assert e & 2 and e & 64                  # still writable and dirty
    ev = m.vmstat()
    p.write(dest, b"y")                      # no fault work: PTE already writable
    d = m.vmstat() - ev
    assert d["cow_fault"] == 0 and d["pgalloc"] == 0
    assert pfns(p, dest, 2) == f


def test_private_old_len_zero(m, p):
    """SCENARIO 48: old_len 0 duplicates only shared mappings."""
    a = p.mmap(0, 2 * PG, RW, PRIV)
    assert_errno(errno.EINVAL, p.mremap, a, 0, 2 * PG, MREMAP_MAYMOVE)
    s = p.mmap(0, 2 * PG, RW, SHARED)
    p.write(s, b"dup")
    b = p.mremap(s, 0, 2 * PG, MREMAP_MAYMOVE)
    assert b != s and p.read(b, 3) == b"dup" and p.read(s, 3) == b"dup"


def test_shrink(m, p):
    a = p.mmap(0, 8 * PG, RW, PRIV)
    p.touch(a, 8 * PG)
    assert p.mremap(a, 8 * PG, 3 * PG) == a
    assert vmas(p) == [(a, a + 3 * PG)]
    assert p.status()["RssAnon"] == 12 and p.status()["VmSize"] == 12


def test_move_enomem_changes_nothing():
    m = mmemu.Machine("128K")
    p = m.spawn()
    a = p.mmap(0x40000000, 2 * PG, RW, PRIV | MAP_FIXED)
    p.touch(a, 2 * PG)
    # use up the free frames
    b = p.mmap(0x80000000, 64 * PG, RW, PRIV | MAP_FIXED)
    try:
        p.touch(b, 64 * PG)
    except mmemu.MMError:
        pass
    assert m.phys.nr_free < 3
    assert_errno(errno.ENOMEM, p.mremap, a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
                 0x7000000000)
    m.check()


def test_mlocked_expand_populates(m, p):
    a = p.mmap(0x40000000, 2 * PG, RW, PRIV | MAP_FIXED | mmemu.MAP_LOCKED)
    assert p.status()["VmLck"] == 8
    assert p.mremap(a, 2 * PG, 4 * PG, 0) == a
    assert p.status()["VmLck"] == 16 and p.status()["RssAnon"] == 16


# ---- MREMAP_FIXED: what a failure leaves of the destination, against the live kernel ----
LIVE = 0x210000000000            # far from anything Python maps
# (old offset, old_len, new_len, new offset) in pages from LIVE; the source is pages 0-7,
# the destination pages 64-67 are mapped too
FIXED_FAILURES = {
    "old-len-zero-private": (0, 0, 4, 64),          # EINVAL, destination kept
    "grow-across-the-vma-end": (0, 16, 32, 64),     # EFAULT, destination kept
    "wrapping-old-len-misses-the-overlap": (0, 2**52 - 1, 1, 0),   # EFAULT, source page 0 gone
}


def _live_fixed_failure(case):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = libc.mremap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int, ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    old, old_len, new_len, new = case
    try:
        for off, n in ((0, 8), (64, 4)):
            assert libc.mmap(LIVE + off * PG, n * PG, RW, PRIV | 0x100000, -1, 0) == LIVE + off * PG
        r = libc.mremap(LIVE + old * PG, old_len * PG, new_len * PG, 3, LIVE + new * PG)
        err = ctypes.get_errno() if r in (None, 2**64 - 1) else 0
        with open("/proc/self/maps") as f:
            ranges = [tuple(int(x, 16) - LIVE for x in line.split()[0].split("-"))
                      for line in f if LIVE <= int(line.split("-")[0], 16) < LIVE + (1 << 30)]
        return err, ranges
    finally:
        libc.munmap(LIVE, 1 << 30)


@pytest.mark.parametrize("name", sorted(FIXED_FAILURES))
def test_fixed_move_failures_match_the_live_kernel(m, p, name):
    """6.18 checks the source (check_prep_vma: old_len 0 of a private mapping, a range
    crossing the end of its VMA) before mremap_to unmaps the MREMAP_FIXED destination, so
    those failures leave it mapped; only a destination its unsigned overlap test misses
    (an old_len that wraps around onto the source itself) is unmapped before the EFAULT."""
    old, old_len, new_len, new = FIXED_FAILURES[name]
    want = _live_fixed_failure(FIXED_FAILURES[name])
    assert want[0] in (errno.EINVAL, errno.EFAULT)
    for off, n in ((0, 8), (64, 4)):
        p.mmap(LIVE + off * PG, n * PG, RW, PRIV | MAP_FIXED)
    with pytest.raises(mmemu.MMError) as e:
        p.mremap(LIVE + old * PG, old_len * PG, new_len * PG, MREMAP_MAYMOVE | MREMAP_FIXED, LIVE + new * PG)
    got = (e.value.errno, [(v.start - LIVE, v.end - LIVE) for v in p.mm.vmas])
    assert got == want
