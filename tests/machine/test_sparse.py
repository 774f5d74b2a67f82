"""Host memory grows with use, not with size: sparse page caches (mmemu._core.filemap),
the fixed-size swap device over MAP_NORESERVE mappings, pagemap() of huge ranges, and
the errors of huge or wrapping arguments.

The host-memory tests run each scenario in a fresh interpreter and measure the growth of
its peak RSS (VmHWM, reset with /proc/self/clear_refs) while the scenario runs."""
import errno
import os

import numpy as np
import pytest

import mmemu
from conftest import PG, PRIV, RW
from mmemu.process import PAGEMAP_MAX_PAGES

TiB, GiB, MiB = 1 << 40, 1 << 30, 1 << 20
from hostmem import HOST_LIMIT_MB, host_growth, needs_clear_refs  # noqa: E402


@needs_clear_refs
@pytest.mark.one_design
def test_sparse_1tib_file_costs_its_pages():
    out = host_growth("""
    def run():
        m = mmemu.Machine("1G")
        f = m.create_file("/sparse", size=TiB)
        offs = [0, 3 * GiB + 5 * PG, TiB // 2 + 123, TiB - PG]
        for i, o in enumerate(offs):
            m.write_file(f, o, bytes([i + 1]) * 100)
        p = m.spawn()
        a = p.mmap(0, TiB, RW, MAP_SHARED | MAP_NORESERVE, file=f)
        got = [p.read(a + o, 100) == bytes([i + 1]) * 100 for i, o in enumerate(offs)]
        p.write(a + 7 * GiB, b"mapped")
        back = m.read_file(f, 7 * GiB, 6)
        m.check()
        return {"got": got, "back": back.decode(), "cached": f.nr_cached,
                "cached_kb": m.meminfo()["Cached"]}
    """)
    assert out["got"] == [True] * 4 and out["back"] == "mapped"
    assert out["cached"] == 5 and out["cached_kb"] == 20
    assert out["grown_mb"] < HOST_LIMIT_MB, out


@needs_clear_refs
@pytest.mark.one_design
def test_128tib_file_works():
    """Linux accepts files up to MAX_LFS_FILESIZE: a 128 TiB file with two pages, read
    back through read(2) and through a mapping of its last GiB, then truncated."""
    out = host_growth("""
    def run():
        m = mmemu.Machine("1G")
        f = m.create_file("/huge", size=128 * TiB)
        m.write_file(f, 128 * TiB - PG, b"end")
        m.write_file(f, 5 * TiB, b"middle")
        p = m.spawn()
        a = p.mmap(0, GiB, PROT_READ, MAP_PRIVATE, file=f, offset=128 * TiB - GiB)
        r1 = p.read(a + GiB - PG, 3).decode()
        cached = m.meminfo()["Cached"]
        hole = p.read(a, 4) == bytes(4)          # a hole: a cache page appears on the fault
        grew = m.meminfo()["Cached"] - cached
        m.check()
        p.munmap(a, GiB)
        f.truncate(PG)
        m.check()
        return {"r1": r1, "r2": m.read_file(f, 5 * TiB, 6).decode(), "hole": hole,
                "grew_kb": grew, "size": f.size, "cached": f.nr_cached,
                "short": len(m.read_file(f, 0, 1 << 62))}
    """)
    assert out["r1"] == "end" and out["r2"] == "" and out["hole"] and out["grew_kb"] == 4
    assert out["size"] == PG and out["cached"] == 0 and out["short"] == PG
    assert out["grown_mb"] < HOST_LIMIT_MB, out


@needs_clear_refs
@pytest.mark.one_design
def test_64tib_shared_anonymous_mapping_works():
    out = host_growth("""
    def run():
        m = mmemu.Machine("1G")
        p = m.spawn()
        a = p.mmap(0, 64 * TiB, RW, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE)
        offs = [0, 17 * GiB + 3 * PG, 40 * TiB, 64 * TiB - PG]
        for i, o in enumerate(offs):
            p.write(a + o, bytes([i + 7]) * 64)
        c = p.fork(cow_pgtable=True)
        got = [c.read(a + o, 64) == bytes([i + 7]) * 64 for i, o in enumerate(offs)]
        st = c.status()
        m.check()
        c.madvise(a, 32 * TiB, mmemu.MADV_REMOVE)          # punches the first two pages
        removed = m.meminfo()["Shmem"]
        c.exit()
        p.munmap(a, 64 * TiB)
        m.check()
        return {"got": got, "shmem_kb": st["RssShmem"], "removed_kb": removed,
                "left_kb": m.meminfo()["Shmem"]}
    """)
    assert out["got"] == [True] * 4 and out["shmem_kb"] == 16 and out["removed_kb"] == 8
    assert out["left_kb"] == 0
    assert out["grown_mb"] < HOST_LIMIT_MB, out


@needs_clear_refs
@pytest.mark.one_design
def test_two_4gib_swap_outs_cost_nothing():
    out = host_growth("""
    def run():
        m = mmemu.Machine("1G", swap="8G")
        p = m.spawn()
        n = []
        for k in range(2):
            a = p.mmap(0, 4 * GiB, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE)
            p.write(a + 3 * GiB, bytes([k + 1]) * PG)
            n.append(p.swap_out(a, 4 * GiB))
            n.append(p.read(a + 3 * GiB, PG) == bytes([k + 1]) * PG)
            p.swap_out(a, 4 * GiB)
        mi = m.meminfo()
        m.check()
        return {"n": n, "total": mi["SwapTotal"], "used": mi["SwapTotal"] - mi["SwapFree"],
                "vmswap": p.status()["VmSwap"]}
    """)
    assert out["n"] == [1, True, 1, True]
    assert out["total"] == 8 << 20 and out["used"] == 8 and out["vmswap"] == 8
    assert out["grown_mb"] < HOST_LIMIT_MB, out


# ----------------------------------------------------------------------------- the swap device
def test_swap_total_is_the_machine_parameter():
    assert mmemu.Machine("64M").meminfo()["SwapTotal"] == 64 << 10       # default: memory
    m = mmemu.Machine("64M", swap="1G")
    assert m.meminfo()["SwapTotal"] == m.meminfo()["SwapFree"] == 1 << 20
    assert mmemu.Machine("64M", swap=0).meminfo()["SwapTotal"] == 0
    for bad in (4095, -4096, 1 << 50, "1.5K"):
        with pytest.raises(ValueError):
            mmemu.Machine("64M", swap=bad)


def test_full_swap_device_keeps_pages_resident():
    """folio_alloc_swap fails: the page stays mapped (shrink_folio_list activate_locked),
    and swap_out reports only the pages that went."""
    m = mmemu.Machine("64M", swap=3 * PG)
    p = m.spawn()
    a = p.mmap(0, 8 * PG, RW, PRIV)
    data = bytes(range(256)) * (8 * PG // 256)
    p.write(a, data)
    assert p.swap_out(a, 8 * PG) == 3
    st = p.status()
    assert st["VmSwap"] == 12 and st["RssAnon"] == 20
    assert m.meminfo()["SwapFree"] == 0
    pm = p.pagemap(a, 8)
    assert [int(e) >> 62 for e in pm] == [1, 1, 1, 2, 2, 2, 2, 2]   # swapped, then present
    assert p.swap_out(a, 8 * PG) == 0
    m.check()
    assert p.read(a, 8 * PG) == data
    assert m.meminfo()["SwapFree"] == 3 * 4 and p.swap_out(a + 4 * PG, 4 * PG) == 3
    m.check()


def test_no_swap_device_swaps_nothing():
    m = mmemu.Machine("64M", swap=0)
    p = m.spawn()
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x" * 4 * PG)
    assert p.swap_out(a, 4 * PG) == 0 and p.status()["RssAnon"] == 16
    m.check()


def test_swap_out_bad_ranges():
    """madvise's argument checks (is_valid_madvise): an unaligned start or a range that
    wraps around the address space is EINVAL; nothing above TASK_SIZE is mapped."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x")
    for addr, length in ((-4096, 8192), (2**64 - PG, 2 * PG), (a + 1, PG)):
        with pytest.raises(mmemu.MMError) as e:
            p.swap_out(addr, length)
        assert e.value.errno == errno.EINVAL
    assert p.swap_out(1 << 48, PG) == 0 and p.swap_out(2**63, 2**62) == 0
    assert p.status()["VmSwap"] == 0
    m.check()


# ----------------------------------------------------------------------------- pagemap and read
def test_pagemap_of_a_huge_range_is_refused_without_allocating():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 2 * PG, RW, PRIV)
    p.write(a, b"x")
    for npages in (2**40, PAGEMAP_MAX_PAGES + 1):
        with pytest.raises(mmemu.MMError) as e:
            p.pagemap(0, npages)
        assert e.value.errno == errno.EINVAL
    assert PAGEMAP_MAX_PAGES == (2**31 - 1 - 4095) // 8        # one read(2): MAX_RW_COUNT
    assert p.pagemap(a, 2)[0] >> 63 == 1


def test_pagemap_chunks_stream_any_range():
    """pagemap_chunks yields only the parts with a PTE table, and they are what pagemap()
    says; everything else reads 0 (checked against pagemap() on a smaller range)."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0x7F0000000000, 4 * PG, RW, PRIV | mmemu.MAP_FIXED)
    b = p.mmap(0x100000000, 1 << 22, RW, PRIV | mmemu.MAP_FIXED)
    p.write(a + PG, b"a")
    p.write(b + (1 << 21) + 5 * PG, b"b")
    chunks = list(p.pagemap_chunks(0, 2**40))
    assert [c[0] for c in chunks] == [b + (1 << 21), 0x7F0000000000]
    assert all(len(c[1]) == 512 for c in chunks)
    for addr, ent in chunks:
        assert np.array_equal(ent, p.pagemap(addr, 512))
    assert [int(e) >> 63 for e in chunks[0][1][:7]] == [0] * 5 + [1, 0]
    assert list(p.pagemap_chunks(b + (1 << 21) + 5 * PG, 1))[0][1][0] >> 63 == 1
    assert list(p.pagemap_chunks(2**48, 2**30)) == []
    small = p.pagemap(b, 1024)
    assert np.count_nonzero(small) == 1 and small[512 + 5] >> 63 == 1


def test_pagemap_above_task_size_reads_zero():
    """x86-64 addresses above TASK_SIZE map nothing of the process (the page-table walk
    must not wrap to low addresses)."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0x10000, PG, RW, PRIV | mmemu.MAP_FIXED)
    p.write(a, b"x")
    assert p.pagemap(a, 1)[0] >> 63 == 1
    assert not np.any(p.pagemap((1 << 48) + a, 1)) and not np.any(p.pagemap(2**63 + a, 1))


def test_read_past_the_mapping_faults_at_its_end():
    """read(a, 2**46) of a 2-page mapping: SIGSEGV at the first byte past it (what the
    CPU does), after the read faults the pages before it; no buffer of 2**46 bytes."""
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 2 * PG, RW, PRIV)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(a, 2**46)
    assert e.value.address == a + 2 * PG and e.value.code == "SEGV_MAPERR"
    assert [int(x) >> 63 for x in p.pagemap(a, 2)] == [1, 1]     # read faults: the zero page
    assert p.status()["VmRSS"] == 0
    b = p.mmap(0, 2 * PG, mmemu.PROT_NONE, PRIV)
    with pytest.raises(mmemu.SegmentationFault) as e:
        p.read(b, 2**46)
    assert e.value.address == b and e.value.code == "SEGV_ACCERR"
    m.check()


def test_read_larger_than_the_host_is_enomem():
    m = mmemu.Machine("64M")
    p = m.spawn()
    a = p.mmap(0, 64 * TiB, mmemu.PROT_READ, PRIV | mmemu.MAP_NORESERVE)
    with pytest.raises(mmemu.MMError) as e:
        p.read(a, 64 * TiB)
    assert e.value.errno == errno.ENOMEM
    assert p.status()["VmRSS"] == 0
    m.check()


# ----------------------------------------------------------------------------- snapshots
def _sparse_view(m):
    """What the sparse machine shows, read without dense arrays (pagemap_chunks)."""
    out = {"meminfo": dict(m.meminfo()), "swap": m.swap}
    for p in m.processes:
        out[p.pid] = (dict(p.status()), [(a, e.tobytes()) for a, e in p.pagemap_chunks(0, 1 << 35)],
                      str(p.maps()))
    for f in m.files:
        idx, pfns = f.cache.entries()
        out[f.path] = (f.size, f.swapbacked, idx.tolist(),
                       [m.phys.frame(int(x)) for x in pfns])
    return out


@pytest.mark.one_design
def test_sparse_machine_round_trips(tmp_path):
    """A 1 TiB file, a 64 TiB shared mapping, a tmpfs file and pages on swap: the snapshot
    holds their pages (not their sizes) and loads back the same machine."""
    m = mmemu.Machine("256M", swap="64M")
    f = m.create_file("/big", size=TiB)
    m.write_file(f, TiB - 10, b"0123456789")
    t = m.create_file("/tmpfs", data=b"t" * 5000, tmpfs=True)
    p = m.spawn()
    a = p.mmap(0, 64 * TiB, RW, mmemu.MAP_SHARED | mmemu.MAP_ANONYMOUS | mmemu.MAP_NORESERVE)
    p.write(a + 33 * TiB, b"shared")
    b = p.mmap(0, 16 * PG, RW, PRIV)
    p.write(b, bytes(range(256)) * 256)
    assert p.swap_out(b, 8 * PG) == 8
    fa = p.mmap(0, 2 * PG, mmemu.PROT_READ, mmemu.MAP_PRIVATE, file=t)
    assert p.read(fa + PG, 3) == b"ttt"
    c = p.fork()
    before = _sparse_view(m)
    path = tmp_path / "sparse.mms"
    m.save(path)
    assert os.path.getsize(path) < 1 << 20
    m2 = mmemu.Machine.load(path, check=True)
    assert _sparse_view(m2) == before
    assert m2.meminfo()["SwapTotal"] == 64 << 10 and m2.meminfo()["Shmem"] == 12
    q = m2.process(c.pid)
    assert q.read(a + 33 * TiB, 6) == b"shared" and q.read(b, 256) == bytes(range(256))
    m2.check()


def _small_snapshot(tmp_path):
    m = mmemu.Machine("64M", swap=16 * PG)
    f = m.create_file("/f", data=b"f" * 3 * PG)
    p = m.spawn()
    p.mmap(0, 3 * PG, mmemu.PROT_READ, mmemu.MAP_SHARED, file=f)
    b = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(b, b"s" * 4 * PG)
    assert p.swap_out(b, 2 * PG) == 2
    m.save(tmp_path / "small.mms")
    return (tmp_path / "small.mms").read_bytes()


def _section(name, dtype, fn):
    def change(body):
        a = np.frombuffer(body[name], dtype=dtype).copy()
        fn(a)
        body[name] = a.tobytes()
    return change


@pytest.mark.one_design
@pytest.mark.parametrize("state_fn, section_fn, pattern", [
    (None, _section("page_cache_index", "<i8", lambda a: a.__setitem__(0, 2)),
     "page cache indexes not increasing"),
    (None, _section("page_cache_index", "<i8", lambda a: a.__setitem__(2, 1 << 60)),
     "page cache indexes not increasing inside the object"),
    (None, _section("page_cache_pfn", "<i8", lambda a: a.__setitem__(1, 1 << 40)),
     "a page cache holds a frame outside memory"),
    (lambda s: s["backings"][0].update(cache=[1, 3]), None, "outside the page cache sections"),
    (lambda s: s["machine"].update(swap=123), None, "multiple of 4096"),
    (lambda s: s["machine"].update(swap=PG), None, "slots must increase inside the device"),
    (None, _section("swap_counts", "<i4", lambda a: a.__setitem__(0, 0)), "counts > 0"),
])
def test_bad_sparse_sections_are_refused(tmp_path, state_fn, section_fn, pattern):
    from test_snapshot import expect, rewrite
    expect(tmp_path, rewrite(_small_snapshot(tmp_path), state_fn=state_fn, section_fn=section_fn),
           pattern)
