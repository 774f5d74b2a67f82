"""mprotect(2): errors, signals, VMA split/merge, partial application, PTE write upgrade,
PROT_NONE round trip.

Sources: SCENARIOS 35-40, LTP testcases/kernel/syscalls/mprotect (mprotect01-05), selftests/mm
merge.c (mprotect_* cases), cow.c test_cow_in_parent_mprotect, SEMANTICS 1.8. Expectations that
are not plain kernel-source facts were checked on the Linux 6.18 machine the tests run on.
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import (
    MAP_FIXED_NOREPLACE, MAP_NORESERVE, PROT_EXEC, PROT_GROWSDOWN, PROT_GROWSUP, PROT_NONE,
    PROT_READ, PROT_SEM, PROT_WRITE,
)

from conftest import PG, PRIV, RW, SHARED, anon_line, assert_errno, mi, snapshot, st

B = 0x500000000000
PTE_PRESENT = 1 << 0
PTE_RW = 1 << 1
PTE_PROTNONE = 1 << 8
PFN_MASK = ((1 << 52) - 1) & ~0xFFF


def pte(p, addr):
    return p.mm.core.walk(addr)[3]


def mapped(p, addr, length, prot=RW, flags=PRIV):
    a = p.mmap(addr, length, prot, flags | MAP_FIXED_NOREPLACE)
    assert a == addr
    return a


# ----------------------------------------------------------------------------- errors
def test_mprotect_errors(m, p):
    """LTP mprotect01 + SEMANTICS R8.1.

    Verified on Linux 6.18: mprotect(NULL, 4097, R) -> ENOMEM; unaligned start -> EINVAL;
    unmapped -> ENOMEM; prot 0x10 -> EINVAL; GROWSDOWN|GROWSUP -> EINVAL; a length that wraps
    (2**64-4096) -> ENOMEM.
    """
    mapped(p, B, 4 * PG)
    p.write(B, b"\x5a" * (4 * PG))
    assert_errno(errno.ENOMEM, p.mprotect, 0, PG + 1, PROT_READ)
    assert_errno(errno.EINVAL, p.mprotect, B + 1, PG, PROT_READ)
    assert_errno(errno.EINVAL, p.mprotect, B + 1, 0, PROT_READ)
    assert_errno(errno.ENOMEM, p.mprotect, B + 8 * PG, PG, PROT_READ)
    assert_errno(errno.ENOMEM, p.mprotect, B - PG, 2 * PG, PROT_READ)
    assert_errno(errno.EINVAL, p.mprotect, B, PG, 0x10)
    assert_errno(errno.EINVAL, p.mprotect, B, PG, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP)
    assert_errno(errno.ENOMEM, p.mprotect, B, 2**64 - PG, PROT_READ)


def test_mprotect_growsdown_on_normal_vma_einval(m, p):
    """SEMANTICS R8.1 (do_mprotect_pkey: PROT_GROWSDOWN on a VMA without VM_GROWSDOWN -> EINVAL).

    Verified on Linux 6.18: mprotect(a+4096, 4096, PROT_READ|PROT_GROWSDOWN) on a plain anon
    VMA -> EINVAL, nothing changed.
    """
    mapped(p, B, 4 * PG)
    assert_errno(errno.EINVAL, p.mprotect, B + PG, PG, PROT_READ | PROT_GROWSDOWN)


def test_mprotect_len_zero_and_sem(m, p):
    """SEMANTICS R8.1: len 0 -> 0 even on an unmapped address; PROT_SEM is accepted and does not
    show in maps. Verified on Linux 6.18."""
    mapped(p, B, 4 * PG)
    before = snapshot(m)
    assert p.mprotect(B + 64 * PG, 0, PROT_READ) == 0
    assert p.mprotect(B, 0, PROT_NONE) == 0
    assert snapshot(m) == before
    assert p.mprotect(B, PG, RW | PROT_SEM) == 0
    assert list(p.maps()) == [anon_line(B, B + 4 * PG, "rw-p")]


# ----------------------------------------------------------------------------- signals
def test_write_readonly_then_upgrade(m, p):
    """LTP mprotect02: a write to a PROT_READ private mapping -> SIGSEGV (SEGV_ACCERR);
    after mprotect(RW) the write succeeds."""
    a = mapped(p, B, 2 * PG, PROT_READ)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.write(a + 10, b"x")
    assert e.value.code == "SEGV_ACCERR" and e.value.address == a + 10
    assert p.mprotect(a, 2 * PG, RW) == 0
    p.write(a + 10, b"x")
    assert p.read(a + 10, 1) == b"x"
    assert list(p.maps()) == [anon_line(B, B + 2 * PG, "rw-p")]


def test_shared_rw_to_ro_write_segv(m, p):
    """LTP mprotect03: shared mapping RW -> RO, then a write -> SIGSEGV; data stays readable."""
    a = mapped(p, B, PG, RW, SHARED)
    p.write(a, b"shared")
    assert p.mprotect(a, PG, PROT_READ) == 0
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.write(a, b"X")
    assert e.value.code == "SEGV_ACCERR"
    assert p.read(a, 6) == b"shared"
    assert pte(p, a) & PTE_RW == 0
    (line,) = list(p.maps())
    assert line.startswith(f"{a:08x}-{a + PG:08x} r--s 00000000 00:01 ")


def test_prot_none_and_write_only(m, p):
    """LTP mprotect04 + SCENARIO 4: PROT_NONE -> any access SIGSEGV (ACCERR);
    PROT_WRITE alone is readable on x86 (fault.c access_error)."""
    a = mapped(p, B, 2 * PG)
    p.write(a, b"abc")
    p.mprotect(a, PG, PROT_NONE)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(a, 1)
    assert e.value.code == "SEGV_ACCERR"
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.write(a, b"z")
    assert e.value.code == "SEGV_ACCERR"
    p.mprotect(a, PG, PROT_WRITE)
    assert p.read(a, 3) == b"abc"
    p.write(a, b"Z")
    assert p.read(a, 3) == b"Zbc"
    assert list(p.maps()) == [anon_line(a, a + PG, "-w-p"), anon_line(a + PG, a + 2 * PG, "rw-p")]


# ----------------------------------------------------------------------------- split / merge
@pytest.mark.parametrize("flags,suffix", [(PRIV, "p"), (SHARED, "s")], ids=["private", "shared"])
def test_mprotect05_split_and_merge(m, p, flags, suffix):
    """LTP mprotect05 (anonymous version of the file test) + SCENARIO 37.

    5 pages PROT_READ; page 1 -> EXEC, page 3 -> WRITE (five VMAs); then [1,5) -> READ merges
    everything back into one VMA. Verified on Linux 6.18 for MAP_PRIVATE and MAP_SHARED anon
    (private: page 3 is unfaulted, so VM_ACCOUNT is dropped again when it loses PROT_WRITE and
    nothing stops the merge).
    """
    a = mapped(p, B, 5 * PG, PROT_READ, flags)
    assert p.mprotect(a + PG, PG, PROT_EXEC) == 0
    assert p.mprotect(a + 3 * PG, PG, PROT_WRITE) == 0
    perms = [line.split()[1] for line in p.maps()]
    assert perms == ["r--" + suffix, "--x" + suffix, "r--" + suffix, "-w-" + suffix, "r--" + suffix]
    if flags == PRIV:
        assert list(p.maps()) == [
            anon_line(a, a + PG, "r--p"), anon_line(a + PG, a + 2 * PG, "--xp"),
            anon_line(a + 2 * PG, a + 3 * PG, "r--p"), anon_line(a + 3 * PG, a + 4 * PG, "-w-p"),
            anon_line(a + 4 * PG, a + 5 * PG, "r--p"),
        ]
    else:   # shmem: the offset column is pgoff << 12 (verified: 00001000, 00002000, ...)
        offs = [line.split()[2] for line in p.maps()]
        assert offs == ["00000000", "00001000", "00002000", "00003000", "00004000"]
    assert p.mprotect(a + PG, 4 * PG, PROT_READ) == 0
    (line,) = list(p.maps())
    assert line.startswith(f"{a:08x}-{a + 5 * PG:08x} r--{suffix} 00000000 ")
    assert st(p, "VmSize") == 20


def test_mprotect05_faulted_write_page_keeps_account(m, p):
    """LTP mprotect05 variant + SEMANTICS R8.2 (VM_ACCOUNT is charged when a private mapping
    first becomes writable and is only dropped again while the VMA has no anon_vma).

    Verified on Linux 6.18: as mprotect05, but page 3 is written while RW -> after
    mprotect([1,5), READ) maps shows 0-3 r--p, 3-4 r--p, 4-5 r--p (page 3 keeps VM_ACCOUNT).
    """
    a = mapped(p, B, 5 * PG, PROT_READ)
    p.mprotect(a + PG, PG, PROT_EXEC)
    p.mprotect(a + 3 * PG, PG, RW)
    p.write(a + 3 * PG, b"w")
    p.mprotect(a + 3 * PG, PG, PROT_WRITE)
    p.mprotect(a + PG, 4 * PG, PROT_READ)
    assert list(p.maps()) == [
        anon_line(a, a + 3 * PG, "r--p"),
        anon_line(a + 3 * PG, a + 4 * PG, "r--p"),
        anon_line(a + 4 * PG, a + 5 * PG, "r--p"),
    ]
    assert p.read(a + 3 * PG, 1) == b"w"


def test_merge_mprotect_unfaulted_left(m, p):
    """selftests merge.c mprotect_unfaulted_left (verified on Linux 6.18)."""
    ptr = mapped(p, B + PG, 10 * PG, RW, PRIV | MAP_NORESERVE)
    p.mprotect(ptr, 5 * PG, PROT_READ)
    p.write(ptr + 5 * PG, b"x")
    p.mprotect(ptr + 5 * PG, 5 * PG, PROT_READ)
    assert list(p.maps()) == [anon_line(ptr, ptr + 10 * PG, "r--p")]


def test_merge_mprotect_unfaulted_right(m, p):
    """selftests merge.c mprotect_unfaulted_right."""
    ptr = mapped(p, B + PG, 10 * PG, RW, PRIV | MAP_NORESERVE)
    p.mprotect(ptr + 5 * PG, 5 * PG, PROT_READ)
    p.write(ptr, b"x")
    p.mprotect(ptr, 5 * PG, PROT_READ)
    assert list(p.maps()) == [anon_line(ptr, ptr + 10 * PG, "r--p")]


def test_merge_mprotect_unfaulted_both(m, p):
    """selftests merge.c mprotect_unfaulted_both."""
    ptr = mapped(p, B + 2 * PG, 9 * PG, RW, PRIV | MAP_NORESERVE)
    p.mprotect(ptr, 3 * PG, PROT_READ)
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    assert len(list(p.maps())) == 3
    p.write(ptr + 3 * PG, b"x")
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert list(p.maps()) == [anon_line(ptr, ptr + 9 * PG, "r--p")]


def test_merge_mprotect_faulted_left_unfaulted_right(m, p):
    """selftests merge.c mprotect_faulted_left_unfaulted_right."""
    ptr = mapped(p, B + 2 * PG, 9 * PG, RW, PRIV | MAP_NORESERVE)
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    p.write(ptr, b"x")
    p.mprotect(ptr, 3 * PG, PROT_READ)
    assert len(list(p.maps())) == 3
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert list(p.maps()) == [anon_line(ptr, ptr + 9 * PG, "r--p")]


def test_merge_mprotect_unfaulted_left_faulted_right(m, p):
    """selftests merge.c mprotect_unfaulted_left_faulted_right."""
    ptr = mapped(p, B + 2 * PG, 9 * PG, RW, PRIV | MAP_NORESERVE)
    p.mprotect(ptr, 3 * PG, PROT_READ)
    p.write(ptr + 3 * PG, b"x")
    p.mprotect(ptr + 6 * PG, 3 * PG, PROT_READ)
    assert len(list(p.maps())) == 3
    p.mprotect(ptr + 3 * PG, 3 * PG, PROT_READ)
    assert list(p.maps()) == [anon_line(ptr, ptr + 9 * PG, "r--p")]


def test_ro_then_rw_back_merges_without_noreserve(m, p):
    """SEMANTICS R8.2: with VM_ACCOUNT (no MAP_NORESERVE) RW -> RO -> RW on the first half
    merges back, faulted or not. Verified on Linux 6.18 (one rw-p VMA in both cases)."""
    a = mapped(p, B, 10 * PG)
    p.mprotect(a, 5 * PG, PROT_READ)
    p.mprotect(a, 5 * PG, RW)
    assert list(p.maps()) == [anon_line(a, a + 10 * PG, "rw-p")]
    p.write(a, b"x")
    p.mprotect(a, 5 * PG, PROT_READ)
    assert len(list(p.maps())) == 2
    p.mprotect(a, 5 * PG, RW)
    assert list(p.maps()) == [anon_line(a, a + 10 * PG, "rw-p")]


def test_vmdata_follows_mprotect(m, p):
    """SEMANTICS R8.2 (vm_stat_account(old,-n) then (new,+n)).

    Verified on Linux 6.18: 8 RW pages -> VmData +32; first half RO -> +16; all PROT_NONE -> 0;
    all RW -> +32. VmSize stays 32.
    """
    a = mapped(p, B, 8 * PG)
    assert st(p, "VmData") == 32
    p.mprotect(a, 4 * PG, PROT_READ)
    assert st(p, "VmData") == 16
    p.mprotect(a, 8 * PG, PROT_NONE)
    assert st(p, "VmData") == 0
    p.mprotect(a, 8 * PG, RW)
    assert st(p, "VmData") == 32
    assert st(p, "VmSize") == 32


# ----------------------------------------------------------------------------- partial application
def test_partial_application_on_hole(m, p):
    """SCENARIO 38 + SEMANTICS R8.1: mprotect across [A][hole][B] -> ENOMEM, and A is already
    changed (not atomic).

    Verified on Linux 6.18: A=4 pages, hole 4 pages, B=4 pages, mprotect(A, 12 pages, READ) ->
    ENOMEM, maps: A r--p, B rw-p. Starting in the middle of A: A is split, its upper half r--p.
    """
    a = mapped(p, B, 4 * PG)
    b = mapped(p, B + 8 * PG, 4 * PG)
    p.write(a, b"A" * (4 * PG))
    with pytest.raises(mmemu.MMError) as e:
        p.mprotect(a, 12 * PG, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert list(p.maps()) == [anon_line(a, a + 4 * PG, "r--p"), anon_line(b, b + 4 * PG, "rw-p")]
    with pytest.raises(mmemu.SegmentationFault):
        p.write(a, b"x")
    p.write(b, b"y")

    p.mprotect(a, 4 * PG, RW)
    with pytest.raises(mmemu.MMError) as e:
        p.mprotect(a + 2 * PG, 8 * PG, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert list(p.maps()) == [
        anon_line(a, a + 2 * PG, "rw-p"), anon_line(a + 2 * PG, a + 4 * PG, "r--p"),
        anon_line(b, b + 4 * PG, "rw-p"),
    ]
    assert pte(p, a + 2 * PG) & PTE_RW == 0
    assert pte(p, a) & PTE_RW == PTE_RW


def test_partial_application_past_last_vma(m, p):
    """SEMANTICS R8.1: a range running past the last VMA -> ENOMEM after changing the mapped
    part. Verified on Linux 6.18: mprotect(a+2p, 4p, READ) on a 4-page VMA -> ENOMEM, split."""
    a = mapped(p, B, 4 * PG)
    with pytest.raises(mmemu.MMError) as e:
        p.mprotect(a + 2 * PG, 4 * PG, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert list(p.maps()) == [anon_line(a, a + 2 * PG, "rw-p"), anon_line(a + 2 * PG, a + 4 * PG, "r--p")]
    assert st(p, "VmData") == 8


def test_split_at_max_map_count():
    """SEMANTICS R8.2 (split_vma: map_count >= max_map_count -> ENOMEM), non-atomic.

    Verified on Linux 6.18 (vm.max_map_count 65530): at map_count == 65530 an mprotect that
    needs a split -> ENOMEM, nothing changed. At 65529, mprotect of the middle page of a 3-page
    VMA -> ENOMEM *after the first split was done*: maps then shows [x,x+1p) and [x+1p,x+3p),
    both still rw-p, and map_count is 65530.
    """
    m = mmemu.Machine("1G", max_map_count=8)
    p = m.spawn()
    x = p.mmap(B + 0x100000, 3 * PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    for i in range(7):
        p.mmap(B + 2 * i * PG, PG, RW, PRIV | MAP_FIXED_NOREPLACE)
    assert p.mm.map_count == 8
    assert_errno(errno.ENOMEM, p.mprotect, x + PG, PG, PROT_READ)
    assert_errno(errno.ENOMEM, p.mprotect, x, PG, PROT_READ)
    p.munmap(B, PG)
    assert p.mm.map_count == 7
    with pytest.raises(mmemu.MMError) as e:
        p.mprotect(x + PG, PG, PROT_READ)
    assert e.value.errno == errno.ENOMEM
    assert p.mm.map_count == 8
    assert list(p.maps())[-2:] == [anon_line(x, x + PG, "rw-p"), anon_line(x + PG, x + 3 * PG, "rw-p")]
    m.check()


# ----------------------------------------------------------------------------- PTE write upgrade
def test_rw_upgrade_exclusive_anon_no_fault(m, p):
    """SCENARIO 39 + SEMANTICS R8.3 (can_change_pte_writable: anon + PageAnonExclusive).

    Populate, mprotect(R): PTEs lose RW. mprotect(RW): the PTEs are RW at once, so writes take
    no fault and allocate nothing.
    """
    a = mapped(p, B, 4 * PG)
    p.write(a, b"\x01" * (4 * PG))
    pfns = [pte(p, a + i * PG) & PFN_MASK for i in range(4)]
    p.mprotect(a, 4 * PG, PROT_READ)
    for i in range(4):
        e = pte(p, a + i * PG)
        assert e & PTE_PRESENT and not e & PTE_RW
    p.mprotect(a, 4 * PG, RW)
    for i in range(4):
        e = pte(p, a + i * PG)
        assert e & PTE_PRESENT and e & PTE_RW
        assert e & PFN_MASK == pfns[i]
    free0 = mi(m, "MemFree")
    before = m.vmstat()
    p.write(a, b"\x02" * (4 * PG))
    d = m.vmstat() - before
    assert d["pgfault"] == 0
    assert d["wp_reuse"] == 0 and d["cow_fault"] == 0 and d["pgalloc"] == 0
    assert mi(m, "MemFree") == free0
    assert st(p, "RssAnon") == 16
    assert p.read(a, 4 * PG) == b"\x02" * (4 * PG)


def test_rw_upgrade_not_for_zero_page(m, p):
    """SEMANTICS R8.3: zero-page PTEs stay read-only after RO -> RW; the write then takes a
    fault that allocates a zeroed page (cow from the zero page)."""
    a = mapped(p, B, PG)
    assert p.read(a, 1) == b"\x00"
    zero_pte = pte(p, a)
    assert zero_pte & PTE_PRESENT and not zero_pte & PTE_RW
    p.mprotect(a, PG, PROT_READ)
    p.mprotect(a, PG, RW)
    assert pte(p, a) & PTE_RW == 0
    before = m.vmstat()
    p.write(a, b"q")
    d = m.vmstat() - before
    assert d["pgfault"] == 1 and d["pgalloc"] == 1
    assert st(p, "RssAnon") == 4
    assert pte(p, a) & PTE_RW


def test_rw_upgrade_not_after_fork(m, p):
    """SCENARIO 39 second half / cow.c test_cow_in_parent_mprotect + SEMANTICS R8.3: after fork
    the parent's pages are not AnonExclusive, so RO -> RW leaves the PTE read-only; the write
    copies (cow_fault +1) and the child keeps its data."""
    a = mapped(p, B, PG)
    p.write(a, b"\x11" * PG)
    c = p.fork()
    p.mprotect(a, PG, PROT_READ)
    p.mprotect(a, PG, RW)
    assert pte(p, a) & PTE_RW == 0
    before = m.vmstat()
    p.write(a, b"\xff" * PG)
    d = m.vmstat() - before
    assert d["pgfault"] == 1
    assert d["cow_fault"] == 1 and d["wp_reuse"] == 0 and d["pgalloc"] == 1
    assert c.read(a, PG) == b"\x11" * PG
    assert p.read(a, PG) == b"\xff" * PG


# ----------------------------------------------------------------------------- PROT_NONE round trip
def test_prot_none_then_back(m, p):
    """SCENARIO 40 + SEMANTICS R8.3 / 1.2: PROT_NONE makes present PTEs PROTNONE (P=0, bit 8 set)
    but keeps the pages: RSS, VmPTE and MemFree unchanged; back to RW the data is intact and the
    exclusive pages are writable again without a fault."""
    a = mapped(p, B, 4 * PG)
    data = bytes(range(256)) * (4 * PG // 256)
    p.write(a, data)
    pfns = [pte(p, a + i * PG) & PFN_MASK for i in range(4)]
    free0, rss0, pte0 = mi(m, "MemFree"), st(p, "RssAnon"), st(p, "VmPTE")
    assert (rss0, pte0) == (16, 12)

    p.mprotect(a, 4 * PG, PROT_NONE)
    assert list(p.maps()) == [anon_line(a, a + 4 * PG, "---p")]
    for i in range(4):
        e = pte(p, a + i * PG)
        assert e & PTE_PROTNONE
        assert not e & PTE_PRESENT
        assert e & PFN_MASK == pfns[i]
    assert st(p, "RssAnon") == 16 and st(p, "VmPTE") == 12
    assert mi(m, "MemFree") == free0 and mi(m, "AnonPages") == 16
    assert p.smaps()[0]["Rss"] == 16
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(a + PG, 1)
    assert e.value.code == "SEGV_ACCERR"

    p.mprotect(a, 4 * PG, RW)
    for i in range(4):
        e = pte(p, a + i * PG)
        assert e & PTE_PRESENT and e & PTE_RW and not e & PTE_PROTNONE
        assert e & PFN_MASK == pfns[i]
    before = m.vmstat()
    assert p.read(a, 4 * PG) == data
    p.write(a, b"\x00")
    assert (m.vmstat() - before)["pgfault"] == 0
    assert mi(m, "MemFree") == free0 and st(p, "RssAnon") == 16
