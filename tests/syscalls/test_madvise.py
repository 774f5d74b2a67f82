"""madvise(2): DONTNEED (zero-fill, RSS, PT reclaim, COW-shared pages), errors, the valid
advice matrix, DONTFORK/DOFORK split and merge, WIPEONFORK.

Sources: SCENARIOS 20-24 and 49-52, LTP testcases/kernel/syscalls/madvise (madvise01, 02, 03, 10),
SEMANTICS 1.10 and R7.4. Numbers not plain from the kernel source were measured on the Linux 6.18
machine the tests run on, in an otherwise empty 512 GiB span.
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import (
    MADV_DODUMP, MADV_DOFORK, MADV_DONTDUMP, MADV_DONTFORK, MADV_DONTNEED, MADV_DONTNEED_LOCKED,
    MADV_HUGEPAGE, MADV_KEEPONFORK, MADV_NOHUGEPAGE, MADV_NORMAL, MADV_RANDOM, MADV_SEQUENTIAL,
    MADV_WILLNEED, MADV_WIPEONFORK, MAP_FIXED_NOREPLACE, MAP_LOCKED, PROT_EXEC,
)

from conftest import PG, PRIV, RW, SHARED, anon_line, assert_errno, mi, per_design, snapshot, st

M2 = 2 << 20
B = 0x500000000000


def mapped(p, addr, length, prot=RW, flags=PRIV):
    a = p.mmap(addr, length, prot, flags | MAP_FIXED_NOREPLACE)
    assert a == addr
    return a


# ----------------------------------------------------------------------------- DONTNEED
def test_dontneed_zero_fill(m, p):
    """LTP madvise03 + SCENARIO 49 + SEMANTICS R10.2: after DONTNEED a private anon range reads
    zeros, RssAnon/AnonPages drop by the range, the pages return to MemFree, VmPTE is unchanged
    (the 4-page range is far from a whole 2 MiB span)."""
    a = mapped(p, B, 8 * PG)
    p.write(a, b"\xa5" * (8 * PG))
    free0 = mi(m, "MemFree")
    assert (st(p, "RssAnon"), st(p, "VmPTE"), mi(m, "AnonPages")) == (32, 12, 32)
    assert p.madvise(a + 2 * PG, 4 * PG, MADV_DONTNEED) == 0
    assert st(p, "RssAnon") == 16
    assert mi(m, "AnonPages") == 16
    assert mi(m, "MemFree") == free0 + 16
    assert st(p, "VmPTE") == 12
    assert mi(m, "PageTables") == 16
    assert st(p, "VmHWM") == 32
    assert p.read(a + 2 * PG, 4 * PG) == bytes(4 * PG)
    assert p.read(a, 2 * PG) == b"\xa5" * (2 * PG)
    assert p.read(a + 6 * PG, 2 * PG) == b"\xa5" * (2 * PG)
    assert st(p, "RssAnon") == 16            # the reads mapped the zero page
    assert list(p.maps()) == [anon_line(a, a + 8 * PG)]


def test_dontneed_pt_reclaim_whole_span(m, p):
    """SEMANTICS R7.4 (CONFIG_PT_RECLAIM) + SCENARIO 49.

    Verified on Linux 6.18: 4 MiB at a 2 MiB boundary, all written: VmPTE 16 kB. DONTNEED of
    the first 1 MiB: VmPTE 16. DONTNEED of the whole first 2 MiB: VmPTE 12 (its PTE table is
    freed). A read there: 16 again. DONTNEED of all 4 MiB: VmPTE 8 (both PTE tables freed,
    including one that held only a zero-page entry).
    """
    a = mapped(p, B, 2 * M2)
    p.write(a, b"\x07" * (2 * M2))
    free0 = mi(m, "MemFree")
    assert st(p, "VmPTE") == 16 and mi(m, "PageTables") == 20
    p.madvise(a, M2 // 2, MADV_DONTNEED)
    assert st(p, "VmPTE") == 16
    assert st(p, "RssAnon") == 3072
    p.madvise(a, M2, MADV_DONTNEED)
    assert st(p, "VmPTE") == 12
    assert mi(m, "PageTables") == 16
    assert st(p, "RssAnon") == 2048
    assert mi(m, "MemFree") == free0 + 2048 + 4
    assert p.read(a, 1) == b"\x00"
    assert st(p, "VmPTE") == 16
    p.madvise(a, 2 * M2, MADV_DONTNEED)
    assert st(p, "VmPTE") == 8
    assert mi(m, "PageTables") == 12
    assert st(p, "RssAnon") == 0
    assert mi(m, "MemFree") == free0 + 4096 + 8    # all pages + both PTE tables
    assert list(p.maps()) == [anon_line(a, a + 2 * M2)]


def test_dontneed_span_split_over_two_vmas_keeps_table(m, p):
    """SEMANTICS R7.4 (reclaim needs end - start >= PMD_SIZE per VMA zap).

    Verified on Linux 6.18: a 2 MiB span covered by two 1 MiB VMAs (rw-p, rwxp), all written,
    one DONTNEED over both -> VmPTE unchanged (each per-VMA zap covers only 1 MiB).
    """
    a = mapped(p, B, M2 // 2)
    mapped(p, B + M2 // 2, M2 // 2, RW | PROT_EXEC)
    p.write(a, b"\x01" * M2)
    assert st(p, "VmPTE") == 12
    assert p.madvise(a, M2, MADV_DONTNEED) == 0
    assert st(p, "VmPTE") == 12
    assert st(p, "RssAnon") == 0


def test_dontneed_cow_shared_then_parent_reuses(m, p, fork_design):
    """SCENARIO 50 + SEMANTICS R10.2/R6.2: the child DONTNEEDs a COW-shared page; the parent's
    page is then referenced once, so the parent's write reuses it in place
    (vmstat wp_reuse +1, no cow_fault, no allocation); the child reads zeros."""
    a = mapped(p, B, PG)
    p.write(a, b"\x3c" * PG)
    c = p.fork()
    assert st(c, "RssAnon") == per_design(fork_design, 4, deferred=0)  # deferred: the owner counts
    assert mi(m, "AnonPages") == 4
    assert c.madvise(a, PG, MADV_DONTNEED) == 0
    assert st(c, "RssAnon") == 0
    assert st(p, "RssAnon") == 4
    assert mi(m, "AnonPages") == 4              # still mapped by the parent
    free0 = mi(m, "MemFree")
    before = m.vmstat()
    p.write(a, b"\xc3")
    d = m.vmstat() - before
    assert d["wp_reuse"] == 1
    assert d["cow_fault"] == 0
    assert d["pgalloc"] == 0
    assert mi(m, "MemFree") == free0
    assert p.read(a, 2) == b"\xc3\x3c"
    assert c.read(a, PG) == bytes(PG)
    assert st(c, "RssAnon") == 0


def test_dontneed_locked_einval_and_dontneed_locked(m, p):
    """LTP madvise02 case 3 + SEMANTICS R10.2: DONTNEED on an mlocked (MAP_LOCKED) range ->
    EINVAL and nothing changes; MADV_DONTNEED_LOCKED is allowed and drops the page.

    Verified on Linux 6.18: MAP_LOCKED 4 pages -> VmLck 16; DONTNEED -> EINVAL;
    DONTNEED_LOCKED of one page -> 0 and RssAnon -4 kB.
    """
    a = mapped(p, B, 4 * PG, RW, PRIV | MAP_LOCKED)
    assert st(p, "VmLck") == 16
    assert st(p, "RssAnon") == 16
    assert_errno(errno.EINVAL, p.madvise, a, PG, MADV_DONTNEED)
    assert_errno(errno.EINVAL, p.madvise, a, 4 * PG, MADV_DONTNEED)
    assert p.madvise(a, PG, MADV_DONTNEED_LOCKED) == 0
    assert st(p, "RssAnon") == 12


# ----------------------------------------------------------------------------- errors
def test_madvise_errors_einval(m, p):
    """LTP madvise02 cases 1-2 + SEMANTICS R10.1.

    Verified on Linux 6.18: unaligned start -> EINVAL (also with len 0); advice 1212, 5 and 26
    -> EINVAL (also with len 0).
    """
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x10" * (4 * PG))
    assert_errno(errno.EINVAL, p.madvise, a + 100, 4 * PG, MADV_NORMAL)
    assert_errno(errno.EINVAL, p.madvise, a + 100, 0, MADV_DONTNEED)
    assert_errno(errno.EINVAL, p.madvise, a, 4 * PG, 1212)
    assert_errno(errno.EINVAL, p.madvise, a, 4 * PG, 5)
    assert_errno(errno.EINVAL, p.madvise, a, 4 * PG, 26)
    assert_errno(errno.EINVAL, p.madvise, a, 0, 1212)


def test_madvise_wrapping_range_einval(m, p):
    """SEMANTICS R10.1 (madvise_checks / do_madvise: PAGE_ALIGN(len) overflowing to 0, or
    end = start + len < start, -> EINVAL before any VMA is touched).

    Verified on Linux 6.18: madvise(a, 2**64-4096, MADV_DONTNEED) and madvise(a, 2**64-1,
    MADV_DONTNEED) on a written 4-page mapping -> EINVAL, the pages keep their data.
    """
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x10" * (4 * PG))
    assert_errno(errno.EINVAL, p.madvise, a, 2**64 - PG, MADV_DONTNEED)
    assert_errno(errno.EINVAL, p.madvise, a, 2**64 - 1, MADV_DONTNEED)


def test_madvise_len_zero_is_noop(m, p):
    """SEMANTICS R10.1: len 0 -> 0 even where nothing is mapped (verified on Linux 6.18)."""
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x10" * (4 * PG))
    before = snapshot(m)
    assert p.madvise(a, 0, MADV_DONTNEED) == 0
    assert p.madvise(B + 0x100000, 0, MADV_DONTNEED) == 0
    assert p.madvise(a, 0, MADV_WIPEONFORK) == 0
    assert snapshot(m) == before


def test_madvise_unmapped_enomem(m, p):
    """LTP madvise02 case 4 + SEMANTICS R10.1: a range with no VMA at all -> ENOMEM, no change
    (verified on Linux 6.18 for DONTNEED and NORMAL)."""
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x10" * (4 * PG))
    assert_errno(errno.ENOMEM, p.madvise, B + 0x100000, PG, MADV_DONTNEED)
    assert_errno(errno.ENOMEM, p.madvise, B + 0x100000, PG, MADV_NORMAL)
    assert_errno(errno.ENOMEM, p.madvise, B - 4 * PG, 4 * PG, MADV_DONTNEED)


def test_madvise_unmapped_tail_processes_mapped_part(m, p):
    """LTP madvise02 case 4 + SCENARIO 51 + SEMANTICS R10.1: a range with an unmapped tail
    (or head) -> ENOMEM, but the mapped part was advised.

    Verified on Linux 6.18: DONTNEED over [a, a+8p) with only 4 pages mapped -> ENOMEM and the
    pages read 0 afterwards; the same with the hole in front; DONTFORK over [a+2p, a+10p) ->
    ENOMEM and the VMA is split at a+2p.
    """
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x10" * (4 * PG))
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a, 8 * PG, MADV_DONTNEED)
    assert e.value.errno == errno.ENOMEM
    assert st(p, "RssAnon") == 0
    assert p.read(a, 4 * PG) == bytes(4 * PG)

    p.write(a, b"\x10" * (4 * PG))
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a - 4 * PG, 8 * PG, MADV_DONTNEED)
    assert e.value.errno == errno.ENOMEM
    assert st(p, "RssAnon") == 0

    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a + 2 * PG, 8 * PG, MADV_DONTFORK)
    assert e.value.errno == errno.ENOMEM
    assert list(p.maps()) == [anon_line(a, a + 2 * PG), anon_line(a + 2 * PG, a + 4 * PG)]
    assert p.smaps()[1]["VmFlags"].count("dc") == 1
    assert "dc" not in p.smaps()[0]["VmFlags"]


def test_wipeonfork_shared_anon_einval(m, p):
    """LTP madvise02 (WIPEONFORK cases) + SEMANTICS R10.3: WIPEONFORK on MAP_SHARED|MAP_ANONYMOUS
    -> EINVAL (verified on Linux 6.18)."""
    a = mapped(p, B, 4 * PG, RW, SHARED)
    p.write(a, b"s")
    assert_errno(errno.EINVAL, p.madvise, a, 4 * PG, MADV_WIPEONFORK)


def test_madvise_split_at_max_map_count_eagain():
    """SEMANTICS R10.1 (madvise_update_vma: an ENOMEM from vma_modify is reported as EAGAIN).

    Verified on Linux 6.18 (vm.max_map_count 65530): at map_count 65529, MADV_DONTFORK on the
    middle page of a 3-page VMA -> EAGAIN, and the first split was already done (map_count
    65530; maps [y,y+1p) and [y+1p,y+3p)).
    """
    m = mmemu.Machine("1G", max_map_count=8)
    p = m.spawn()
    y = p.mmap(B + 0x100000, 3 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    for i in range(6):
        p.mmap(B + 2 * i * PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert p.mm.map_count == 7
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(y + PG, PG, MADV_DONTFORK)
    assert e.value.errno == errno.EAGAIN
    assert p.mm.map_count == 8
    assert list(p.maps())[-2:] == [anon_line(y, y + PG), anon_line(y + PG, y + 3 * PG)]
    m.check()


# ----------------------------------------------------------------------------- valid advice
@pytest.mark.parametrize("advice,flag", [
    (MADV_NORMAL, None), (MADV_RANDOM, "rr"), (MADV_SEQUENTIAL, "sr"), (MADV_WILLNEED, None),
    (MADV_DONTNEED, None), (MADV_DONTFORK, "dc"), (MADV_DONTDUMP, "dd"),
    (MADV_WIPEONFORK, "wf"), (MADV_HUGEPAGE, "hg"), (MADV_NOHUGEPAGE, "nh"),
])
def test_valid_advice_matrix(m, p, advice, flag):
    """LTP madvise01 + SCENARIO 52: each advice on a suitable anonymous range returns 0.
    Flag-changing advice on the first half splits the VMA (verified on Linux 6.18: maps shows
    two VMAs after RANDOM/SEQUENTIAL/DONTFORK/... on 4 of 8 pages) and sets the smaps VmFlags
    mnemonic; hint-only advice leaves one VMA."""
    a = mapped(p, B, 8 * PG)
    p.write(a, b"\x01" * (8 * PG))
    assert p.madvise(a, 4 * PG, advice) == 0
    if flag is None:
        assert list(p.maps()) == [anon_line(a, a + 8 * PG)]
    else:
        assert list(p.maps()) == [anon_line(a, a + 4 * PG), anon_line(a + 4 * PG, a + 8 * PG)]
        sm = p.smaps()
        assert flag in sm[0]["VmFlags"]
        assert flag not in sm[1]["VmFlags"]
    expected_rss = 16 if advice == MADV_DONTNEED else 32
    assert st(p, "RssAnon") == expected_rss


@pytest.mark.parametrize("set_adv,clear_adv,flag", [
    (MADV_DONTFORK, MADV_DOFORK, "dc"), (MADV_DONTDUMP, MADV_DODUMP, "dd"),
    (MADV_WIPEONFORK, MADV_KEEPONFORK, "wf"), (MADV_RANDOM, MADV_NORMAL, "rr"),
    (MADV_SEQUENTIAL, MADV_NORMAL, "sr"),
])
def test_advice_undo_merges_back(m, p, set_adv, clear_adv, flag):
    """LTP madvise01 + SEMANTICS R10.1: the undoing advice (DOFORK, DODUMP, KEEPONFORK, NORMAL)
    on the same sub-range clears the flag and the VMA merges back into one."""
    a = mapped(p, B, 8 * PG)
    p.write(a, b"\x01" * (8 * PG))
    p.madvise(a + 2 * PG, 4 * PG, set_adv)
    assert len(list(p.maps())) == 3
    assert flag in p.smaps()[1]["VmFlags"]
    assert p.madvise(a + 2 * PG, 4 * PG, clear_adv) == 0
    assert list(p.maps()) == [anon_line(a, a + 8 * PG)]
    assert flag not in p.smaps()[0]["VmFlags"]


# ----------------------------------------------------------------------------- DONTFORK / DOFORK
def test_dontfork_split_fork_and_dofork_merge(m, p, fork_design):
    """SCENARIO 20 + SEMANTICS R10.3/R5.1: DONTFORK on the middle of a VMA splits it into three;
    the child has no VMA there (access -> SEGV_MAPERR) and VmSize lower by the range; DOFORK
    merges the parent's VMA back and the next child gets everything."""
    a = mapped(p, B, 8 * PG)
    p.write(a, b"\x42" * (8 * PG))
    assert p.madvise(a + 2 * PG, 4 * PG, MADV_DONTFORK) == 0
    assert list(p.maps()) == [
        anon_line(a, a + 2 * PG), anon_line(a + 2 * PG, a + 6 * PG), anon_line(a + 6 * PG, a + 8 * PG),
    ]
    c = p.fork()
    assert list(c.maps()) == [anon_line(a, a + 2 * PG), anon_line(a + 6 * PG, a + 8 * PG)]
    assert st(c, "VmSize") == 16 and st(c, "VmData") == 16
    assert st(c, "RssAnon") == 16
    with pytest.raises(mmemu.SegmentationFault) as e:
        c.read(a + 2 * PG, 1)
    assert e.value.code == "SEGV_MAPERR"
    assert c.read(a, 2 * PG) == b"\x42" * (2 * PG)
    assert st(p, "VmSize") == 32 and st(p, "RssAnon") == 32

    assert p.madvise(a + 2 * PG, 4 * PG, MADV_DOFORK) == 0
    assert list(p.maps()) == [anon_line(a, a + 8 * PG)]
    c2 = p.fork()
    assert list(c2.maps()) == [anon_line(a, a + 8 * PG)]
    assert c2.read(a + 2 * PG, 4 * PG) == b"\x42" * (4 * PG)
    assert st(c2, "VmSize") == 32 and st(c2, "RssAnon") == per_design(fork_design, 32, deferred=0)


# ----------------------------------------------------------------------------- WIPEONFORK (madvise10)
def test_wipeonfork_child_reads_zeros(m, p):
    """LTP madvise10 case 1 + SCENARIO 21: a 16 KiB pattern with WIPEONFORK -> the child reads
    zeros and has no RSS for it; the parent keeps the pattern."""
    a = mapped(p, B, 4 * PG)
    pat = bytes(range(256)) * 64
    p.write(a, pat)
    assert p.madvise(a, 4 * PG, MADV_WIPEONFORK) == 0
    c = p.fork()
    assert st(c, "RssAnon") == 0
    assert st(c, "VmSize") == 16
    assert c.read(a, 4 * PG) == bytes(4 * PG)
    assert p.read(a, 4 * PG) == pat


def test_wipeonfork_len_zero_noop(m, p, fork_design):
    """LTP madvise10 case 2 + SCENARIO 22: WIPEONFORK with len 0 does nothing; the child sees the
    pattern."""
    a = mapped(p, B, 4 * PG)
    pat = b"\x5a" * (4 * PG)
    p.write(a, pat)
    assert p.madvise(a, 0, MADV_WIPEONFORK) == 0
    assert "wf" not in p.smaps()[0]["VmFlags"]
    c = p.fork()
    assert c.read(a, 4 * PG) == pat
    assert st(c, "RssAnon") == per_design(fork_design, 16, deferred=0)


def test_wipeonfork_inherited_by_grandchild(m, p):
    """LTP madvise10 case 3 + SCENARIO 23: the flag is inherited; the grandchild reads zeros even
    after the child wrote there."""
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x5a" * (4 * PG))
    p.madvise(a, 4 * PG, MADV_WIPEONFORK)
    c = p.fork()
    assert "wf" in c.smaps()[0]["VmFlags"]
    c.write(a, b"\x77" * (4 * PG))
    g = c.fork()
    assert g.read(a, 4 * PG) == bytes(4 * PG)
    assert c.read(a, 4 * PG) == b"\x77" * (4 * PG)


def test_keeponfork_undoes_wipeonfork(m, p, fork_design):
    """LTP madvise10 case 4 + SCENARIO 24: KEEPONFORK after WIPEONFORK -> the child sees the
    pattern."""
    a = mapped(p, B, 4 * PG)
    pat = b"\x5a" * (4 * PG)
    p.write(a, pat)
    p.madvise(a, 4 * PG, MADV_WIPEONFORK)
    p.madvise(a, 4 * PG, MADV_KEEPONFORK)
    c = p.fork()
    assert c.read(a, 4 * PG) == pat
    assert st(c, "RssAnon") == per_design(fork_design, 16, deferred=0)
