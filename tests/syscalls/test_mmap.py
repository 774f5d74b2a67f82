"""mmap(2) of anonymous memory: errors, MAP_FIXED, MAP_POPULATE, placement, maps, accounting.

Sources: SCENARIOS 53-54, LTP testcases/kernel/syscalls/mmap (mmap04/05/06/08/15/17/20 as they
apply to anonymous memory), SEMANTICS 1.3 and 1.13. Every expectation that is not obvious from
the kernel source was checked on the Linux 6.18 machine the tests run on (ctypes + /proc/self).
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import (
    MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN, MAP_POPULATE, MAP_PRIVATE,
    MAP_SHARED, MAP_SHARED_VALIDATE, PROT_EXEC, PROT_NONE, PROT_READ, PROT_WRITE,
)

from conftest import PG, PRIV, RW, SHARED, anon_line, assert_errno, mi, st

KB = 1024
M2 = 2 << 20
B = 0x500000000000              # start of an otherwise unused 512 GiB (PGD-entry) span
TASK_SIZE = 0x7FFFFFFFF000
MMAP_MIN_ADDR = 0x10000         # vm.mmap_min_addr as mmemu documents it (vma.py)


# ----------------------------------------------------------------------------- errors
def test_len_zero_einval(m, p):
    """LTP mmap (SEMANTICS 1.3): len == 0 -> EINVAL, nothing changes."""
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.touch(B, 4 * PG)
    assert_errno(errno.EINVAL, p.mmap, 0, 0, RW, PRIV)
    assert_errno(errno.EINVAL, p.mmap, B + 8 * PG, 0, RW, PRIV | MAP_FIXED)


def test_no_map_type_einval(m, p):
    """LTP mmap (SEMANTICS 1.3): a map type that is neither SHARED nor PRIVATE -> EINVAL.

    Verified on Linux 6.18: flags MAP_ANONYMOUS alone -> EINVAL; type 0x4 -> EINVAL.
    """
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_ANONYMOUS)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, 0x4 | MAP_ANONYMOUS)
    assert_errno(errno.EINVAL, p.mmap, 0, 0, RW, MAP_ANONYMOUS)


def test_shared_validate_anonymous_einval(m, p):
    """LTP mmap20 (anonymous variant): MAP_SHARED_VALIDATE|MAP_ANONYMOUS -> EINVAL.

    Verified on Linux 6.18: do_mmap's anonymous switch only accepts MAP_SHARED/MAP_PRIVATE
    (and MAP_DROPPABLE), so MAP_SHARED_VALIDATE (0x3) without a file fails with EINVAL.
    """
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_SHARED_VALIDATE | MAP_ANONYMOUS)
    assert p.mm.map_count == 0


def test_map_fixed_unaligned_einval(m, p):
    """LTP mmap (SEMANTICS 1.3 __get_unmapped_area): MAP_FIXED at an unaligned address -> EINVAL.

    Also MAP_FIXED_NOREPLACE unaligned -> EINVAL (verified on Linux 6.18).
    """
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(B, b"keep")
    assert_errno(errno.EINVAL, p.mmap, B + 5, PG, RW, PRIV | MAP_FIXED)
    assert_errno(errno.EINVAL, p.mmap, B + PG + 1, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    # do_mmap turns MAP_FIXED_NOREPLACE into MAP_FIXED first, so a free unaligned range fails too
    assert_errno(errno.EINVAL, p.mmap, B + 16 * PG + 1, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert p.read(B, 4) == b"keep"


def test_beyond_task_size_enomem(m, p):
    """LTP mmap15 + SEMANTICS 1.3: addr+len beyond TASK_SIZE -> ENOMEM.

    Verified on Linux 6.18: MAP_FIXED at 0x7ffffffff000 (1 page) -> ENOMEM, at
    0x7fffffffe000 (2 pages) -> ENOMEM, an unaligned fixed address past TASK_SIZE -> ENOMEM
    (the range check comes first), len 1<<47 or 2**64-1 without a hint -> ENOMEM.
    """
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.touch(B, PG)
    assert_errno(errno.ENOMEM, p.mmap, TASK_SIZE, PG, RW, PRIV | MAP_FIXED)
    assert_errno(errno.ENOMEM, p.mmap, TASK_SIZE - PG, 2 * PG, RW, PRIV | MAP_FIXED)
    assert_errno(errno.ENOMEM, p.mmap, TASK_SIZE + 1, PG, RW, PRIV | MAP_FIXED)
    assert_errno(errno.ENOMEM, p.mmap, 1 << 53, PG, PROT_READ, SHARED | MAP_FIXED)   # mmap15
    assert_errno(errno.ENOMEM, p.mmap, 0, 1 << 47, RW, PRIV)
    assert_errno(errno.ENOMEM, p.mmap, 0, 2**64 - 1, RW, PRIV)


def test_fixed_noreplace_overlap_eexist(m, p):
    """LTP mmap17: MAP_FIXED_NOREPLACE over an existing mapping -> EEXIST (verified on Linux 6.18)."""
    a = p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert a == B
    p.write(B + PG, b"x" * 10)
    assert_errno(errno.EEXIST, p.mmap, B + PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert_errno(errno.EEXIST, p.mmap, B - PG, 2 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert_errno(errno.EEXIST, p.mmap, B + 3 * PG, 4 * PG, PROT_READ, PRIV | MAP_FIXED_NOREPLACE)
    # a free range next to it is fine, and it merges with the compatible neighbour
    assert p.mmap(B + 4 * PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE) == B + 4 * PG
    assert list(p.maps()) == [anon_line(B, B + 5 * PG, "rw-p")]


def test_bad_offset_einval(m, p):
    """LTP mmap (x86 sys_mmap wrapper): offset not page aligned -> EINVAL, even for anon.

    Verified on Linux 6.18: anonymous mmap with offset 1 -> EINVAL; offset 4096 is accepted and
    ignored (the anon private VMA still shows offset 0 in maps).
    """
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, PRIV, -1, 1)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, PRIV, -1, PG - 1)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_ANONYMOUS, -1, 1)   # before the type check
    assert_errno(errno.EINVAL, p.mmap, 0, 0, RW, PRIV, -1, 1)
    a = p.mmap(B, PG, RW, PRIV | MAP_FIXED_NOREPLACE, -1, PG)
    assert list(p.maps()) == [anon_line(a, a + PG, "rw-p")]


def test_non_anonymous_without_file_ebadf(m, p):
    """LTP mmap08: a file mapping with a bad fd -> EBADF.

    Verified on Linux 6.18: fd -1 without MAP_ANONYMOUS -> EBADF for MAP_PRIVATE, MAP_SHARED,
    no type at all, and even len 0 (the fd is looked up before do_mmap checks len).
    """
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert_errno(errno.EBADF, p.mmap, 0, PG, RW, MAP_PRIVATE, -1, 0)
    assert_errno(errno.EBADF, p.mmap, 0, PG, RW, MAP_SHARED, -1, 0)
    assert_errno(errno.EBADF, p.mmap, 0, PG, RW, 0, -1, 0)
    assert_errno(errno.EBADF, p.mmap, 0, 0, RW, MAP_PRIVATE, -1, 0)


def test_shared_growsdown_einval(m, p):
    """SEMANTICS 1.3 (do_mmap): MAP_SHARED|MAP_ANONYMOUS with MAP_GROWSDOWN -> EINVAL (verified on Linux 6.18)."""
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, SHARED | MAP_GROWSDOWN)


def test_unknown_prot_bits_ignored(m, p):
    """LTP mmap (do_mmap/calc_vm_prot_bits): mmap does not validate prot.

    Verified on Linux 6.18: mmap(NULL, 4096, 0x10, MAP_PRIVATE|MAP_ANONYMOUS) succeeds
    (only mprotect rejects unknown prot bits), and prot 0x10|RW maps as rw-p.
    """
    a = p.mmap(B, PG, 0x10 | RW, PRIV | MAP_FIXED_NOREPLACE)
    assert a == B
    assert list(p.maps()) == [anon_line(B, B + PG, "rw-p")]


def test_prot_none_access_segv(m, p):
    """LTP mmap05: accessing a PROT_NONE mapping -> SIGSEGV (SEGV_ACCERR), no page allocated."""
    a = p.mmap(B, PG, PROT_NONE, PRIV | MAP_FIXED_NOREPLACE)
    free0 = mi(m, "MemFree")
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(a, 1)
    assert e.value.code == "SEGV_ACCERR" and e.value.address == a
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.write(a + 8, b"x")
    assert e.value.code == "SEGV_ACCERR" and e.value.address == a + 8
    assert mi(m, "MemFree") == free0
    assert st(p, "VmPTE") == 0 and st(p, "RssAnon") == 0


# ----------------------------------------------------------------------------- MAP_FIXED
def test_map_fixed_replaces_whole_mapping(m, p):
    """SEMANTICS 1.3/R7.3: MAP_FIXED silently unmaps what it overlaps; old data and RSS are gone.

    Verified on Linux 6.18: 8 written pages, MAP_FIXED over exactly that range -> RssAnon -32 kB,
    VmPTE -12 kB (no neighbours, so PUD+PMD+PTE tables are freed), reads return 0.
    """
    free0 = mi(m, "MemFree")
    p.mmap(B, 8 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(B, b"\xaa" * (8 * PG))
    assert st(p, "RssAnon") == 32 and st(p, "VmPTE") == 12
    assert mi(m, "AnonPages") == 32
    assert mi(m, "MemFree") == free0 - 32 - 12
    assert p.mmap(B, 8 * PG, RW, PRIV | MAP_FIXED) == B
    assert st(p, "RssAnon") == 0
    assert st(p, "VmPTE") == 0
    assert mi(m, "AnonPages") == 0
    assert mi(m, "PageTables") == 4          # only the PGD is left
    assert mi(m, "MemFree") == free0
    assert st(p, "VmSize") == 32 and st(p, "VmData") == 32
    assert st(p, "VmHWM") == 32
    assert list(p.maps()) == [anon_line(B, B + 8 * PG, "rw-p")]
    assert p.read(B, 8 * PG) == bytes(8 * PG)


def test_map_fixed_middle_same_prot_merges(m, p):
    """SEMANTICS 1.3: MAP_FIXED over the middle of a VMA with the same prot.

    Verified on Linux 6.18: 8 written pages, MAP_FIXED RW over pages 2-3 -> one VMA again in
    maps (the new unfaulted VMA merges with the faulted neighbours), pages 2-3 read 0, the others
    keep their data, RssAnon -8 kB, VmPTE unchanged (neighbours keep the PTE table).
    """
    p.mmap(B, 8 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(B, b"\x07" * (8 * PG))
    free0 = mi(m, "MemFree")
    assert p.mmap(B + 2 * PG, 2 * PG, RW, PRIV | MAP_FIXED) == B + 2 * PG
    assert list(p.maps()) == [anon_line(B, B + 8 * PG, "rw-p")]
    assert p.read(B + PG, PG) == b"\x07" * PG
    assert p.read(B + 2 * PG, 2 * PG) == bytes(2 * PG)
    assert p.read(B + 4 * PG, 4 * PG) == b"\x07" * (4 * PG)
    assert st(p, "RssAnon") == 24
    assert st(p, "VmPTE") == 12
    assert mi(m, "MemFree") == free0 + 8
    assert st(p, "VmSize") == 32


def test_map_fixed_middle_other_prot_splits(m, p):
    """SEMANTICS 1.3: MAP_FIXED with a different prot splits into three VMAs; a second MAP_FIXED
    over the tail and beyond merges with the RW remainder.

    Verified on Linux 6.18 (maps lines exactly as below).
    """
    p.mmap(B, 8 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(B, b"\x07" * (8 * PG))
    p.mmap(B + 2 * PG, 2 * PG, PROT_READ, PRIV | MAP_FIXED)
    assert list(p.maps()) == [
        anon_line(B, B + 2 * PG, "rw-p"),
        anon_line(B + 2 * PG, B + 4 * PG, "r--p"),
        anon_line(B + 4 * PG, B + 8 * PG, "rw-p"),
    ]
    p.mmap(B + 6 * PG, 4 * PG, RW, PRIV | MAP_FIXED)
    assert list(p.maps()) == [
        anon_line(B, B + 2 * PG, "rw-p"),
        anon_line(B + 2 * PG, B + 4 * PG, "r--p"),
        anon_line(B + 4 * PG, B + 10 * PG, "rw-p"),
    ]
    assert p.read(B + 4 * PG, 2 * PG) == b"\x07" * (2 * PG)
    assert p.read(B + 6 * PG, 4 * PG) == bytes(4 * PG)
    assert st(p, "RssAnon") == 16       # pages 0,1,4,5 survive
    assert st(p, "VmSize") == 40


# ----------------------------------------------------------------------------- MAP_POPULATE
def test_map_populate_private_rw(m, p):
    """SEMANTICS 1.3 (populate = len): MAP_POPULATE of a private RW mapping write-faults it.

    Verified on Linux 6.18: 16 pages with MAP_POPULATE -> RssAnon +64 kB and VmPTE +12 kB
    right after mmap. No fault is needed afterwards.
    """
    free0 = mi(m, "MemFree")
    a = p.mmap(B, 16 * PG, RW, PRIV | MAP_FIXED_NOREPLACE | MAP_POPULATE)
    assert st(p, "RssAnon") == 64
    assert st(p, "VmRSS") == 64
    assert st(p, "VmPTE") == 12
    assert mi(m, "AnonPages") == 64
    assert mi(m, "PageTables") == 16
    assert mi(m, "MemFree") == free0 - 64 - 12
    assert p.smaps()[0]["Rss"] == 64 and p.smaps()[0]["Anonymous"] == 64
    before = m.vmstat()
    p.write(a, b"\x01" * (16 * PG))
    d = m.vmstat() - before
    assert d["pgfault"] == 0
    assert d["pgalloc"] == 0
    assert mi(m, "MemFree") == free0 - 64 - 12


def test_map_populate_private_readonly_maps_zero_page(m, p):
    """SEMANTICS 1.3/R4.4: MAP_POPULATE of a private PROT_READ mapping read-faults it (zero page).

    Verified on Linux 6.18: RssAnon +0 kB, VmPTE +12 kB (a PTE table full of zero-page entries).
    """
    free0 = mi(m, "MemFree")
    a = p.mmap(B, 16 * PG, PROT_READ, PRIV | MAP_FIXED_NOREPLACE | MAP_POPULATE)
    assert st(p, "RssAnon") == 0
    assert st(p, "VmPTE") == 12
    assert mi(m, "AnonPages") == 0
    assert mi(m, "MemFree") == free0 - 12
    before = m.vmstat()
    assert p.read(a, 16 * PG) == bytes(16 * PG)
    assert (m.vmstat() - before)["pgfault"] == 0


def test_map_populate_shared(m, p):
    """SEMANTICS 1.3/R1.1: MAP_POPULATE of MAP_SHARED|MAP_ANONYMOUS allocates shmem pages.

    Verified on Linux 6.18: 16 pages -> RssShmem +64 kB, RssAnon +0.
    """
    p.mmap(B, 16 * PG, RW, SHARED | MAP_FIXED_NOREPLACE | MAP_POPULATE)
    assert st(p, "RssShmem") == 64
    assert st(p, "RssAnon") == 0
    assert st(p, "VmPTE") == 12
    assert mi(m, "Shmem") == 64
    assert mi(m, "Mapped") == 64
    assert mi(m, "AnonPages") == 0


# ----------------------------------------------------------------------------- placement
def test_hint_address(m, p):
    """SEMANTICS 1.3: a free hint is used (rounded down to a page); an occupied hint or a hint
    beyond TASK_SIZE is ignored; a hint below mmap_min_addr is raised to it (round_hint_to_min).

    Verified on Linux 6.18: hint B+0x123 -> B; the same hint again -> some other address; a
    hint right after an existing VMA -> used and merged; hint 0x7ffffffff000 for 2 pages -> ignored.
    """
    a = p.mmap(B + 0x123, PG, RW, PRIV)
    assert a == B
    b = p.mmap(B, PG, RW, PRIV)
    assert b != B and not (B - PG < b < B + PG)
    c = p.mmap(B + PG, PG, RW, PRIV)
    assert c == B + PG
    assert anon_line(B, B + 2 * PG, "rw-p") in list(p.maps())
    d = p.mmap(TASK_SIZE, 2 * PG, RW, PRIV)
    assert d + 2 * PG <= TASK_SIZE
    e = p.mmap(0x1000, PG, RW, PRIV)
    assert e == MMAP_MIN_ADDR


def test_2mib_multiple_is_pmd_aligned_and_merges(m, p):
    """SEMANTICS 1.3 (__get_unmapped_area -> thp_get_unmapped_area for anon len % 2M == 0).

    Verified on Linux 6.18 (THP in 'madvise' mode, CONFIG_TRANSPARENT_HUGEPAGE=y): a 4 MiB
    anonymous mmap without a hint is 2 MiB aligned, the following 2 MiB one is placed right
    below it, and the two merge into one 6 MiB VMA.
    """
    a = p.mmap(0, 2 * M2, RW, PRIV)
    assert a % M2 == 0
    b = p.mmap(0, M2, RW, PRIV)
    assert b % M2 == 0
    assert b + M2 == a
    assert list(p.maps()) == [anon_line(b, a + 2 * M2, "rw-p")]


def test_consecutive_small_mmaps_merge(m, p):
    """SEMANTICS 1.3 (top-down search, vma_merge_new_range): consecutive anonymous mmaps with
    equal prot are placed back to back and merge; a different prot does not merge.

    Verified on Linux 6.18 with hinted back-to-back mmaps: rw+rw -> one VMA, then r-- -> separate.
    """
    a = p.mmap(0, 3 * PG, RW, PRIV)
    b = p.mmap(0, 3 * PG, RW, PRIV)
    assert b == a - 3 * PG
    assert list(p.maps()) == [anon_line(b, a + 3 * PG, "rw-p")]
    c = p.mmap(0, 3 * PG, PROT_READ, PRIV)
    assert c == b - 3 * PG
    assert list(p.maps()) == [anon_line(c, b, "r--p"), anon_line(b, a + 3 * PG, "rw-p")]
    assert p.mm.map_count == 2


def test_shared_anon_does_not_merge(m, p):
    """SEMANTICS 1.3: each MAP_SHARED|MAP_ANONYMOUS mmap is its own shmem object; it never
    merges with private neighbours. Verified on Linux 6.18."""
    p.mmap(B, 4 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.mmap(B + 4 * PG, 4 * PG, RW, SHARED | MAP_FIXED_NOREPLACE)
    p.mmap(B + 8 * PG, 4 * PG, RW, SHARED | MAP_FIXED_NOREPLACE)
    maps = list(p.maps())
    assert len(maps) == 3
    assert maps[0] == anon_line(B, B + 4 * PG, "rw-p")
    assert maps[1].startswith(f"{B + 4 * PG:08x}-{B + 8 * PG:08x} rw-s 00000000 00:01 ")
    assert maps[1].endswith(" /dev/zero (deleted)")
    assert maps[2].startswith(f"{B + 8 * PG:08x}-{B + 12 * PG:08x} rw-s 00000000 00:01 ")


# ----------------------------------------------------------------------------- maps / accounting
@pytest.mark.parametrize("prot,flags,perms", [
    (PROT_NONE, PRIV, "---p"),
    (PROT_READ, PRIV, "r--p"),
    (PROT_WRITE, PRIV, "-w-p"),
    (PROT_EXEC, PRIV, "--xp"),
    (PROT_READ | PROT_EXEC, PRIV, "r-xp"),
    (RW, PRIV, "rw-p"),
    (RW | PROT_EXEC, PRIV, "rwxp"),
    (PROT_NONE, SHARED, "---s"),
    (PROT_READ, SHARED, "r--s"),
    (RW, SHARED, "rw-s"),
])
def test_maps_perms_column(m, p, prot, flags, perms):
    """LTP mmap04 (prot/flags matrix) + SEMANTICS 1.13: the rwx and p/s columns of maps.

    Verified on Linux 6.18 for every row (shared anon shows 00:01 and '/dev/zero (deleted)').
    """
    a = p.mmap(B, PG, prot, flags | MAP_FIXED_NOREPLACE)
    (line,) = list(p.maps())
    assert line.startswith(f"{a:08x}-{a + PG:08x} {perms} 00000000 ")
    if flags == PRIV:
        assert line == anon_line(a, a + PG, perms)
    else:
        assert line.endswith(" /dev/zero (deleted)")


def test_vmsize_vmdata_accounting(m, p):
    """SEMANTICS 1.3 (vm_stat_account) and 1.13: VmSize/VmData/VmStk/VmLib per VMA type.

    Verified on Linux 6.18, 8 pages each: rw-p +32 VmData; r--p VmSize only; rw-s VmSize only;
    -w-p +32 VmData; rwxp +32 VmData; rw-p GROWSDOWN +32 VmStk; all back to 0 after munmap.
    r-xp counts as exec_vm (VmLib here, since there is no code segment).
    """
    n = 8 * PG
    p.mmap(B, n, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData")) == (32, 32)
    p.mmap(B + 0x100000, n, PROT_READ, PRIV | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData")) == (64, 32)
    p.mmap(B + 0x200000, n, RW, SHARED | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData")) == (96, 32)
    p.mmap(B + 0x300000, n, PROT_WRITE, PRIV | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData")) == (128, 64)
    p.mmap(B + 0x400000, n, RW | PROT_EXEC, PRIV | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData")) == (160, 96)
    p.mmap(B + 0x500000, n, RW, PRIV | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN)
    assert (st(p, "VmSize"), st(p, "VmData"), st(p, "VmStk")) == (192, 96, 32)
    p.mmap(B + 0x600000, n, PROT_READ | PROT_EXEC, PRIV | MAP_FIXED_NOREPLACE)
    assert (st(p, "VmSize"), st(p, "VmData"), st(p, "VmStk")) == (224, 96, 32)
    assert st(p, "VmExe") + st(p, "VmLib") == 32
    assert st(p, "VmPeak") == 224
    for off in range(0, 0x700000, 0x100000):
        p.munmap(B + off, n)
    assert (st(p, "VmSize"), st(p, "VmData"), st(p, "VmStk"), st(p, "VmLib")) == (0, 0, 0, 0)
    assert st(p, "VmPeak") == 224
    assert st(p, "VmPTE") == 0 and st(p, "RssAnon") == 0


# ----------------------------------------------------------------------------- max_map_count
def _fill_vmas(p, n, base=B):
    """n one-page VMAs separated by one-page holes (they cannot merge)."""
    for i in range(n):
        p.mmap(base + 2 * i * PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)


def test_max_map_count():
    """SEMANTICS 1.3 (do_mmap: map_count > max_map_count -> ENOMEM).

    Verified on Linux 6.18 with vm.max_map_count=65530: an mmap issued at map_count == 65530
    succeeds (map_count becomes 65531), the next one fails with ENOMEM.
    """
    m = mmemu.Machine("1G", max_map_count=8)
    p = m.spawn()
    _fill_vmas(p, 8)
    assert p.mm.map_count == 8
    a = p.mmap(B + 0x100000, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert a == B + 0x100000
    assert p.mm.map_count == 9
    assert_errno(errno.ENOMEM, p.mmap, B + 0x200000, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    # even one that would merge into a neighbour is refused: the check comes first
    assert_errno(errno.ENOMEM, p.mmap, B + PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert_errno(errno.ENOMEM, p.mmap, 0, PG, RW, PRIV)
    p.munmap(B + 0x100000, PG)
    assert p.mmap(0, PG, RW, PRIV) > 0
    m.check()


def test_map_fixed_split_at_max_map_count():
    """SEMANTICS 1.3/R7.1: MAP_FIXED over the middle of a VMA needs a split of the old VMA;
    at map_count == max_map_count that fails with ENOMEM and nothing changes.

    Verified on Linux 6.18: at map_count == 65530, MAP_FIXED of one page in the middle of a
    3-page VMA -> ENOMEM (both same and different prot), the 3-page VMA is intact.
    """
    m = mmemu.Machine("1G", max_map_count=8)
    p = m.spawn()
    x = p.mmap(B + 0x100000, 3 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    p.write(x, b"\x05" * (3 * PG))
    _fill_vmas(p, 7)
    assert p.mm.map_count == 8
    assert_errno(errno.ENOMEM, p.mmap, x + PG, PG, PROT_READ, PRIV | MAP_FIXED)
    assert_errno(errno.ENOMEM, p.mmap, x + PG, PG, RW, PRIV | MAP_FIXED)
    assert p.read(x, 3 * PG) == b"\x05" * (3 * PG)
    m.check()
