"""Files and file mappings: Machine.create_file / read_file / write_file / unlink, File.truncate,
mmap(file=...) MAP_PRIVATE / MAP_SHARED / MAP_SHARED_VALIDATE, faults, SIGBUS, COW of file
pages, fork, /proc views.

Sources: LTP testcases/kernel/syscalls/mmap (mmap01, 02, 07, 08, 09, 13, 20), SCENARIOS 15, 16,
25, 26, SEMANTICS R1.1, R4.1, R4.6, R5.2, R5.5, R6.3, R6.4, R8.1, R10.2, R10.3, 1.3, 1.13.
Counter expectations are derived from the rules; behaviour that is not plain from the kernel
source was checked on the Linux 6.18 machine the tests run on (tmpfs and ext4 files).

Every test runs in the three fork designs; where a COW page-table design defines a
statistic differently (the README's table), the test asserts it per design.

Read faults fault around like Linux (do_fault_around + filemap_map_pages): every cached
page in the 16-page aligned window around the fault, inside the VMA and the PTE table,
whose PTE is none is mapped too; holes are not.
"""
from __future__ import annotations

import errno

import numpy as np
import pytest

import mmemu
from mmemu import (
    MADV_DONTNEED, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_GROWSDOWN,
    MAP_HUGETLB, MAP_POPULATE, MAP_PRIVATE, MAP_SHARED, MAP_SHARED_VALIDATE, MAP_SYNC, PROT_READ, PROT_WRITE,
)

from conftest import PG, RW, assert_errno, mi, per_design, st

B = 0x500000000000          # an otherwise empty 512 GiB span: first touch costs PUD+PMD+PTE


def fmap(p, f, npages, prot=RW, flags=MAP_SHARED, offset=0, addr=B):
    a = p.mmap(addr, npages * PG, prot, flags | MAP_FIXED_NOREPLACE, file=f, offset=offset)
    assert a == addr
    return a


def pattern(npages):
    """Page i filled with byte i+1."""
    return b"".join(bytes([i + 1]) * PG for i in range(npages))


def smap(p, addr):
    return next(e for e in p.smaps() if e["start"] == addr)


def cache_pfn(f, idx):
    return int(f.cache[idx])


# ----------------------------------------------------------------------------- the file API
def test_create_file_page_cache_counters(m):
    """A file with data keeps one page-cache frame per data page: Cached and MemFree move by
    those pages, Shmem does not (regular-file accounting), Mapped stays 0 until a fault."""
    free0, cached0 = mi(m, "MemFree"), mi(m, "Cached")
    f = m.create_file("/data/a", data=b"A" * (3 * PG) + b"B" * 10)
    assert f.size == 3 * PG + 10 and f.npages == 4 and f.nr_cached == 4
    assert mi(m, "Cached") - cached0 == 16
    assert free0 - mi(m, "MemFree") == 16
    assert (mi(m, "Shmem"), mi(m, "Mapped"), mi(m, "AnonPages")) == (0, 0, 0)
    assert m.read_file(f, 0, 3) == b"AAA"
    assert m.read_file(f, 3 * PG - 2, 100) == b"AA" + b"B" * 10     # short read at EOF
    assert m.read_file(f, f.size, 10) == b""
    assert m.files == [f]
    assert f.name == "/data/a"


def test_holes_read_zero_without_allocating(m):
    """A sized empty file is all hole: read(2) gives zeros and allocates nothing
    (shmem_file_read_iter maps holes to the zero page)."""
    cached0, free0 = mi(m, "Cached"), mi(m, "MemFree")
    f = m.create_file("/hole", size=8 * PG)
    assert f.nr_cached == 0
    assert m.read_file(f, 5 * PG - 3, 6) == bytes(6)
    assert (mi(m, "Cached"), mi(m, "MemFree")) == (cached0, free0)


def test_write_file_extends_and_allocates_only_touched_pages(m):
    f = m.create_file("/w", size=PG)
    free0 = mi(m, "MemFree")
    assert m.write_file(f, 5 * PG + 100, b"xyz") == 3
    assert f.size == 5 * PG + 103 and f.nr_cached == 1
    assert free0 - mi(m, "MemFree") == 4
    assert m.read_file(f, 5 * PG + 99, 10) == b"\0xyz"
    assert m.read_file(f, 2 * PG, 4) == bytes(4)
    # a write spanning a page boundary fills two pages
    m.write_file(f, 2 * PG - 1, b"12")
    assert f.nr_cached == 3 and m.read_file(f, 2 * PG - 1, 2) == b"12"


def test_file_errors(m):
    f = m.create_file("/e", data=b"x")
    with pytest.raises(mmemu.MMError) as e:
        m.create_file("/e")
    assert e.value.errno == errno.EEXIST
    with pytest.raises(mmemu.MMError) as e:
        f.truncate(-1)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(mmemu.MMError) as e:
        m.write_file(f, -1, b"x")
    assert e.value.errno == errno.EINVAL
    ro = m.create_file("/ro", data=b"r", writable=False)
    with pytest.raises(mmemu.MMError) as e:
        m.write_file(ro, 0, b"x")            # write(2) on an O_RDONLY descriptor
    assert e.value.errno == errno.EBADF
    assert m.read_file(ro, 0, 5) == b"r"
    m.unlink("/e")
    with pytest.raises(mmemu.MMError) as e:
        m.unlink("/e")
    assert e.value.errno == errno.ENOENT


def test_create_file_enomem_changes_nothing():
    m = mmemu.Machine("64K")             # 16 frames, one is the zero page
    before = dict(m.meminfo())
    with pytest.raises(mmemu.MMError) as e:
        m.create_file("/big", data=bytes(20 * PG))
    assert e.value.errno == errno.ENOMEM
    assert dict(m.meminfo()) == before and m.files == []
    m.check()


# ----------------------------------------------------------------------------- faults
def test_shared_read_fault_ltp_mmap02(m, p):
    """LTP mmap02 + R4.6: PROT_READ MAP_SHARED of a file shows its contents. A read fault maps
    the cache page: RssFile +4 kB, Mapped +4 kB, VmPTE +12 kB on first use, MemFree -12 kB
    (tables only), Cached and AnonPages unchanged."""
    f = m.create_file("/mmapfile", data=b"A" * PG, writable=False)
    free0, cached0 = mi(m, "MemFree"), mi(m, "Cached")
    a = fmap(p, f, 1, PROT_READ)
    assert mi(m, "MemFree") == free0                # mmap allocates nothing
    assert p.read(a, PG) == m.read_file(f, 0, PG) == b"A" * PG
    assert (st(p, "RssFile"), st(p, "RssAnon"), st(p, "RssShmem"), st(p, "VmPTE")) == (4, 0, 0, 12)
    assert (mi(m, "Mapped"), mi(m, "AnonPages"), mi(m, "Shmem")) == (4, 0, 0)
    assert mi(m, "Cached") == cached0
    assert free0 - mi(m, "MemFree") == 12
    pfn = cache_pfn(f, 0)
    assert m.phys.mapcount[pfn] == 1 and m.phys.refcount[pfn] == 2      # PTE + page cache
    assert int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1) == pfn
    assert int(p.pagemap(a, 1)[0]) >> 61 & 1                           # PM_FILE


def test_smaps_file_pages(m, p):
    """smaps of file pages: refcount >= 2 (the page cache's reference) so sharing is judged by
    mapcount. A page written by write(2) is Dirty (folio dirty), a hole filled by a fault is
    Clean (verified on Linux 6.18, tmpfs and ext4). Anonymous 0."""
    f = m.create_file("/s", data=b"d" * PG, size=2 * PG)
    a = fmap(p, f, 2, PROT_READ, MAP_PRIVATE)
    p.read(a, 2 * PG)
    s = smap(p, a)
    assert (s["Rss"], s["Pss"], s["Private_Dirty"], s["Private_Clean"]) == (8, 8, 4, 4)
    assert (s["Shared_Clean"], s["Shared_Dirty"], s["Anonymous"], s["Referenced"]) == (0, 0, 0, 8)
    # a second process maps the same pages: both become Shared, Pss halves
    q = m.spawn()
    fmap(q, f, 2, PROT_READ, MAP_PRIVATE)
    q.read(a, 2 * PG)
    for proc in (p, q):
        s = smap(proc, a)
        assert (s["Rss"], s["Pss"], s["Shared_Dirty"], s["Shared_Clean"]) == (8, 4, 4, 4)
        assert (s["Private_Dirty"], s["Private_Clean"]) == (0, 0)
    assert mi(m, "Mapped") == 8      # pages, not mappings


def test_maps_line_shows_file(m, p):
    """show_map_vma: offset = pgoff << 12, dev, inode and the path; 's' for MAP_SHARED."""
    f = m.create_file("/var/lib/x.db", size=8 * PG)
    fmap(p, f, 2, RW, MAP_SHARED, offset=3 * PG)
    fmap(p, f, 1, PROT_READ, MAP_PRIVATE, offset=PG, addr=B + 4 * PG)
    dev = "%02x:%02x" % f.dev
    lines = list(p.maps())
    assert lines[0] == f"{B:08x}-{B + 2 * PG:08x} rw-s 00003000 {dev} {f.inode} ".ljust(72) + " /var/lib/x.db"
    assert lines[1] == f"{B + 4 * PG:08x}-{B + 5 * PG:08x} r--p 00001000 {dev} {f.inode} ".ljust(72) + " /var/lib/x.db"
    vmf = smap(p, B)["VmFlags"]
    assert "sh" in vmf and "ms" in vmf and "mw" in vmf


def test_offset_mapping_reads_the_right_pages(m, p):
    f = m.create_file("/off", data=pattern(4))
    a = fmap(p, f, 2, PROT_READ, MAP_PRIVATE, offset=2 * PG)
    assert p.read(a, 1) == b"\x03" and p.read(a + PG, 1) == b"\x04"
    assert p.mm.vmas[0].pgoff == 2


def test_beyond_eof_zeroed_and_not_written_ltp_mmap01(m, p):
    """LTP mmap01: the part of the last page past EOF reads zeros; bytes stored there through
    the mapping are not part of the file."""
    f = m.create_file("/mmapfile", data=b"hello world\n")
    a = fmap(p, f, 1)
    assert p.read(a + 12, PG - 12) == bytes(PG - 12)
    p.write(a + 12, b"XYZ")
    assert f.size == 12
    assert m.read_file(f, 0, PG) == b"hello world\n"
    assert b"XYZ" not in m.read_file(f, 0, 1 << 20)


def test_sigbus_past_eof_ltp_mmap13(m, p):
    """LTP mmap13 + R4.1: a file of half a page mapped over 2 pages: the second page is past
    EOF -> SIGBUS (BusError); nothing is allocated for it."""
    f = m.create_file("/mmapfile", size=PG // 2)
    a = fmap(p, f, 2)
    before = (st(p, "RssFile"), mi(m, "Cached"))
    with pytest.raises(mmemu.BusError) as e:
        p.write(a + PG + 1, b"\0")
    assert e.value.address == a + PG + 1 and e.value.signo == 7     # si_addr: the byte
    with pytest.raises(mmemu.BusError):
        p.read(a + PG, 1)
    assert (st(p, "RssFile"), mi(m, "Cached")) == before
    p.write(a, b"ok")                   # the first page is inside the file
    assert m.read_file(f, 0, 2) == b"ok"
    q = fmap(p, f, 2, RW, MAP_PRIVATE, addr=B + 4 * PG)
    with pytest.raises(mmemu.BusError):
        p.read(q + PG, 1)               # private mappings too


def test_shared_write_lands_in_file_and_vice_versa(m, p):
    """do_shared_fault: a shared write maps the cache page writable + dirty, no copy.
    write(2) through the cache shows up in the mapping at once."""
    f = m.create_file("/sh", size=2 * PG)
    a = fmap(p, f, 2)
    free0 = mi(m, "MemFree")
    p.write(a + 10, b"mapped")
    assert m.read_file(f, 10, 6) == b"mapped"
    assert free0 - mi(m, "MemFree") == 4 + 12        # one cache page + PUD/PMD/PTE
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "AnonPages"), mi(m, "Cached")) == (4, 0, 0, 4)
    assert smap(p, a)["Private_Dirty"] == 4
    m.write_file(f, PG + 5, b"written")
    assert p.read(a + PG + 5, 7) == b"written"


# ----------------------------------------------------------------------------- private COW
def test_private_read_then_write_copies_R63(m, p):
    """R6.3/R6.4: a private file page mapped read-only by a read fault is always copied on
    write: RssFile -4, RssAnon +4, Mapped -4, AnonPages +4, MemFree -4; the file is unchanged
    and its page stays cached."""
    f = m.create_file("/priv", data=b"F" * PG)
    a = fmap(p, f, 1, RW, MAP_PRIVATE)
    assert p.read(a, 1) == b"F"
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Mapped"), mi(m, "AnonPages")) == (4, 0, 4, 0)
    assert p.mm.vmas[0].anon_vma is None          # a read fault prepares no anon_vma
    free0, cached0 = mi(m, "MemFree"), mi(m, "Cached")
    p.write(a, b"P")
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Mapped"), mi(m, "AnonPages")) == (0, 4, 0, 4)
    assert free0 - mi(m, "MemFree") == 4 and mi(m, "Cached") == cached0
    assert p.read(a, 2) == b"PF" and m.read_file(f, 0, 2) == b"FF"
    assert p.mm.vmas[0].anon_vma is not None
    pfn = cache_pfn(f, 0)
    assert (m.phys.mapcount[pfn], m.phys.refcount[pfn]) == (0, 1)
    # the private copy is not the file any more: write(2) is not seen there
    m.write_file(f, 0, b"N")
    assert p.read(a, 1) == b"P"


def test_private_write_fault_is_do_cow_fault(m, p):
    """R4.6 do_cow_fault: a first write to a private file page copies at once; the cache page
    is never mapped (Mapped 0). On a hole the cache page is created first (Cached +4)."""
    f = m.create_file("/cow", data=b"C" * PG, size=2 * PG)
    a = fmap(p, f, 2, RW, MAP_PRIVATE)
    free0, cached0 = mi(m, "MemFree"), mi(m, "Cached")
    p.write(a + 1, b"w")
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Mapped"), mi(m, "AnonPages")) == (0, 4, 0, 4)
    assert free0 - mi(m, "MemFree") == 4 + 12 and mi(m, "Cached") == cached0
    assert p.read(a, 3) == b"CwC"
    p.write(a + PG, b"h")                       # hole: cache page + anon copy
    assert mi(m, "Cached") == cached0 + 4
    assert (st(p, "RssAnon"), mi(m, "AnonPages")) == (8, 8)
    assert m.read_file(f, PG, 2) == b"\0\0"


def test_scenario15_private_vs_shared_mapping_of_same_file(m, p):
    """SCENARIO 15 (cow.c run_with_tmpfile + test_cow): a private RW and a shared RO mapping of
    the same page-filled file; writing the private one leaves the shared one unchanged, and
    the writer's RssFile -1 / RssAnon +1 page."""
    f = m.create_file("/tmpfile", data=b"\x01" * PG)
    mem = fmap(p, f, 1, RW, MAP_PRIVATE)
    smem = fmap(p, f, 1, PROT_READ, MAP_SHARED, addr=B + 2 * PG)
    assert p.read(mem, PG) == p.read(smem, PG) == b"\x01" * PG
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Mapped")) == (8, 0, 4)
    p.write(mem, b"\xff" * PG)
    assert p.read(smem, PG) == b"\x01" * PG
    assert p.read(mem, PG) == b"\xff" * PG
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Mapped"), mi(m, "AnonPages")) == (4, 4, 4, 4)


# ----------------------------------------------------------------------------- fork
def test_scenario16_private_file_written_before_fork(m, p, fork_design):
    """SCENARIO 16 + R5.2/R5.5: once a private file VMA has an anon_vma, fork copies all its
    PTEs, read-only file pages included: the child's RssFile counts them (verified on Linux
    6.18: child smaps Rss 16 kB, Anonymous 4 kB for 4 pages with page 0 written). A VMA that
    was only read is not copied (child Rss 0 there)."""
    f = m.create_file("/p16", data=pattern(4))
    a = fmap(p, f, 4, RW, MAP_PRIVATE)
    b = fmap(p, f, 4, RW, MAP_PRIVATE, addr=B + (4 << 20))
    p.read(a, 4 * PG)
    p.write(a, b"W")
    p.read(b, 4 * PG)
    mapped0, anon0, pt0 = mi(m, "Mapped"), mi(m, "AnonPages"), mi(m, "PageTables")
    assert (st(p, "RssFile"), st(p, "RssAnon")) == (28, 4)
    c = p.fork()
    # a's span is shared by the COW designs (a private file VMA is eligible); deferred
    # accounting leaves the shared table's pages to the parent
    assert (st(c, "RssFile"), st(c, "RssAnon")) == per_design(fork_design, (12, 4), deferred=(0, 0))
    sa, sb = smap(c, a), smap(c, b)
    assert (sa["Rss"], sa["Anonymous"], sb["Rss"]) == (16, 4, 0)      # smaps walks the table
    assert (mi(m, "Mapped"), mi(m, "AnonPages")) == (mapped0, anon0)       # R5.7
    # child tables: PGD + PUD + PMD + one PTE table for a (b's span is not copied); a COW
    # fork shares a's PTE table instead (eager still counts it in the child's VmPTE)
    assert st(c, "VmPTE") == per_design(fork_design, 12, deferred=8)
    assert mi(m, "PageTables") - pt0 == per_design(fork_design, 16, deferred=12, eager=12)
    pfn1 = cache_pfn(f, 1)
    # a, b, child a + cache (deferred: the child's view of a is not yet accounted)
    assert (m.phys.mapcount[pfn1], m.phys.refcount[pfn1]) == per_design(fork_design, (3, 4), deferred=(2, 3))
    assert c.read(a, 1) == b"W" and c.read(a + PG, 1) == b"\x02"
    assert c.read(b + 3 * PG, 1) == b"\x04"                                  # faults in the child
    # ... and fault-around maps all four cached pages of b
    assert st(c, "RssFile") == per_design(fork_design, 28, deferred=16)


def test_scenario26_shared_file_after_fork(m, p):
    """SCENARIO 26 + R5.2: a MAP_SHARED file VMA is not copied (child RssFile 0 for it); the
    child's writes land in the same page-cache pages, visible to the parent, no COW."""
    f = m.create_file("/s26", size=2 * PG)
    a = fmap(p, f, 2)
    p.write(a, b"parent")
    p.write(a + PG, b"p2")
    c = p.fork()
    assert (st(c, "RssFile"), st(c, "RssAnon"), st(c, "VmPTE")) == (0, 0, 0)
    anon0, cached0 = mi(m, "AnonPages"), mi(m, "Cached")
    c.write(a, b"CHILD")
    assert p.read(a, 6) == b"CHILDt"
    assert st(c, "RssFile") == 4 and st(c, "VmPTE") == 12
    assert (mi(m, "AnonPages"), mi(m, "Cached")) == (anon0, cached0)
    s = smap(c, a)
    assert (s["Rss"], s["Pss"], s["Shared_Dirty"]) == (4, 2, 4)
    c.exit()
    assert st(p, "RssFile") == 8


def test_file_cache_survives_process_exit(m, p):
    f = m.create_file("/persist", size=3 * PG)
    a = fmap(p, f, 3)
    p.write(a, b"z" * (3 * PG))
    cached = mi(m, "Cached")
    p.exit()
    assert mi(m, "Cached") == cached == 12 and mi(m, "Mapped") == 0
    assert m.read_file(f, 0, 3 * PG) == b"z" * (3 * PG)


# ----------------------------------------------------------------------------- mmap errors
def test_read_only_file_shared_write_eacces_ltp_mmap07(m, p):
    """LTP mmap07 / SEMANTICS 1.3: MAP_SHARED + PROT_WRITE of a file open read-only ->
    EACCES, nothing changes."""
    f = m.create_file("/ro", data=b"r" * PG, writable=False)
    assert_errno(errno.EACCES, p.mmap, B, PG, RW, MAP_SHARED, file=f)
    assert_errno(errno.EACCES, p.mmap, B, PG, PROT_WRITE, MAP_SHARED_VALIDATE, file=f)


def test_read_only_file_shared_read_then_mprotect_eacces(m, p):
    """do_mmap trims VM_MAYWRITE and VM_SHARED for a read-only file's MAP_SHARED (VM_MAYSHARE
    stays: 'r--s'), so mprotect(PROT_WRITE) later gives EACCES (R8.1; verified on Linux 6.18
    with /dev/shm). MAP_PRIVATE with PROT_WRITE is allowed and copies on write."""
    f = m.create_file("/ro", data=b"r" * PG, writable=False)
    a = fmap(p, f, 1, PROT_READ, MAP_SHARED)
    assert p.maps()[0].split()[1] == "r--s"
    vmf = smap(p, a)["VmFlags"]
    assert "ms" in vmf and "sh" not in vmf and "mw" not in vmf
    assert p.read(a, 1) == b"r"
    assert_errno(errno.EACCES, p.mprotect, a, PG, RW)
    b = fmap(p, f, 1, RW, MAP_PRIVATE, addr=B + 2 * PG)
    p.write(b, b"w")
    assert p.read(b, 2) == b"wr" and m.read_file(f, 0, 2) == b"rr"


def test_map_shared_validate_ltp_mmap20(m, p):
    """LTP mmap20: MAP_SHARED_VALIDATE with a flag the kernel does not know -> EOPNOTSUPP.

    mmap20 uses 1<<7, which on x86-64 is MAP_ABOVE4G and accepted by Linux 6.18 (verified);
    0x200 is the first bit refused. MAP_SYNC (tmpfs has no FOP_MMAP_SYNC) and
    MAP_FIXED_NOREPLACE are refused too (verified on Linux 6.18). Plain MAP_SHARED ignores
    unknown flags."""
    f = m.create_file("/file_to_mmap", data=b"a" * 1024)
    for bad in (0x200, MAP_SYNC, MAP_FIXED_NOREPLACE, 0x80000000):
        assert_errno(errno.EOPNOTSUPP, p.mmap, B, 1024, RW, MAP_SHARED_VALIDATE | bad, file=f)
    a = p.mmap(0, 1024, RW, MAP_SHARED_VALIDATE | 0x80, file=f)
    p.write(a, b"v")
    assert m.read_file(f, 0, 2) == b"va"
    b = p.mmap(0, 1024, RW, MAP_SHARED | 0x200, file=f)
    assert p.read(b, 1) == b"v"
    assert [line.split()[1] for line in p.maps()] == ["rw-s", "rw-s"]


def test_file_mmap_einval_eoverflow_ebadf(m, p):
    """do_mmap / ksys_mmap_pgoff on a file (verified on Linux 6.18): no file without
    MAP_ANONYMOUS -> EBADF (LTP mmap08); MAP_HUGETLB on a non-hugetlbfs file -> EINVAL;
    MAP_GROWSDOWN -> EINVAL; map type 0 -> EINVAL; unaligned offset -> EINVAL; an offset
    past MAX_LFS_FILESIZE or negative -> EOVERFLOW; len 0 -> EINVAL."""
    f = m.create_file("/f", size=4 * PG)
    assert_errno(errno.EBADF, p.mmap, 0, PG, RW, MAP_SHARED)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_SHARED | MAP_HUGETLB, file=f)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_PRIVATE | MAP_GROWSDOWN, file=f)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_SHARED | MAP_GROWSDOWN, file=f)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, 0, file=f)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, 0xF, file=f)
    assert_errno(errno.EINVAL, p.mmap, 0, PG, RW, MAP_SHARED, file=f, offset=100)
    assert_errno(errno.EOVERFLOW, p.mmap, 0, PG, RW, MAP_SHARED, file=f, offset=(1 << 63) - PG)
    assert_errno(errno.EOVERFLOW, p.mmap, 0, PG, RW, MAP_SHARED, file=f, offset=-PG)
    assert_errno(errno.EINVAL, p.mmap, 0, 0, RW, MAP_SHARED, file=f)
    # MAP_ANONYMOUS wins over a file, as the kernel ignores fd then
    a = p.mmap(0, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS, file=f)
    assert p.mm.vma_at(a).backing is None
    # the File can also be passed where the fd goes
    b = p.mmap(0, PG, PROT_READ, MAP_SHARED, f)
    assert p.mm.vma_at(b).backing is f


def test_mapping_past_eof_is_allowed_but_sigbus(m, p):
    """An offset beyond EOF maps fine (verified on Linux 6.18) and every access is SIGBUS."""
    f = m.create_file("/short", size=PG)
    a = p.mmap(0, PG, RW, MAP_SHARED, file=f, offset=100 * PG)
    with pytest.raises(mmemu.BusError):
        p.read(a, 1)


def test_wipeonfork_on_file_mapping_einval_ltp_madvise02(m, p):
    """SCENARIO 25 / LTP madvise02: MADV_WIPEONFORK on a shared or private file mapping ->
    EINVAL, nothing changes."""
    f = m.create_file("/w", size=2 * PG)
    a = fmap(p, f, 1, RW, MAP_SHARED)
    b = fmap(p, f, 1, RW, MAP_PRIVATE, addr=B + 2 * PG)
    assert_errno(errno.EINVAL, p.madvise, a, PG, MADV_WIPEONFORK)
    assert_errno(errno.EINVAL, p.madvise, b, PG, MADV_WIPEONFORK)


# ----------------------------------------------------------------------------- VMA handling
def test_adjacent_mappings_of_contiguous_file_pages_merge(m, p):
    f = m.create_file("/merge", size=4 * PG)
    fmap(p, f, 2, RW, MAP_SHARED)
    fmap(p, f, 2, RW, MAP_SHARED, offset=2 * PG, addr=B + 2 * PG)
    assert len(p.maps()) == 1 and f.users == 1
    fmap(p, f, 1, RW, MAP_SHARED, offset=0, addr=B + 4 * PG)      # pgoff not contiguous
    assert len(p.maps()) == 2


def test_partial_munmap_and_map_fixed_over_file(m, p):
    f = m.create_file("/split", data=pattern(4))
    a = fmap(p, f, 4, PROT_READ, MAP_SHARED)
    p.read(a, 4 * PG)
    p.munmap(a + PG, PG)
    assert [line.split()[2] for line in p.maps()] == ["00000000", "00002000"]
    assert p.read(a + 2 * PG, 1) == b"\x03"
    assert st(p, "RssFile") == 12 and mi(m, "Mapped") == 12
    p.mmap(a + 2 * PG, PG, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED)
    assert st(p, "RssFile") == 8 and p.read(a + 2 * PG, 1) == b"\0"


def test_map_populate_file(m, p):
    """MAP_POPULATE (populate_vma_page_range): a private writable file mapping is write-faulted
    (all pages COWed: RssAnon), a shared one read-faulted; populate stops silently at EOF."""
    f = m.create_file("/pop", data=pattern(3))
    a = p.mmap(B, 4 * PG, RW, MAP_PRIVATE | MAP_FIXED | MAP_POPULATE, file=f)
    assert (st(p, "RssAnon"), st(p, "RssFile")) == (12, 0)
    assert p.read(a + 2 * PG, 1) == b"\x03"
    b = p.mmap(B + (4 << 20), 4 * PG, RW, MAP_SHARED | MAP_FIXED | MAP_POPULATE, file=f)
    assert st(p, "RssFile") == 12
    with pytest.raises(mmemu.BusError):
        p.read(b + 3 * PG, 1)


def test_dontneed_private_file_rereads_file_R102(m, p):
    """R10.2: after MADV_DONTNEED a private file mapping re-reads the file (COWed data is
    lost); a shared one keeps its data in the page cache."""
    f = m.create_file("/dn", data=b"f" * (2 * PG))
    a = fmap(p, f, 2, RW, MAP_PRIVATE)
    s = fmap(p, f, 2, RW, MAP_SHARED, addr=B + 4 * PG)
    p.write(a, b"private")
    p.write(s + PG, b"shared")
    assert p.madvise(a, 2 * PG, MADV_DONTNEED) == 0
    assert p.madvise(s, 2 * PG, MADV_DONTNEED) == 0
    assert (st(p, "RssAnon"), st(p, "RssFile"), mi(m, "AnonPages")) == (0, 0, 0)
    assert p.read(a, 7) == b"fffffff"
    assert p.read(s + PG, 6) == b"shared"
    assert p.read(a + PG, 6) == b"shared"


# ----------------------------------------------------------------------------- truncate
def test_truncate_mapped_file_ltp_mmap09(m, p):
    """LTP mmap09: ftruncate a 16 KiB MAP_SHARED-mapped file to 8 KiB, to 16 KiB + 1 KiB and to
    0. Shrinking unmaps the pages past EOF (RssFile, Mapped drop), frees their cache pages
    (Cached, MemFree) and makes accesses there SIGBUS; growing makes them holes (zeros)."""
    f = m.create_file("/mmaptest", size=1 << 14)
    a = fmap(p, f, 5)
    p.write(a, b"A" * (1 << 14))
    assert (st(p, "RssFile"), mi(m, "Cached"), mi(m, "Mapped")) == (16, 16, 16)
    free0 = mi(m, "MemFree")
    f.truncate((1 << 14) - 8192)
    assert (st(p, "RssFile"), mi(m, "Cached"), mi(m, "Mapped")) == (8, 8, 8)
    assert mi(m, "MemFree") - free0 == 8
    assert st(p, "VmPTE") == 12                     # tables stay (zap_page_range_single)
    with pytest.raises(mmemu.BusError):
        p.read(a + 2 * PG, 1)
    assert p.read(a + PG, 1) == b"A"
    f.truncate((1 << 14) + 1024)
    assert f.npages == 5
    assert p.read(a + 2 * PG, 4) == bytes(4)        # a hole now
    assert p.read(a + 4 * PG + 2000, 1) == b"\0"    # past EOF in the last page: zeros
    assert mi(m, "Cached") == 16
    f.truncate(0)
    assert (st(p, "RssFile"), mi(m, "Cached"), mi(m, "Mapped")) == (0, 0, 0)
    for i in range(5):
        with pytest.raises(mmemu.BusError):
            p.read(a + i * PG, 1)


def test_truncate_zaps_private_cow_copies_and_zeroes_tail(m, p):
    """truncate_pagecache: unmap_mapping_range(even_cows=1) drops private COW copies past the
    new EOF too (RssAnon, AnonPages drop); a page still partly inside the file keeps its COW
    copy; the cached tail past the new EOF is zeroed (truncate_inode_partial_folio).
    Verified on Linux 6.18 (ftruncate to PG+1 keeps the COWed page, to PG drops it)."""
    f = m.create_file("/t", data=b"x" * (2 * PG))
    a = fmap(p, f, 2, RW, MAP_PRIVATE)
    s = fmap(p, f, 2, RW, MAP_SHARED, addr=B + 4 * PG)
    p.write(a + PG, b"P")
    p.read(s, 2 * PG)
    assert (st(p, "RssAnon"), st(p, "RssFile")) == (4, 8)
    f.truncate(PG + 1)
    assert (st(p, "RssAnon"), st(p, "RssFile")) == (4, 8)
    assert p.read(a + PG, 2) == b"Px"                # private copy untouched
    assert p.read(s + PG, 2) == b"x\0"               # cache tail zeroed
    f.truncate(PG)
    assert (st(p, "RssAnon"), st(p, "RssFile"), mi(m, "AnonPages")) == (0, 4, 0)
    with pytest.raises(mmemu.BusError):
        p.read(a + PG, 1)
    f.truncate(2 * PG)
    assert p.read(a + PG, 2) == b"\0\0"              # re-read from the (hole) file


def test_truncate_unmaps_in_every_process(m, p):
    f = m.create_file("/multi", data=pattern(3))
    a = fmap(p, f, 3)
    p.read(a, 3 * PG)
    c = p.fork()
    c.read(a, 3 * PG)
    assert st(c, "RssFile") == 12
    f.truncate(PG)
    assert (st(p, "RssFile"), st(c, "RssFile"), mi(m, "Mapped"), mi(m, "Cached")) == (4, 4, 4, 4)
    with pytest.raises(mmemu.BusError):
        c.read(a + 2 * PG, 1)


def test_truncate_grow_keeps_stale_tail_like_tmpfs(m, p):
    """Growing does not zero the old last page past the old EOF (tmpfs; verified on Linux
    6.18, where ext4 does zero it): bytes stored there through a shared mapping appear."""
    f = m.create_file("/g", data=b"q" * 100)
    a = fmap(p, f, 2)
    p.write(a + 200, b"JUNK")
    assert m.read_file(f, 200, 4) == b""
    f.truncate(PG)
    assert m.read_file(f, 200, 4) == b"JUNK"


def test_growing_file_is_seen_by_every_vma(m, p):
    """The page cache is one sparse tree that grows in place (it is never replaced): a
    mapping made before the file grew sees the new pages."""
    f = m.create_file("/grow", size=PG)
    a = fmap(p, f, 64)
    old = f.cache
    m.write_file(f, 40 * PG, b"far")
    assert f.cache is old and len(f.cache) == 1 and cache_pfn(f, 40) >= 0 and cache_pfn(f, 39) == -1
    assert p.read(a + 40 * PG, 3) == b"far"
    p.write(a + 39 * PG, b"near")
    assert m.read_file(f, 39 * PG, 4) == b"near"
    with pytest.raises(mmemu.BusError):
        p.read(a + 41 * PG, 1)


# ----------------------------------------------------------------------------- unlink
def test_unlink_frees_cache_after_last_unmap(m, p):
    """The page cache lives while the file has a name or a mapping; maps shows
    "(deleted)" after unlink."""
    cached0, free0 = mi(m, "Cached"), mi(m, "MemFree")
    f = m.create_file("/u", data=b"u" * (3 * PG))
    a = fmap(p, f, 3)
    p.read(a, 3 * PG)
    p.munmap(a, PG)
    m.unlink(f)
    assert m.files == [] and f.unlinked
    assert p.maps()[0].endswith("/u (deleted)")
    assert mi(m, "Cached") == cached0 + 12
    assert p.read(a + PG, 1) == b"u"
    c = p.fork()                                     # the child's VMA holds it too
    p.munmap(a + PG, 2 * PG)
    assert mi(m, "Cached") == cached0 + 12
    c.exit()
    assert mi(m, "Cached") == cached0
    # the cache pages, the child and p's emptied tables are all back
    assert mi(m, "MemFree") == free0
    assert f not in m._backings
    g = m.create_file("/u", data=b"new")            # the name is free again
    assert m.read_file(g, 0, 3) == b"new"


def test_unlink_unmapped_file_frees_at_once(m):
    f = m.create_file("/x", data=bytes(5 * PG))
    assert mi(m, "Cached") == 20
    f.unlink()
    assert mi(m, "Cached") == 0 and f.nr_cached == 0


# ----------------------------------------------------------------------------- exactness
def test_random_io_matches_a_bytearray_model(m, p):
    """write_file, shared-mapping writes and truncates against a plain bytearray model."""
    rng = np.random.default_rng(7)
    f = m.create_file("/model", size=0)
    a = fmap(p, f, 16)
    model = bytearray()
    for _ in range(200):
        op = rng.integers(4)
        if op == 0:
            off = int(rng.integers(0, 15 * PG))
            data = rng.integers(0, 256, int(rng.integers(1, 3 * PG)), dtype=np.uint8).tobytes()
            data = data[:16 * PG - off]
            m.write_file(f, off, data)
            if off > len(model):
                model += bytes(off - len(model))
            model[off:off + len(data)] = data
        elif op == 1 and len(model):
            off = int(rng.integers(0, len(model)))
            data = rng.integers(0, 256, int(rng.integers(1, len(model) - off + 1)), dtype=np.uint8).tobytes()
            p.write(a + off, data)
            model[off:off + len(data)] = data
        elif op == 2:
            size = int(rng.integers(0, 16 * PG))
            if size < len(model):
                del model[size:]
            else:
                model += bytes(size - len(model))
            f.truncate(size)
        else:
            assert m.read_file(f, 0, 16 * PG) == bytes(model)
            if len(model):
                assert p.read(a, len(model)) == bytes(model)
        assert f.size == len(model)
    m.check()
