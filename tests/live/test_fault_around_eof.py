"""Fault-around past EOF, on a disk file and on tmpfs (Linux 6.18, mm/filemap.c).

filemap_map_pages installs the PTE table that do_fault_around preallocated only through
filemap_map_pmd, which it skips when the first cached folio of the window reaches EOF
on a file that is not shmem: with no PTE table there yet, such a fault-around maps
nothing. tmpfs is exempt (shmem_mapping). A read fault on a disk file's hole reads the
page in, and the retried fault faults around again. Each case is run on the live kernel
(a helper process faulting through process_vm_readv) and in mmemu, and must agree."""
import os
import struct

import pytest

import mmemu
from conftest import PG
from mmemu.oracle.live import LiveHelper, linux_proc_available

BASE = 0x200000000000            # 2 MiB aligned, far from anything Python maps
PRIV_RO, MAP_FIXED_NOREPLACE = 0x02, 0x100000

# (file pages written, file offset of the mapping, mapping pages, faulting page,
#  an anonymous page first in the same PMD span) -> the mapping's present pages
CASES = {
    "last-page-first-fresh-table": ([0, 1], 1, 2, 1, False),
    "last-page-first-existing-table": ([0, 1], 1, 2, 1, True),
    "two-pages-before-eof": ([0, 1], 0, 4, 2, False),
    "hole-before-the-last-page": ([3], 0, 4, 0, False),
}
LINUX = {        # measured on Linux 6.18 (ext4 / and tmpfs /dev/shm), asserted live below
    ("disk", "last-page-first-fresh-table"): [0, 0],
    ("disk", "last-page-first-existing-table"): [1, 0],
    ("disk", "two-pages-before-eof"): [1, 1, 0, 0],
    ("tmpfs", "last-page-first-fresh-table"): [1, 0],
    ("tmpfs", "last-page-first-existing-table"): [1, 0],
    ("tmpfs", "two-pages-before-eof"): [1, 1, 0, 0],
    ("tmpfs", "hole-before-the-last-page"): [1, 0, 0, 1],
}
# Linux reads a disk file's hole in with readahead (the pages around it enter the cache
# and the retried fault maps them): mmemu has no readahead, so only the cached pages of
# the window (the hole read in and the last page) are mapped
MMEMU_ONLY = {("disk", "hole-before-the-last-page"): ([1, 0, 0, 1], [1, 1, 1, 1])}


def _fstype(path):
    """The filesystem type of the mount holding path (longest mount point prefix)."""
    best, kind = "", None
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fs = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, kind = mnt, fs
    return kind


def _emulated(fs, case):
    written, off, npages, fault, pretable = CASES[case]
    m = mmemu.Machine("64M")
    f = m.create_file("/f", size=(max(written) + 1) * PG, tmpfs=fs == "tmpfs")
    for i in written:
        m.write_file(f, i * PG, bytes([i + 1]) * PG)
    p = m.spawn()
    if pretable:
        p.mmap(BASE + 64 * PG, PG, mmemu.PROT_READ | mmemu.PROT_WRITE,
               mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS | mmemu.MAP_FIXED)
        p.write(BASE + 64 * PG, b"t")
    a = p.mmap(BASE, npages * PG, mmemu.PROT_READ, mmemu.MAP_PRIVATE | mmemu.MAP_FIXED,
               file=f, offset=off * PG)
    if off + fault >= max(written) + 1:
        with pytest.raises(mmemu.BusError):
            p.read(a + fault * PG, 1)
    else:
        assert p.read(a + fault * PG, 1) == bytes([0 if off + fault not in written else off + fault + 1])
    m.check()
    pm = p.pagemap(a, npages)
    assert p.status()["RssShmem" if fs == "tmpfs" else "RssFile"] == 4 * sum(int(e) >> 63 for e in pm)
    return [int(e) >> 63 for e in pm]


@pytest.mark.parametrize("fs", ["disk", "tmpfs"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_emulated_fault_around_past_eof(fs, case):
    got = _emulated(fs, case)
    assert got == (MMEMU_ONLY[(fs, case)][0] if (fs, case) in MMEMU_ONLY else LINUX[(fs, case)])


def _live(directory, case):
    written, off, npages, fault, pretable = CASES[case]
    path = os.path.join(directory, f"mmemu-fault-around-{os.getpid()}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, (max(written) + 1) * PG)
        for i in written:             # page by page: order-0 folios, as mmemu's cache
            os.pwrite(fd, bytes([i + 1]) * PG, i * PG)
    finally:
        os.close(fd)
    h = LiveHelper()
    try:
        if pretable:
            assert h.call("mmap", addr=BASE + 64 * PG, len=PG, prot=3,
                          flags=0x22 | MAP_FIXED_NOREPLACE)["ret"] == BASE + 64 * PG
            h.call("fill", addr=BASE + 64 * PG, len=PG)
        r = h.call("mmap", addr=BASE, len=npages * PG, prot=1,
                   flags=PRIV_RO | MAP_FIXED_NOREPLACE, path=path, offset=off * PG)
        assert r.get("ret") == BASE, r
        read = h.call("read", addr=BASE + fault * PG, len=1)["ret"]
        assert read == (0 if off + fault > max(written) else 1)      # 0: SIGBUS
        with open(f"/proc/{h.pid}/pagemap", "rb") as pm:
            pm.seek((BASE >> 12) * 8)
            return [struct.unpack("Q", pm.read(8))[0] >> 63 for _ in range(npages)]
    finally:
        h.close()
        os.unlink(path)


live = pytest.mark.skipif(bool(linux_proc_available()), reason=linux_proc_available() or "live")


@live
@pytest.mark.one_design
@pytest.mark.parametrize("case", sorted(CASES))
def test_live_kernel_fault_around_past_eof(tmp_path, case):
    """The numbers above, on the live kernel: a disk filesystem under tmp_path, tmpfs at
    /dev/shm (each skipped where the host has none)."""
    checked = 0
    for fs, directory in (("disk", str(tmp_path)), ("tmpfs", "/dev/shm")):
        kind = _fstype(os.path.realpath(directory)) if os.path.isdir(directory) else None
        if kind is None or (kind == "tmpfs") != (fs == "tmpfs"):
            continue
        want = MMEMU_ONLY[(fs, case)][1] if (fs, case) in MMEMU_ONLY else LINUX[(fs, case)]
        assert _live(directory, case) == want, (fs, kind, case)
        checked += 1
    if not checked:
        pytest.skip("no disk filesystem under tmp_path and no tmpfs at /dev/shm")
