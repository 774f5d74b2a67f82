"""Writes that cover whole anonymous pages (fault.pyx access_range): the fault's zeroing or
COW copy of such a page is dead, so the core skips its bytes (pm.overwrite) and stores the
caller's bytes around the cache when the write is 4 MiB or more. What a program sees and
what the counters say must be exactly what the byte-by-byte path gives: a twin machine
that writes one byte less per page (so no page is written whole) is the reference."""
import numpy as np
import pytest

import mmemu
from conftest import PG, PRIV, RW
from mmemu import MAP_FIXED, MAP_SHARED, MADV_HUGEPAGE

BASE = 0x7E0000000000


def _twins(**kw):
    return [mmemu.Machine("128M", **kw) for _ in range(2)]


def _write(p, addr, data, whole):
    """The data; the twin (whole=False) writes each page but its last byte, then that byte."""
    if whole:
        p.write(addr, data)
        return
    for off in range(0, len(data), PG):
        p.write(addr + off, data[off:off + PG - 1])
    for off in range(0, len(data), PG):
        p.write(addr + off + PG - 1, data[off + PG - 1:off + PG])


def _work(m):
    return {k: int(v) for k, v in m.vmstat().items() if v}


@pytest.mark.parametrize("npages", [8, 2048])     # 32 KiB; 8 MiB: stores around the cache
def test_cow_of_whole_pages_after_fork(npages):
    rng = np.random.default_rng(npages)
    a_data = rng.integers(0, 256, npages * PG, dtype=np.uint8).tobytes()
    b_data = rng.integers(0, 256, npages * PG, dtype=np.uint8).tobytes()
    seen = []
    for whole, m in zip((True, False), _twins()):
        p = m.spawn()
        p.mmap(BASE, npages * PG, RW, PRIV | MAP_FIXED)
        _write(p, BASE, a_data, whole)
        c = p.fork()
        _write(c, BASE, b_data, whole)
        assert p.read(BASE, npages * PG) == a_data
        assert c.read(BASE, npages * PG) == b_data
        m.check()
        c.exit()
        p.munmap(BASE, npages * PG)
        m.check()
        seen.append(_work(m))
    # the byte-by-byte twin faults at the first byte of each page: the same faults
    assert seen[0]["pages_copied"] == seen[1]["pages_copied"] == npages
    assert seen[0]["cow_fault"] == seen[1]["cow_fault"] == npages


def test_reused_frames_are_zero_where_a_write_did_not_cover_them():
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(BASE, 64 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"\xAA" * 64 * PG)                 # every frame holds data
    p.munmap(BASE, 64 * PG)
    p.mmap(BASE, 64 * PG, RW, PRIV | MAP_FIXED)     # the same frames come back
    p.write(BASE + 100, b"\x55" * (8 * PG))         # pages 0 and 8 partly, 1-7 whole
    got = p.read(BASE, 10 * PG)
    assert got == bytes(100) + b"\x55" * (8 * PG) + bytes(2 * PG - 100)
    assert p.read(BASE + 10 * PG, 54 * PG) == bytes(54 * PG)
    m.check()


def test_cow_of_the_zero_page_written_whole():
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"\x11" * 16 * PG)
    p.munmap(BASE, 16 * PG)                          # frames with data are free again
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED)
    assert p.read(BASE, 16 * PG) == bytes(16 * PG)  # the zero page
    p.write(BASE + PG, b"\x22" * 14 * PG)
    assert p.read(BASE, 16 * PG) == bytes(PG) + b"\x22" * 14 * PG + bytes(PG)
    m.check()


def test_a_private_file_mapping_written_whole_leaves_the_file_alone():
    m = mmemu.Machine("64M")
    data = bytes(range(256)) * (16 * PG // 256)
    f = m.create_file("/f", data=data)
    p = m.spawn()
    p.mmap(BASE, 16 * PG, RW, PRIV | MAP_FIXED, file=f)
    p.mmap(BASE + 64 * PG, 16 * PG, RW, MAP_SHARED | MAP_FIXED, file=f)
    p.write(BASE, b"\x77" * 16 * PG)
    assert p.read(BASE, 16 * PG) == b"\x77" * 16 * PG
    assert p.read(BASE + 64 * PG, 16 * PG) == data
    assert f.read(0, 16 * PG) == data
    m.check()


def test_swapped_out_pages_written_whole():
    m = mmemu.Machine("64M")
    p = m.spawn()
    p.mmap(BASE, 8 * PG, RW, PRIV | MAP_FIXED)
    p.write(BASE, b"\x33" * 8 * PG)
    assert p.swap_out(BASE, 8 * PG) == 8
    p.write(BASE + 2 * PG, b"\x44" * 4 * PG)       # swap-in of pages 2-5, written whole
    assert p.status()["VmSwap"] == 4 * 4 and m.vmstat()["pswpin"] == 4
    assert p.read(BASE, 8 * PG) == b"\x33" * 2 * PG + b"\x44" * 4 * PG + b"\x33" * 2 * PG
    m.check()


def test_thp_region_written_whole_then_one_page_after_fork():
    m = mmemu.Machine("64M", thp="madvise")
    p = m.spawn()
    a = p.mmap(0, 6 << 20, RW, PRIV)
    a += (-a) % (2 << 20)
    p.madvise(a, 4 << 20, MADV_HUGEPAGE)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()
    p.write(a, data)
    assert m.vmstat()["thp_fault_alloc"] == 2
    c = p.fork()
    c.write(a + 5 * PG, b"\x99" * PG)
    assert c.read(a, 8 * PG) == data[:5 * PG] + b"\x99" * PG + data[6 * PG:8 * PG]
    assert p.read(a, 4 << 20) == data
    m.check()
