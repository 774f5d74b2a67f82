"""In-emulator files: an inode with a size, contents and a page cache.

A File is what a VMA's ``backing`` points at for file mappings (``Process.mmap(...,
file=f)``), the way a vm_area_struct points at a struct file. Its page cache maps page
index -> PFN in a ``PageCache`` (mmemu._core.filemap: a radix tree like the kernel's
xarray, sparse: host memory follows the pages cached, so a 128 TiB file with three pages
costs three pages) that the Cython fault path reads through ``vma_from_py`` (``cache``,
``npages``, ``swapbacked``).

Model (tmpfs-like lifetime; a disk filesystem's accounting unless ``tmpfs=True``):

* Every page that holds data lives in a page-cache frame (there is no disk, no writeback
  and no reclaim); holes read as zeros and get a cache frame on a fault, not on read(2).
* Cache frames count in Cached (nr_file_pages) and, when mapped, in Mapped and RssFile;
  never in Shmem/RssShmem (``swapbacked = False``). A tmpfs file (``tmpfs=True``) is
  shmem: its pages count in Shmem and RssShmem too (``swapbacked = True``).
* Fault-around (Linux 6.18, verified on ext4 and tmpfs, tests/live/test_fault_around_eof.py):
  on a disk file, when the first cached page of the window is the file's last page and
  the fault needs a new PTE table, nothing is mapped (filemap_map_pages does not install
  the table for a folio that reaches EOF); tmpfs maps it (the shmem_mapping exception). A
  read fault on a disk file's hole reads the page in and is retried, faulting around
  again. Not modelled: readahead (Linux reads the pages around a hole in too, and the
  retried fault maps them) and large folios (the cache holds single pages).
* write_file marks the touched pages dirty (folio_mark_dirty, smaps *_Dirty); a hole
  filled by a fault is clean. Growing a file does not zero the old partial last page
  (tmpfs; verified on Linux 6.18: ext4 zeroes it, tmpfs does not).
* truncate shrinking runs truncate_pagecache: unmap_mapping_range(even_cows=1) in every
  process, zero the tail of the new partial last page, free the cache pages past EOF.
* The page cache stays while the file exists; unlink frees it once no VMA maps it.
"""
from __future__ import annotations

import errno
import operator
from typing import Optional

import numpy as np

from ._core import huge_memory as _huge
from ._core.constants import (
    HPAGE_PMD_NR, PG_COMPOUND, PG_HEAD, PM_FILE, PM_MMAP_EXCLUSIVE, PM_PRESENT,
)
from ._core.filemap import PageCache
from ._core.physmem import PhysMem
from .errors import MMError, SnapshotError, enomem
from .reserve import reserving
from .flags import VmFlags
from .locking import serialised
from .memory import break_cow_pte_range
from .state import bad, expect, field, integer, is_int, refuse_undeclared
from .stats import pagemap_chunks
from .vma import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE

MAX_LFS_FILESIZE = (1 << 63) - 1
MAX_RW_COUNT = 0x7FFFF000   # INT_MAX & PAGE_MASK: the most one read(2) returns (rw_verify_area)
FILE_DEV = (0, 0x2A)        # the device all emulated files live on (an anonymous-dev fs)


def _pages(size: int) -> int:
    return (size + PAGE_SIZE - 1) >> PAGE_SHIFT


@serialised
class File:
    """A file on the emulated machine. Create with ``Machine.create_file``.

    Attributes
    ----------
    size : int
        i_size in bytes.
    writable : bool
        Whether the file is open for writing (FMODE_WRITE). A read-only file refuses
        MAP_SHARED with PROT_WRITE (EACCES), its MAP_SHARED mappings lose VM_MAYWRITE,
        and write_file/truncate give EBADF/EINVAL like write(2)/ftruncate(2) on an
        O_RDONLY descriptor.
    swapbacked : bool
        A tmpfs file (shmem): Shmem/RssShmem accounting and tmpfs fault-around.
    cache : mmemu._core.filemap.PageCache
        The page cache: ``cache[i]`` is the PFN of page i, -1 for a hole.
    """

    freed = False       # set by Machine._evict: unlinked, unmapped, its page cache freed

    def __init__(self, machine, path: str, inode: int, writable: bool = True,
                 swapbacked: bool = False):
        self.machine = machine
        self.path = path
        self.inode = inode
        self.dev = FILE_DEV
        self.writable = writable
        self.swapbacked = swapbacked
        self.size = 0
        self.cache = PageCache()
        self.users = 0              # VMAs mapping the file (mm.insert / fork / mm.remove)
        self.unlinked = False

    def __repr__(self) -> str:
        return f"<File {self.name!r} ino={self.inode} size={self.size} cached={self.nr_cached}>"

    # ---- what the fault path and /proc read ----
    @property
    def npages(self) -> int:
        """Pages up to EOF (a fault at this index or beyond is SIGBUS)."""
        return _pages(self.size)

    @property
    def name(self) -> str:
        """The path shown in /proc/PID/maps (d_path appends " (deleted)" once unlinked)."""
        return self.path + " (deleted)" if self.unlinked else self.path

    @property
    def nr_cached(self) -> int:
        """Pages in the page cache."""
        return len(self.cache)

    def _check_alive(self) -> None:
        if self.freed:
            raise MMError(errno.EBADF, f"{self.path!r} was unlinked and freed")

    # ---- page cache ----
    def _find_or_create(self, idx: int) -> int:
        """shmem_get_folio(SGP_WRITE): the cache frame of page idx, allocated if a hole."""
        pfn = self.cache[idx]
        if pfn < 0:
            pfn = self.machine.phys.cache_alloc(self.swapbacked)
            if pfn < 0:
                raise enomem("no frame for a page-cache page")
            if not self.cache.store(idx, pfn):
                self.machine.phys.release_cache(np.array([pfn], np.int64), self.swapbacked)
                raise enomem("no host memory for the page cache's tree")
        return pfn

    def _add_pmd_folios(self, offset: int, end: int) -> None:
        """ext4's write_begin with large folios (generic_perform_write's chunks of
        mapping_max_folio_size): each 2 MiB-aligned piece the write [offset, end) covers
        whole and where nothing is cached yet gets one PMD-sized folio; where no order-9
        block is free, single pages (__filemap_get_folio's order loop)."""
        first = (offset + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
        for pos in range(first, end - PMD_SIZE + 1, PMD_SIZE):
            idx = pos >> PAGE_SHIFT
            if self.cache.count(idx, idx + HPAGE_PMD_NR) == 0 and \
                    _huge.filemap_alloc_folio_pmd(self.machine.phys, self.cache, idx, False) < 0:
                return

    # ---- read(2) / write(2) / ftruncate(2) ----
    def read(self, offset: int, n: int) -> bytes:
        """pread(2): up to n bytes at offset (at most MAX_RW_COUNT, as rw_verify_area
        clamps a read), short at EOF; holes read as zeros and are not instantiated
        (shmem_file_read_iter uses the zero page for holes)."""
        self._check_alive()
        if offset < 0 or n < 0:
            raise MMError(errno.EINVAL, "negative offset or count")
        end = min(offset + min(n, MAX_RW_COUNT), self.size)
        if offset >= end:
            return b""
        out = bytearray(end - offset)
        phys = self.machine.phys
        idx, pfns = self.cache.entries(offset >> PAGE_SHIFT, ((end - 1) >> PAGE_SHIFT) + 1)
        for i, pfn in zip(idx.tolist(), pfns.tolist()):
            pos, stop = max(offset, i << PAGE_SHIFT), min(end, (i + 1) << PAGE_SHIFT)
            off = pos & (PAGE_SIZE - 1)
            out[pos - offset:stop - offset] = phys.frame(pfn)[off:off + (stop - pos)]
        return bytes(out)

    def write(self, offset: int, data) -> int:
        """pwrite(2): write data at offset through the page cache (mapped pages see it at
        once); extends the file past EOF. Returns the byte count.

        Raises EBADF on a read-only file, EINVAL/EFBIG on a bad offset, ENOMEM (with
        nothing changed) when the pages it needs are not free; if an allocation fails
        half way all the same, the bytes before that page stay written and their count is
        returned (a short write, as generic_perform_write does)."""
        self._check_alive()
        if not self.writable:
            raise MMError(errno.EBADF, "file not open for writing")
        buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        n = len(buf)
        if offset < 0:
            raise MMError(errno.EINVAL, "negative offset")
        if n == 0:
            return 0
        end = offset + n
        if end > MAX_LFS_FILESIZE:
            raise MMError(errno.EFBIG, "write past the maximum file size")
        first, last = offset >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        holes = last + 1 - first - self.cache.count(first, last + 1)
        if holes > self.machine.phys.nr_free:
            raise enomem(f"write needs {holes} page-cache pages")
        phys = self.machine.phys
        if not self.swapbacked:
            self._add_pmd_folios(offset, end)
        pos = offset
        while pos < end:
            idx = pos >> PAGE_SHIFT
            stop = min(end, (idx + 1) << PAGE_SHIFT)
            try:
                pfn = self._find_or_create(idx)
            except MMError:
                if pos == offset:
                    raise
                break       # generic_perform_write: a short write if anything was written
            phys.cache_write(pfn, pos & (PAGE_SIZE - 1), buf[pos - offset:stop - offset], True)
            pos = stop
        if pos > self.size:
            self.size = pos
        return pos - offset

    def truncate(self, size: int) -> None:
        """ftruncate(2). Shrinking unmaps the pages past the new EOF from every process
        (private COW copies too: unmap_mapping_range even_cows=1), zeroes the tail of the
        new last page and frees the cache pages past EOF; accesses there then raise
        BusError. Growing only moves EOF (holes read as zeros)."""
        self._check_alive()
        if not self.writable:
            raise MMError(errno.EINVAL, "ftruncate on a descriptor not open for writing")
        if size < 0:
            raise MMError(errno.EINVAL, "negative size")
        if size > MAX_LFS_FILESIZE:
            raise MMError(errno.EFBIG, "size past the maximum file size")
        old = self.size
        if size >= old:
            self.size = size
            return
        keep = _pages(size)
        unmap_mapping_range(self.machine, self, keep, _pages(old), even_cows=True)
        self.size = size
        head = folio_head(self, keep - 1) if keep and not self.swapbacked else -1
        if head >= 0 and size & (PMD_SIZE - 1):
            # truncate_inode_partial_folio: the dirty folio does not split; it stays whole,
            # zeroed past EOF (its pages there stay cached)
            _huge.folio_zero_range(self.machine.phys, head, size & (PMD_SIZE - 1), PMD_SIZE, True)
            keep = ((keep - 1) | (HPAGE_PMD_NR - 1)) + 1
        elif size & (PAGE_SIZE - 1):
            # truncate_inode_partial_folio: zero the cached tail beyond the new EOF
            pfn = self.cache[keep - 1]
            if pfn >= 0:
                tail = PAGE_SIZE - (size & (PAGE_SIZE - 1))
                self.machine.phys.cache_write(pfn, size & (PAGE_SIZE - 1),
                                              np.zeros(tail, dtype=np.uint8), False)
        truncate_inode_pages_range(self.machine, self, keep)

    def punch_hole(self, offset: int, length: int) -> None:
        """fallocate(FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE) for whole pages: unmap the
        page-cache pages from every mapping (private COW copies stay: even_cows=0) and free
        them; the range then reads as zeros. Used by MADV_REMOVE. vfs_fallocate's checks:
        EINVAL for a negative offset or a length below 1, then EBADF on a read-only file."""
        self._check_alive()
        if offset < 0 or length <= 0:
            raise MMError(errno.EINVAL, "negative offset or empty range")
        if not self.writable:
            raise MMError(errno.EBADF, "fallocate on a descriptor not open for writing")
        punch_hole(self.machine, self, (offset + PAGE_SIZE - 1) >> PAGE_SHIFT,
                   (offset + length) >> PAGE_SHIFT)

    def unlink(self) -> None:
        """unlink(2): the name goes; the page cache is freed once no VMA maps the file."""
        self._check_alive()
        self.machine.unlink(self)

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self):
        """(record, (indexes, PFNs) of the page cache) for a snapshot."""
        refuse_undeclared(self, f"file {self.path!r}")
        return ({"kind": "file", "path": self.path, "inode": self.inode, "dev": list(self.dev),
                 "writable": bool(self.writable), "swapbacked": bool(self.swapbacked),
                 "size": self.size, "unlinked": bool(self.unlinked), "users": self.users},
                self.cache.entries())

    @classmethod
    def from_state(cls, machine, rec, index, pfns, where) -> "File":
        """The file dump_state gave (without users: the VMAs mapping it count them), its
        page cache filled from (index, pfns) (fill_page_cache)."""
        expect(getattr(machine, "phys", None), PhysMem, "the machine's phys")
        f = cls(machine, field(rec, "path", str, where), integer(rec, "inode", where, 0, 1 << 62),
                field(rec, "writable", bool, where), field(rec, "swapbacked", bool, where))
        f.size = integer(rec, "size", where, 0, MAX_LFS_FILESIZE)
        f.unlinked = field(rec, "unlinked", bool, where)
        f.dev = device(rec, where)
        fill_page_cache(f, index, pfns, machine.phys.nframes, where)
        return f


def fdget(machine, f) -> File:
    """fdget: the File argument of a call on machine -- a File of this machine that still
    exists, else TypeError (not a File) or MMError(EBADF) (another machine's, or unlinked
    and freed: no descriptor of this machine can name it)."""
    if not isinstance(f, File):
        raise TypeError(f"expected a mmemu File, got {type(f).__name__}")
    if f.machine is not machine:
        raise MMError(errno.EBADF, f"{f.path!r} is a file of another Machine")
    f._check_alive()
    return f


# include/linux/mman.h LEGACY_MAP_MASK on x86-64: SHARED PRIVATE FIXED ANONYMOUS 32BIT ABOVE4G
# GROWSDOWN DENYWRITE EXECUTABLE LOCKED NORESERVE POPULATE NONBLOCK STACK HUGETLB UNINITIALIZED
# and the MAP_HUGE_2MB/1GB encodings. Verified on Linux 6.18 bit by bit with
# MAP_SHARED_VALIDATE on a tmpfs file: 0x200, 0x400, MAP_SYNC, MAP_FIXED_NOREPLACE and every
# bit from 0x200000 up (but the huge-size field) give EOPNOTSUPP.
LEGACY_MAP_MASK = 0x7C07F9F3


def file_mmap_checks(file: File, prot: int, flags: int, length: int, pgoff: int,
                      vm_flags: int) -> int:
    """The file part of do_mmap after the address is chosen: file_mmap_ok (EOVERFLOW), the
    MAP_SHARED_VALIDATE flag check (EOPNOTSUPP), write permission (EACCES), VM_MAYWRITE /
    VM_SHARED trimmed for a read-only file, GROWSDOWN (EINVAL), unknown map type (EINVAL).
    Returns the new vm_flags."""
    maxsize = MAX_LFS_FILESIZE
    if length > maxsize or pgoff > (maxsize - length) >> PAGE_SHIFT:
        raise MMError(errno.EOVERFLOW, "offset + length beyond the maximum file size")
    maptype = flags & 0x0F
    if maptype in (0x01, 0x03):                     # MAP_SHARED, MAP_SHARED_VALIDATE
        if maptype == 0x01:
            flags &= LEGACY_MAP_MASK
        if flags & ~LEGACY_MAP_MASK:
            raise MMError(errno.EOPNOTSUPP, f"MAP_SHARED_VALIDATE with unknown flags "
                                            f"{flags & ~LEGACY_MAP_MASK:#x}")
        if prot & 0x2 and not file.writable:        # PROT_WRITE without FMODE_WRITE
            raise MMError(errno.EACCES, "shared writable mapping of a read-only file")
        vm_flags |= VmFlags.SHARED | VmFlags.MAYSHARE
        if not file.writable:
            vm_flags &= ~(VmFlags.MAYWRITE | VmFlags.SHARED)
    elif maptype != 0x02:                           # MAP_PRIVATE
        raise MMError(errno.EINVAL, "map type must be MAP_SHARED, MAP_SHARED_VALIDATE or MAP_PRIVATE")
    if vm_flags & VmFlags.GROWSDOWN:
        raise MMError(errno.EINVAL, "MAP_GROWSDOWN on a file mapping")
    return vm_flags


def unmap_mapping_range(machine, obj, first: int, last: int, even_cows: bool) -> None:
    """unmap_mapping_range: zap the PTEs of page indexes [first, last) of obj in every VMA
    of every process that maps obj.

    With even_cows, private COW copies (anon pages) there are zapped too (truncate); without
    it only PTEs mapping page-cache pages go (hole punch). Each range first gets private
    page tables (``break_cow_pte_range``) and raises hiwater_rss, like zap_page_range_single.
    """
    from ._core import cow_pte as _cow_pte
    from ._core import zap as _zap
    ranges = []
    for proc in machine.processes:
        for v in proc.mm.vmas:
            if v.backing is not obj:
                continue
            lo = max(first, v.pgoff)
            hi = min(last, v.pgoff + v.npages)
            if lo < hi:
                ranges.append((proc, v, v.start + ((lo - v.pgoff) << PAGE_SHIFT),
                               v.start + ((hi - v.pgoff) << PAGE_SHIFT)))
    # all or nothing: the private copies of COW-shared tables in every process must fit
    # (a table met by two ranges of one process is counted twice: conservative)
    need = sum(_cow_pte.break_count(proc.mm.core, start, end) for proc, _, start, end in ranges)
    with reserving(machine.phys, need, "unmapping the file's pages (private page-table copies)"):
        for proc, v, start, end in ranges:
            mm = proc.mm
            break_cow_pte_range(mm, start, end)
            mm.update_hiwater_rss()
            if even_cows or v.flags & VmFlags.SHARED:   # a shared VMA maps only cache pages
                _zap.zap(mm.core, start, end, False)
                continue
            for s, e in file_pte_runs(mm, start, end):
                _zap.zap(mm.core, s, e, False)


def folio_head(obj, idx: int, phys=None) -> int:
    """The head of the PMD-sized folio holding page idx of obj's page cache, or -1 (phys:
    the machine's, for a shmem object, which does not name its machine)."""
    pfn = obj.cache[idx]
    if pfn < 0 or not (phys or obj.machine.phys).flags[pfn] & PG_COMPOUND:
        return -1
    return pfn & ~(HPAGE_PMD_NR - 1)


def truncate_inode_pages_range(machine, obj, first: int, last: Optional[int] = None) -> None:
    """truncate_inode_pages_range / shmem_undo_range: drop the cache pages of obj at page
    indexes [first, last) (to the end if last is None); every one must be unmapped
    already. A PMD-sized folio the range covers only in part is split if it is shmem
    (_split_shmem_folios), else it stays (its split fails: it is dirty), its pages there
    zeroed; whole ones are freed whole."""
    phys = machine.phys
    if obj.swapbacked:
        _split_shmem_folios(machine, obj, first, last)
    else:
        first, last = _whole_folios(obj, phys, first, last)
        if last is not None and first >= last:
            return
    _, pfns = obj.cache.pop(first, last)
    fl = phys.flags[pfns]
    for head in pfns[(fl & PG_HEAD) != 0].tolist():
        _huge.filemap_remove_folio_pmd(phys, head, obj.swapbacked)
    phys.release_cache(pfns[(fl & PG_COMPOUND) == 0], obj.swapbacked)


def _split_shmem_folios(machine, obj, first: int, last: Optional[int]) -> None:
    """shmem_undo_range's truncate_inode_partial_folio for the PMD-sized shmem folios
    [first, last) cuts: split_folio unmaps the folio from every mm first (unmap_folio:
    try_to_unmap of a page-cache folio; its PMDs were split by the caller's
    unmap_mapping_range of the range) and splits it into 512 cached pages."""
    for at in (first, None if last is None else last - 1):
        if at is None or at < 0:
            continue
        head = folio_head(obj, at, machine.phys)
        fidx = at & ~(HPAGE_PMD_NR - 1)
        if head < 0 or (first <= fidx and (last is None or fidx + HPAGE_PMD_NR <= last)):
            continue
        unmap_mapping_range(machine, obj, fidx, fidx + HPAGE_PMD_NR, even_cows=False)
        _huge.split_shmem_folio(machine.phys, head)


def _whole_folios(obj, phys, first: int, last: Optional[int]):
    """[first, last) shrunk to leave out the PMD-sized folios it cuts, whose pages in it
    are zeroed instead (folio_zero_range)."""
    for at in (first, None if last is None else last - 1):
        if at is None or at < 0:
            continue
        head = folio_head(obj, at)
        if head < 0:
            continue
        fidx = at & ~(HPAGE_PMD_NR - 1)
        end = fidx + HPAGE_PMD_NR
        lo, hi = max(first, fidx), end if last is None else min(end, last)
        if lo == fidx and hi == end:
            continue
        _huge.folio_zero_range(phys, head, (lo - fidx) << PAGE_SHIFT, (hi - fidx) << PAGE_SHIFT,
                               False)
        if at == first:
            first = end
            if last is not None and first >= last:
                break
        else:
            last = fidx
    return first, last


def punch_hole(machine, obj, first: int, last: int) -> None:
    """shmem_fallocate(PUNCH_HOLE) over page indexes [first, last) of any page-cache object
    (a File or the shmem object of MAP_SHARED|MAP_ANONYMOUS): unmap_mapping_range without
    even_cows, then free the cache pages (shmem_truncate_range)."""
    last = min(last, obj.npages)
    if first >= last:
        return
    unmap_mapping_range(machine, obj, first, last, even_cows=False)
    truncate_inode_pages_range(machine, obj, first, last)


def _runs(mask: np.ndarray, start: int):
    """[(s, e)] address runs where mask is true, pages from start."""
    if not mask.any():
        return []
    m = np.concatenate(([False], mask, [False])).astype(np.int8)
    d = np.flatnonzero(np.diff(m))
    return [(start + (int(a) << PAGE_SHIFT), start + (int(b) << PAGE_SHIFT))
            for a, b in zip(d[::2], d[1::2])]


def _pagemap_runs(mm, start: int, end: int, mask: int, want: int):
    """Runs of pages of [start, end) whose pagemap entry & mask == want (want includes
    PM_PRESENT), read a PTE table at a time (pagemap_chunks): holes cost nothing."""
    out = []
    for addr, pm in pagemap_chunks(mm, start, end):
        for s, e in _runs((pm & np.uint64(mask)) == np.uint64(want), addr):
            if out and out[-1][1] == s:
                out[-1] = (out[-1][0], e)
            else:
                out.append((s, e))
    return out


def file_pte_runs(mm, start: int, end: int):
    """Runs of present PTEs mapping page-cache pages (pagemap PM_FILE) in [start, end)."""
    return _pagemap_runs(mm, start, end, PM_PRESENT | PM_FILE, PM_PRESENT | PM_FILE)


def exclusive_anon_runs(mm, start: int, end: int):
    """Runs of present PTEs mapping anon pages mapped only here (pagemap: present, not
    PM_FILE, PM_MMAP_EXCLUSIVE; the zero page has neither flag)."""
    return _pagemap_runs(mm, start, end, PM_PRESENT | PM_FILE | PM_MMAP_EXCLUSIVE,
                         PM_PRESENT | PM_MMAP_EXCLUSIVE)


def create_file(machine, name: str, size: int = 0, data: Optional[bytes] = None,
                writable: bool = True, tmpfs: bool = False) -> File:
    """Machine.create_file: a new file of max(size, len(data)) bytes, data written at 0.
    Every argument is checked before anything is made (nothing to undo on an error)."""
    size = operator.index(size)
    if size < 0:
        raise MMError(errno.EINVAL, "negative size")
    if size > MAX_LFS_FILESIZE:
        raise MMError(errno.EFBIG, "size past the maximum file size")
    n = 0 if data is None else len(memoryview(data).cast("B"))
    f = File(machine, name, next(machine._inodes), True, bool(tmpfs))
    if n:
        if _pages(n) > machine.phys.nr_free:
            raise enomem(f"file data needs {_pages(n)} page-cache pages")
        f.write(0, data)
    f.truncate(max(size, n))
    f.writable = writable
    return f


def device(rec, where):
    """The (major, minor) pair of a saved file or shmem object."""
    dev = field(rec, "dev", list, where)
    if len(dev) != 2 or not all(is_int(x) and 0 <= x < 1 << 32 for x in dev):
        raise bad(f"{where}: 'dev' must be two integers")
    return (dev[0], dev[1])


def fill_page_cache(obj, index: np.ndarray, pfns: np.ndarray, nframes: int, where) -> None:
    """A snapshot's page cache into obj's empty one: indexes increasing inside the object,
    frames inside memory (which frames they are, the invariant checker proves)."""
    if len(index) and (index[0] < 0 or index[-1] >= obj.npages or np.any(np.diff(index) <= 0)):
        raise bad(f"{where}: page cache indexes not increasing inside the object's "
                  f"{obj.npages} pages")
    if len(pfns) and (pfns.min() < 0 or pfns.max() >= nframes):
        raise bad(f"{where}: a page cache holds a frame outside memory")
    for i, p in zip(index.tolist(), pfns.tolist()):
        if not obj.cache.store(i, p):
            raise SnapshotError(f"{where}: no host memory for the page cache")


def i_size_write(f: File, size: int) -> None:
    """i_size_write for a file that grows without a write (an imported process maps it
    further than its emulated size): EOF moves, the new pages are holes."""
    f.size = size
