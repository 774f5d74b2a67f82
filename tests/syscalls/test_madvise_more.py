"""madvise(2) beyond DONTNEED/fork advice: MADV_FREE, MADV_POPULATE_READ/WRITE, MADV_REMOVE.

Sources: SEMANTICS R10.1, R10.4; mm/madvise.c (madvise_free_single_vma, madvise_populate,
madvise_remove), mm/gup.c (faultin_page_range, check_vma_flags). Every errno and partial-
application case here was checked on the Linux 6.18 machine the tests run on.

Model choice: MADV_FREE is lazy in Linux (pages stay mapped until reclaim discards the clean
ones). mmemu has no reclaim, so it does that discard at once: exclusive anon pages are
zapped (RssAnon drops, reads give zeros); COW-shared pages are skipped, as Linux skips them.
"""
from __future__ import annotations

import errno

import pytest

import mmemu
from mmemu import (
    MADV_FREE, MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_REMOVE, MAP_FIXED_NOREPLACE,
    MAP_LOCKED, MAP_PRIVATE, MAP_SHARED, PROT_NONE, PROT_READ, PROT_WRITE,
)

from conftest import PG, PRIV, RW, SHARED, assert_errno, mi, st

B = 0x500000000000


def mapped(p, addr, npages, prot=RW, flags=PRIV, **kw):
    a = p.mmap(addr, npages * PG, prot, flags | MAP_FIXED_NOREPLACE, **kw)
    assert a == addr
    return a


# ----------------------------------------------------------------------------- MADV_FREE
def test_free_discards_exclusive_anon_pages(m, p):
    a = mapped(p, B, 8)
    p.write(a, b"\x5a" * (8 * PG))
    free0 = mi(m, "MemFree")
    assert p.madvise(a + 2 * PG, 4 * PG, MADV_FREE) == 0
    assert (st(p, "RssAnon"), mi(m, "AnonPages")) == (16, 16)
    assert mi(m, "MemFree") - free0 == 16
    assert st(p, "VmPTE") == 12 and st(p, "VmHWM") == 32
    assert p.read(a + 2 * PG, 4 * PG) == bytes(4 * PG)
    assert p.read(a + PG, 1) == b"\x5a" and p.read(a + 6 * PG, 1) == b"\x5a"
    assert len(p.maps()) == 1                     # no VMA change


def test_free_skips_cow_shared_pages(m, p):
    """madvise_free_pte_range skips folios mapped by more than one process."""
    a = mapped(p, B, 2)
    p.write(a, b"s" * PG)
    c = p.fork()
    p.write(a + PG, b"e")                         # page 1 is the parent's own copy now
    assert p.madvise(a, 2 * PG, MADV_FREE) == 0
    assert st(p, "RssAnon") == 4
    assert p.read(a, 1) == b"s" and p.read(a + PG, 1) == b"\0"
    assert c.read(a, 1) == b"s"


def test_free_errors(m, p):
    """EINVAL on shared anon, file mappings and VM_LOCKED (madvise_dontneed_free_valid_vma,
    madvise_free_single_vma); nothing changes."""
    s = mapped(p, B, 2, RW, SHARED)
    p.write(s, b"x")
    f = m.create_file("/f", data=b"f" * PG)
    fp = mapped(p, B + 4 * PG, 1, RW, MAP_PRIVATE, file=f)
    p.read(fp, 1)
    lk = mapped(p, B + 8 * PG, 2, RW, PRIV | MAP_LOCKED)
    for addr in (s, fp, lk):
        assert_errno(errno.EINVAL, p.madvise, addr, PG, MADV_FREE)


def test_free_not_atomic_over_vmas_and_holes(m, p):
    """Like every VMA-walking advice: earlier VMAs are processed before the failing one (EINVAL)
    and a hole gives ENOMEM after the mapped parts are done (verified on Linux 6.18)."""
    a = mapped(p, B, 4)
    mapped(p, B + 4 * PG, 4, RW, SHARED)
    p.write(a, b"a" * (4 * PG))
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a, 8 * PG, MADV_FREE)
    assert e.value.errno == errno.EINVAL
    assert st(p, "RssAnon") == 0
    b = mapped(p, B + 16 * PG, 2)
    mapped(p, B + 19 * PG, 2)
    p.write(b, b"b" * (2 * PG))
    p.write(b + 3 * PG, b"c" * (2 * PG))
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(b, 5 * PG, MADV_FREE)
    assert e.value.errno == errno.ENOMEM
    assert st(p, "RssAnon") == 0


# ----------------------------------------------------------------------------- POPULATE
def test_populate_read_private_anon_maps_zero_page(m, p):
    a = mapped(p, B, 16)
    free0 = mi(m, "MemFree")
    assert p.madvise(a, 16 * PG, MADV_POPULATE_READ) == 0
    assert (st(p, "RssAnon"), st(p, "VmPTE")) == (0, 12)
    assert free0 - mi(m, "MemFree") == 12            # tables only
    assert all(int(e) >> 63 for e in p.pagemap(a, 16))
    assert p.mm.vmas[0].anon_vma is None


def test_populate_write_private_anon_and_cow_break(m, p):
    a = mapped(p, B, 4, PROT_WRITE)                  # write-only is fine for POPULATE_WRITE
    assert p.madvise(a, 4 * PG, MADV_POPULATE_WRITE) == 0
    assert (st(p, "RssAnon"), mi(m, "AnonPages")) == (16, 16)
    # populating again changes nothing
    free0 = mi(m, "MemFree")
    assert p.madvise(a, 4 * PG, MADV_POPULATE_WRITE) == 0
    assert mi(m, "MemFree") == free0


def test_populate_write_breaks_cow_after_fork(m, p):
    a = mapped(p, B, 2)
    p.write(a, b"q" * (2 * PG))
    c = p.fork()
    anon0 = mi(m, "AnonPages")
    assert c.madvise(a, 2 * PG, MADV_POPULATE_WRITE) == 0
    assert mi(m, "AnonPages") == anon0 + 8
    assert c.read(a, 1) == b"q" and st(c, "RssAnon") == 8


def test_populate_shared_and_file(m, p):
    s = mapped(p, B, 4, RW, SHARED)
    assert p.madvise(s, 4 * PG, MADV_POPULATE_READ) == 0
    assert (st(p, "RssShmem"), mi(m, "Shmem")) == (16, 16)
    f = m.create_file("/pf", data=b"p" * (3 * PG))
    fs = mapped(p, B + 8 * PG, 3, RW, MAP_SHARED, file=f)
    assert p.madvise(fs, 3 * PG, MADV_POPULATE_WRITE) == 0
    assert (st(p, "RssFile"), st(p, "RssAnon")) == (12, 0)
    fp = mapped(p, B + 16 * PG, 3, RW, MAP_PRIVATE, file=f)
    assert p.madvise(fp, 3 * PG, MADV_POPULATE_WRITE) == 0   # FOLL_WRITE: COW now
    assert (st(p, "RssFile"), st(p, "RssAnon")) == (12, 12)
    assert p.read(fp + 2 * PG, 1) == b"p"


def test_populate_einval_on_permissions(m, p):
    """check_vma_flags without FOLL_FORCE: READ needs VM_READ (PROT_WRITE-only refuses it even
    though x86 can read it), WRITE needs VM_WRITE; PROT_NONE refuses both."""
    w = mapped(p, B, 2, PROT_WRITE)
    r = mapped(p, B + 4 * PG, 2, PROT_READ)
    n = mapped(p, B + 8 * PG, 2, PROT_NONE)
    assert_errno(errno.EINVAL, p.madvise, w, 2 * PG, MADV_POPULATE_READ)
    assert_errno(errno.EINVAL, p.madvise, r, 2 * PG, MADV_POPULATE_WRITE)
    assert_errno(errno.EINVAL, p.madvise, n, 2 * PG, MADV_POPULATE_READ)
    assert_errno(errno.EINVAL, p.madvise, n, 2 * PG, MADV_POPULATE_WRITE)


def test_populate_enomem_on_hole_keeps_earlier_pages(m, p):
    a = mapped(p, B, 4)
    mapped(p, B + 5 * PG, 3)
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a, 8 * PG, MADV_POPULATE_WRITE)
    assert e.value.errno == errno.ENOMEM
    assert st(p, "RssAnon") == 16                    # [a, a+4 pages) populated, after the hole not
    assert not int(p.pagemap(B + 5 * PG, 1)[0]) >> 63
    assert_errno(errno.ENOMEM, p.madvise, B + 4 * PG, 2 * PG, MADV_POPULATE_WRITE)


@pytest.mark.parametrize("advice", [MADV_POPULATE_WRITE, MADV_POPULATE_READ])
def test_populate_of_a_hole_in_a_shared_span_changes_nothing(m, p, advice):
    """Populate that meets the hole first fails with ENOMEM (Linux: faultin_page_range finds
    no VMA) before it changes anything: with COW page tables the child's table over the span
    stays shared (it used to be copied first, then the call failed). A range that starts
    with mapped pages populates those, then fails at the hole, as in Linux (checked on
    6.18: test_populate_enomem_on_hole_keeps_earlier_pages)."""
    a = mapped(p, B, 8)
    p.write(a, b"w" * (8 * PG))
    mapped(p, B + 16 * PG, 4)
    c = p.fork()
    for start, npages in ((B + 8 * PG, 1), (B + 10 * PG, 8)):      # a hole, a hole then a VMA
        assert_errno(errno.ENOMEM, c.madvise, start, npages * PG, advice)
    with pytest.raises(mmemu.MMError) as e:
        c.madvise(a + 6 * PG, 4 * PG, advice)        # two mapped pages, then the hole
    assert e.value.errno == errno.ENOMEM
    pfn = (1 << 55) - 1
    mine = [int(x) & pfn for x in c.pagemap(a, 8)]
    theirs = [int(x) & pfn for x in p.pagemap(a, 8)]
    copied = [x != y for x, y in zip(mine, theirs)]
    assert copied == [False] * 6 + [advice == MADV_POPULATE_WRITE] * 2
    assert p.read(a, 8 * PG) == c.read(a, 8 * PG) == b"w" * (8 * PG)


def test_populate_efault_on_sigbus(m, p):
    f = m.create_file("/short", size=2 * PG)
    a = mapped(p, B, 4, RW, MAP_SHARED, file=f)
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(a, 4 * PG, MADV_POPULATE_READ)
    assert e.value.errno == errno.EFAULT
    assert st(p, "RssFile") == 8


# ----------------------------------------------------------------------------- REMOVE
def test_remove_punches_hole_in_shared_file(m, p):
    """madvise_remove -> fallocate(PUNCH_HOLE|KEEP_SIZE): the pages leave every mapping and
    the page cache; the size stays; the range reads zeros. Private COW copies in another
    mapping survive (unmap_mapping_range without even_cows), its file-page PTEs go."""
    f = m.create_file("/r", data=b"r" * (4 * PG))
    s = mapped(p, B, 4, RW, MAP_SHARED, file=f)
    q = mapped(p, B + 8 * PG, 4, RW, MAP_PRIVATE, file=f)
    p.read(s, 4 * PG)
    p.read(q, 4 * PG)
    p.write(q + PG, b"C")
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Cached"), mi(m, "Mapped")) == (28, 4, 16, 16)
    free0 = mi(m, "MemFree")
    assert p.madvise(s, 2 * PG, MADV_REMOVE) == 0
    assert f.size == 4 * PG
    assert (st(p, "RssFile"), st(p, "RssAnon"), mi(m, "Cached"), mi(m, "Mapped")) == (16, 4, 8, 8)
    assert mi(m, "MemFree") - free0 == 8
    assert m.read_file(f, 0, 2 * PG) == bytes(2 * PG)
    assert p.read(q + PG, 2) == b"Cr"                # the COW copy stays
    assert p.read(q, 1) == b"\0" and p.read(s + 2 * PG, 1) == b"r"


def test_remove_shared_anon(m, p):
    s = mapped(p, B, 4, RW, SHARED)
    p.write(s, b"hello")
    p.touch(s, 4 * PG)
    assert p.madvise(s, PG, MADV_REMOVE) == 0
    assert (st(p, "RssShmem"), mi(m, "Shmem")) == (12, 12)
    assert p.read(s, 5) == bytes(5)


def test_remove_errors(m, p):
    """Private anon -> EINVAL (no file); private file -> EACCES; shared mapping of a read-only
    file -> EACCES (not VM_SHARED|VM_MAYWRITE); VM_LOCKED -> EINVAL. Nothing changes."""
    a = mapped(p, B, 2)
    f = m.create_file("/e", data=b"e" * PG)
    fp = mapped(p, B + 4 * PG, 1, RW, MAP_PRIVATE, file=f)
    ro = m.create_file("/ro", data=b"o" * PG, writable=False)
    rs = mapped(p, B + 8 * PG, 1, PROT_READ, MAP_SHARED, file=ro)
    lk = mapped(p, B + 12 * PG, 1, RW, MAP_SHARED | MAP_LOCKED, file=f)
    p.write(a, b"a")
    assert_errno(errno.EINVAL, p.madvise, a, PG, MADV_REMOVE)
    assert_errno(errno.EACCES, p.madvise, fp, PG, MADV_REMOVE)
    assert_errno(errno.EACCES, p.madvise, rs, PG, MADV_REMOVE)
    assert_errno(errno.EINVAL, p.madvise, lk, PG, MADV_REMOVE)
