"""Guard regions (MADV_GUARD_INSTALL / MADV_GUARD_REMOVE): ports of the kernel selftest
tools/testing/selftests/mm/guard-regions.c over its three backings (private anonymous,
shmem, shared file), plus their statistics. Behaviour the selftest does not pin was
checked on Linux 6.18: a guard PTE reads in pagemap as 0x440000000000009f, the VMA gets
VM_MAYBE_GUARD ("gu" in smaps, no split), fork copies the markers of every VMA that has
them, locked mappings refuse GUARD_INSTALL with EINVAL."""
import errno

import pytest

import mmemu
from conftest import PG, RW, assert_errno, st
from mmemu import (
    MADV_COLD, MADV_DONTNEED, MADV_FREE, MADV_GUARD_INSTALL, MADV_GUARD_REMOVE, MADV_PAGEOUT,
    MADV_POPULATE_READ, MADV_POPULATE_WRITE, MADV_WIPEONFORK, MAP_ANONYMOUS, MAP_FIXED,
    MAP_LOCKED, MAP_PRIVATE, MAP_SHARED, PROT_NONE,
)

BACKINGS = ["anon", "shmem", "file"]
GUARD_PAGEMAP = 0x440000000000009F


@pytest.fixture
def env(m, request):
    """(machine, process, mmap_ helper) for one backing, like the selftest's fixture."""
    backing = request.param
    p = m.spawn()
    f = m.create_file("/guard", size=100 * PG) if backing == "file" else None

    def mmap_(addr, length, prot=RW, extra=0, offset=0):
        if backing == "anon":
            return p.mmap(addr, length, prot, MAP_PRIVATE | MAP_ANONYMOUS | extra)
        if backing == "shmem":
            return p.mmap(addr, length, prot, MAP_SHARED | MAP_ANONYMOUS | extra)
        return p.mmap(addr, length, prot, MAP_SHARED | extra, file=f, offset=offset)

    return backing, p, mmap_, f


def try_read_write(p, addr):
    """try_read_write_buf: True if both a read and a write of one byte succeed."""
    try:
        p.read(addr, 1)
        p.write(addr, b"x")
        return True
    except mmemu.SegmentationFault as e:
        assert e.code == "SEGV_MAPERR" and e.address == addr
        return False


def pattern(npages):
    return b"".join(bytes([ord("a") + i % 26]) * PG for i in range(npages))


all_backings = pytest.mark.parametrize("env", BACKINGS, indirect=True)


@all_backings
def test_basic(env):
    """guard-regions.c basic: install/remove single pages and ranges, over backed pages."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    assert try_read_write(p, ptr)
    assert p.madvise(ptr, PG, MADV_GUARD_INSTALL) == 0
    assert not try_read_write(p, ptr)
    assert all(try_read_write(p, ptr + i * PG) for i in range(1, 10))
    assert p.madvise(ptr + 9 * PG, PG, MADV_GUARD_INSTALL) == 0
    assert not try_read_write(p, ptr) and not try_read_write(p, ptr + 9 * PG)
    assert p.madvise(ptr, PG, MADV_GUARD_REMOVE) == 0
    assert try_read_write(p, ptr)
    assert p.madvise(ptr + 9 * PG, PG, MADV_GUARD_REMOVE) == 0
    assert try_read_write(p, ptr + 9 * PG)
    assert p.madvise(ptr, 3 * PG, MADV_GUARD_INSTALL) == 0
    assert [try_read_write(p, ptr + i * PG) for i in range(10)] == [False] * 3 + [True] * 7
    assert p.madvise(ptr, 10 * PG, MADV_GUARD_REMOVE) == 0
    assert all(try_read_write(p, ptr + i * PG) for i in range(10))
    assert p.madvise(ptr, 10 * PG, MADV_GUARD_REMOVE) == 0       # existing entries stay
    assert all(p.read(ptr + i * PG, 1) == b"x" for i in range(10))
    assert p.munmap(ptr, 10 * PG) == 0


@all_backings
def test_multi_vma(env):
    """guard-regions.c multi_vma: over gaps the mapped parts are guarded and ENOMEM is
    returned; across adjacent incompatible VMAs there is no error."""
    _, p, mmap_, _ = env
    region = mmap_(0, 100 * PG, PROT_NONE)
    p1 = mmap_(region, 10 * PG, RW, MAP_FIXED)
    p2 = mmap_(region + 50 * PG, 5 * PG, RW, MAP_FIXED)
    p3 = mmap_(region + 80 * PG, 20 * PG, RW, MAP_FIXED)
    p.munmap(region + 10 * PG, 40 * PG)
    p.munmap(region + 55 * PG, 25 * PG)
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(region, 100 * PG, MADV_GUARD_INSTALL)
    assert e.value.errno == errno.ENOMEM
    for base, n in ((p1, 10), (p2, 5), (p3, 20)):
        assert not any(try_read_write(p, base + i * PG) for i in range(n))
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(region, 100 * PG, MADV_GUARD_REMOVE)
    assert e.value.errno == errno.ENOMEM
    for base, n in ((p1, 10), (p2, 5), (p3, 20)):
        assert all(try_read_write(p, base + i * PG) for i in range(n))
    mmap_(region + 10 * PG, 40 * PG, RW | 4, MAP_FIXED)         # PROT_EXEC: not mergeable
    mmap_(region + 55 * PG, 25 * PG, RW | 4, MAP_FIXED)
    assert p.madvise(region, 100 * PG, MADV_GUARD_INSTALL) == 0
    assert not any(try_read_write(p, region + i * PG) for i in range(100))
    assert p.madvise(region, 100 * PG, MADV_GUARD_REMOVE) == 0
    assert all(try_read_write(p, region + i * PG) for i in range(100))


@all_backings
def test_munmap_leaves_no_markers(env):
    """guard-regions.c munmap: unmapping drops the markers; a new mapping there is clean."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    p.madvise(ptr, PG, MADV_GUARD_INSTALL)
    p.madvise(ptr + 9 * PG, PG, MADV_GUARD_INSTALL)
    p.munmap(ptr, PG)
    p.munmap(ptr + 9 * PG, PG)
    mmap_(ptr, PG, RW, MAP_FIXED)
    mmap_(ptr + 9 * PG, PG, RW, MAP_FIXED, 9 * PG)
    assert all(try_read_write(p, ptr + i * PG) for i in range(10))


@all_backings
def test_fork_keeps_markers(env, m):
    """guard-regions.c fork: the child inherits the markers; its GUARD_REMOVE does not
    touch the parent."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    assert p.madvise(ptr, 5 * PG, MADV_GUARD_INSTALL) == 0
    c = p.fork()
    assert [try_read_write(c, ptr + i * PG) for i in range(10)] == [False] * 5 + [True] * 5
    assert c.madvise(ptr, 10 * PG, MADV_GUARD_REMOVE) == 0
    c.exit()
    assert [try_read_write(p, ptr + i * PG) for i in range(10)] == [False] * 5 + [True] * 5


@pytest.mark.parametrize("env", ["anon"], indirect=True)
def test_fork_cow(env):
    """guard-regions.c fork_cow: guarding and unguarding in the child leaves zero pages
    there and the parent's data untouched."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    data = bytes(ord("a") + i % 26 for i in range(10 * PG))
    p.write(ptr, data)
    c = p.fork()
    assert c.read(ptr, 10 * PG) == data
    assert c.madvise(ptr, 10 * PG, MADV_GUARD_INSTALL) == 0
    assert c.madvise(ptr, 10 * PG, MADV_GUARD_REMOVE) == 0
    assert c.read(ptr, 10 * PG) == bytes(10 * PG)
    c.exit()
    assert p.read(ptr, 10 * PG) == data


@pytest.mark.parametrize("env", ["anon"], indirect=True)
def test_fork_wipeonfork(env):
    """guard-regions.c fork_wipeonfork: a VM_WIPEONFORK VMA reaches the child without them."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    assert p.madvise(ptr, 10 * PG, MADV_WIPEONFORK) == 0
    assert p.madvise(ptr, 5 * PG, MADV_GUARD_INSTALL) == 0
    c = p.fork()
    assert all(try_read_write(c, ptr + i * PG) for i in range(10))
    c.exit()
    assert [try_read_write(p, ptr + i * PG) for i in range(10)] == [False] * 5 + [True] * 5


@pytest.mark.parametrize("env", ["anon"], indirect=True)
def test_lazyfree_and_dontneed_keep_markers(env):
    """guard-regions.c lazyfree (and R10.4: DONTNEED does not remove them either)."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    p.madvise(ptr, 10 * PG, MADV_GUARD_INSTALL)
    assert p.madvise(ptr, 10 * PG, MADV_FREE) == 0
    assert not any(try_read_write(p, ptr + i * PG) for i in range(10))
    assert p.madvise(ptr, 10 * PG, MADV_DONTNEED) == 0
    assert not any(try_read_write(p, ptr + i * PG) for i in range(10))


@all_backings
def test_populate_efault(env):
    """guard-regions.c populate: MADV_POPULATE_READ/WRITE over markers give EFAULT."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    p.madvise(ptr, 10 * PG, MADV_GUARD_INSTALL)
    assert_errno(errno.EFAULT, p.madvise, ptr, 10 * PG, MADV_POPULATE_READ)
    assert_errno(errno.EFAULT, p.madvise, ptr, 10 * PG, MADV_POPULATE_WRITE)


@all_backings
def test_cold_pageout_keep_markers(env):
    """guard-regions.c cold_pageout."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    p.madvise(ptr, 10 * PG, MADV_GUARD_INSTALL)
    assert p.madvise(ptr, 10 * PG, MADV_COLD) == 0
    assert p.madvise(ptr, 10 * PG, MADV_PAGEOUT) == 0
    assert not any(try_read_write(p, ptr + i * PG) for i in range(10))


@pytest.mark.parametrize("env", ["file"], indirect=True)
def test_map_private(env):
    """guard-regions.c map_private: markers in a shared and a private mapping of one file
    are independent; removing them from the private one re-reads the file."""
    _, p, mmap_, f = env
    shared = mmap_(0, 10 * PG)
    private = p.mmap(0, 10 * PG, RW, MAP_PRIVATE, file=f)
    p.write(shared, pattern(10))
    for i in range(0, 10, 2):
        assert p.madvise(shared + i * PG, PG, MADV_GUARD_INSTALL) == 0

    def readable(base, i):
        try:
            p.read(base + i * PG, 1)
            return True
        except mmemu.SegmentationFault:
            return False

    assert [readable(shared, i) for i in range(10)] == [i % 2 != 0 for i in range(10)]
    assert all(readable(private, i) for i in range(10))
    for i in range(0, 10, 2):
        p.madvise(private + i * PG, PG, MADV_GUARD_INSTALL)
    assert [readable(private, i) for i in range(10)] == [i % 2 != 0 for i in range(10)]
    p.madvise(shared, 10 * PG, MADV_GUARD_REMOVE)
    assert all(readable(shared, i) for i in range(10))
    assert [readable(private, i) for i in range(10)] == [i % 2 != 0 for i in range(10)]
    p.madvise(private, 10 * PG, MADV_GUARD_REMOVE)
    assert p.read(shared, 10 * PG) == pattern(10) == p.read(private, 10 * PG)
    for i in range(0, 10, 2):
        p.write(private + i * PG, bytes([ord("a") + i]) * PG)
    p.madvise(private, 5 * PG, MADV_GUARD_INSTALL)
    assert [readable(private, i) for i in range(10)] == [i >= 5 for i in range(10)]
    p.madvise(private, 10 * PG, MADV_GUARD_REMOVE)
    for i in range(10):
        got = p.read(private + i * PG, PG)
        if i < 5 or i % 2 == 0:
            assert got == p.read(shared + i * PG, PG)
        else:
            assert got == bytes([ord("a") + i]) * PG


@all_backings
def test_mprotect_and_mremap_keep_markers(env):
    """Markers survive mprotect (PROT_NONE and back) and move with mremap."""
    _, p, mmap_, _ = env
    ptr = mmap_(0, 10 * PG)
    p.madvise(ptr + PG, PG, MADV_GUARD_INSTALL)
    p.mprotect(ptr, 10 * PG, PROT_NONE)
    p.mprotect(ptr, 10 * PG, RW)
    assert [try_read_write(p, ptr + i * PG) for i in range(3)] == [True, False, True]
    new = p.mremap(ptr, 10 * PG, 10 * PG, 3, ptr + 64 * PG)       # MAYMOVE|FIXED
    assert [try_read_write(p, new + i * PG) for i in range(3)] == [True, False, True]
    assert int(p.pagemap(new + PG, 1)[0]) == GUARD_PAGEMAP


@all_backings
def test_install_statistics(env, m):
    """Install zaps the range's pages; a marker is not RSS; pagemap and VmFlags show it;
    the VMA is not split (verified on Linux 6.18)."""
    backing, p, mmap_, _ = env
    ptr = mmap_(0, 8 * PG)
    p.write(ptr, b"\x11" * (8 * PG))
    key = {"anon": "RssAnon", "shmem": "RssShmem", "file": "RssFile"}[backing]
    assert st(p, key) == 32
    assert p.madvise(ptr + 2 * PG, 2 * PG, MADV_GUARD_INSTALL) == 0
    assert st(p, key) == 24
    assert [int(x) for x in p.pagemap(ptr + 2 * PG, 2)] == [GUARD_PAGEMAP] * 2
    assert len(p.maps()) == 1 and "gu" in p.smaps()[0]["VmFlags"]
    assert p.smaps()[0]["Rss"] == 24


def test_errors(m, p):
    """GUARD_INSTALL on a locked mapping -> EINVAL; unaligned -> EINVAL; length 0 -> 0;
    a hole -> ENOMEM (all verified on Linux 6.18). GUARD_REMOVE on a locked one works."""
    a = p.mmap(0, 4 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED)
    assert_errno(errno.EINVAL, p.madvise, a, PG, MADV_GUARD_INSTALL)
    assert p.madvise(a, PG, MADV_GUARD_REMOVE) == 0
    b = p.mmap(0, 4 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)
    assert_errno(errno.EINVAL, p.madvise, b + 1, PG, MADV_GUARD_INSTALL)
    assert p.madvise(b, 0, MADV_GUARD_INSTALL) == 0
    with pytest.raises(mmemu.MMError) as e:
        p.madvise(0x10000, PG, MADV_GUARD_INSTALL)
    assert e.value.errno == errno.ENOMEM


def test_markers_in_a_cow_shared_table():
    """COW page tables: installing or removing markers breaks a shared table first; the
    other process's view is unchanged."""
    for mode in ("deferred", "eager"):
        m = mmemu.Machine("64M", cow_pte_accounting=mode)
        p = m.spawn()
        a = p.mmap(0, 8 * PG, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        p.write(a, b"d" * (8 * PG))
        c = p.fork(cow_pgtable=True)
        ev = m.vmstat()
        c.madvise(a, 2 * PG, MADV_GUARD_INSTALL)
        assert (m.vmstat() - ev)["cow_pte_tables_duplicated"] == 1
        assert p.read(a, 2) == b"dd" and not try_read_write(c, a)
        g = c.fork(cow_pgtable=True)                      # markers shared with a grandchild
        assert not try_read_write(g, a) and g.read(a + 2 * PG, 1) == b"d"
        g.madvise(a, 2 * PG, MADV_GUARD_REMOVE)
        assert g.read(a, 1) == b"\0" and not try_read_write(c, a)
        m.check()
        for q in (g, c, p):
            q.exit()
        m.check()
