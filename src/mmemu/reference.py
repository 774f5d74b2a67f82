"""A slow, obviously-correct model of what user space can observe: bytes, signals, errnos
and the layout of the address space.

Per process, a dict from page address to what is mapped there: protection, private or
shared, the file or shmem object and page index behind it, the private copy (and so who
still shares it after fork), the fork flags, a guard marker, mlock, the THP advice
(MADV_HUGEPAGE / NOHUGEPAGE: a huge page holds the same bytes). Files and shmem objects
are dicts of pages. It knows nothing of page tables, VMAs as data structures,
refcounts or COW tables; those are what the fast emulator must get right for everything
to come out the same. The test suite's stateful fuzzer drives it in lockstep with three
machines, and ``mmemu bench`` times it as the baseline of the fork-then-write target.

It ships with the package (``mmemu.reference``), as msgpack ships its pure-Python
fallback, and on purpose shares no code and no constants with the emulator: the ABI
numbers it needs (TASK_SIZE, the mmap base, the default break) are its own, so that a
wrong value on one side shows up as a disagreement.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, replace
from typing import Dict, Optional

PG = 4096
READ, WRITE, EXEC = 1, 2, 4


# Every syscall returns what a program sees, in the form of the fuzzer's outcome():
# ("ok", value), ("errno", n), ("SIGSEGV", code, addr), ("SIGBUS", addr).

TASK_SIZE = 0x7FFFFFFFF000       # x86-64 4-level user address-space limit
MMAP_MIN_ADDR = 0x10000
MMAP_BASE = 0x7FFFF7FFF000       # top of the mmap area with ASLR off
DEFAULT_BRK = 0x555555559000     # the program break of a spawned (or exec'd) process
PMD_SIZE = 2 << 20
ZERO = bytes(PG)
OK = ("ok", 0)


class Obj:
    """A page cache: a file, or the shmem object behind a MAP_SHARED|MAP_ANONYMOUS mapping.
    Pages past the end of the object raise SIGBUS when accessed."""

    def __init__(self, kind: str, size: int, data: bytes = b""):
        self.kind = kind
        self.size = size
        self.pages: Dict[int, bytes] = {}
        if data:
            self.write(0, data)

    def valid(self, index: int) -> bool:
        return index * PG < self.size

    def page(self, index: int) -> bytes:
        return self.pages.get(index, ZERO)

    def write(self, off: int, data: bytes) -> int:
        """pwrite: extends the object."""
        pos = off
        while pos < off + len(data):
            i, o = divmod(pos, PG)
            k = min(PG - o, off + len(data) - pos)
            old = self.page(i)
            self.pages[i] = old[:o] + data[pos - off:pos - off + k] + old[o + k:]
            pos += k
        self.size = max(self.size, off + len(data))
        return len(data)


class Anon:
    """The contents of a private (copied-on-write) page. After fork both processes hold the
    same Anon; it is exclusive while exactly one mapping holds it."""
    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data


@dataclass
class Page:
    prot: int
    shared: bool                     # MAP_SHARED
    obj: Optional[Obj]               # file or shmem object; None for private anonymous
    index: int = 0                   # page index in obj
    anon: Optional[Anon] = None      # private copy (private mappings only)
    dontfork: bool = False
    wipeonfork: bool = False
    guard: bool = False              # a guard-region marker
    locked: bool = False             # MAP_LOCKED (mlock): populated, not DONTNEED-able
    hugepage: bool = False           # MADV_HUGEPAGE (VmFlags hg): bytes do not change
    nohugepage: bool = False         # MADV_NOHUGEPAGE (VmFlags nh)


def segv(code, addr):
    return ("SIGSEGV", code, addr)


class Model:
    def __init__(self):
        self.procs: list = []

    def spawn(self) -> "ModelProcess":
        p = ModelProcess(self)
        self.procs.append(p)
        return p

    def truncate(self, obj: Obj, size: int):
        """ftruncate: the cache past the new end goes (the last partial page is zeroed past
        it) and so do private copies of file pages wholly past it (even_cows)."""
        keep = -(-size // PG)
        for i in list(obj.pages):
            if i >= keep:
                del obj.pages[i]
        if size % PG and size // PG in obj.pages:
            page = obj.pages[size // PG]
            obj.pages[size // PG] = page[:size % PG] + bytes(PG - size % PG)
        obj.size = size
        for p in self.procs:
            for pg in p.pages.values():
                if pg.obj is obj and pg.index >= keep:
                    pg.anon = None
        return ("ok", None)

    def mappers(self, anon: Anon) -> int:
        return sum(1 for p in self.procs for pg in p.pages.values() if pg.anon is anon)


class ModelProcess:
    def __init__(self, model: Model):
        self.model = model
        self.pages: Dict[int, Page] = {}
        self.start_brk = self.brk_ = DEFAULT_BRK
        # VmLck: mlocked pages mapped, counted as Linux counts them (MREMAP_DONTUNMAP
        # unlocks its source without uncounting it, as mm/mremap.c does)
        self.locked_vm = 0

    # ---------------------------------------------------------------- helpers
    def runs(self):
        """Maximal runs [start, end) of mapped pages, sorted."""
        out = []
        for a in sorted(self.pages):
            if out and out[-1][1] == a:
                out[-1][1] = a + PG
            else:
                out.append([a, a + PG])
        return out

    def free(self, start: int, end: int) -> bool:
        return not any(a in self.pages for a in range(start, end, PG))

    def unmapped_area(self, length: int, align: int = 0) -> Optional[int]:
        """vm_unmapped_area, top-down below MMAP_BASE: the highest gap that fits (at an
        align boundary: thp_get_unmapped_area for 2 MiB multiples of private memory)."""
        mask = align - 1 if align else 0
        high = MMAP_BASE
        for s, e in reversed(self.runs()):
            if s >= high:
                continue
            cand = (high - length) & ~mask
            if e < high and cand >= e and cand >= MMAP_MIN_ADDR:
                return cand
            high = min(high, s)
        cand = (high - length) & ~mask
        if cand >= MMAP_MIN_ADDR and high - length >= MMAP_MIN_ADDR:
            return cand
        return None

    def exclusive(self, pg: Page) -> bool:
        return pg.anon is not None and self.model.mappers(pg.anon) == 1

    def content(self, pg: Page) -> bytes:
        if pg.anon is not None:
            return pg.anon.data
        if pg.obj is not None:
            return pg.obj.page(pg.index)
        return ZERO

    def _fault(self, addr: int, pos: int, write: bool):
        """The page at addr for an access at pos: (page, None) or (None, signal)."""
        pg = self.pages.get(addr)
        if pg is None:
            return None, segv("SEGV_MAPERR", pos)
        if write and not pg.prot & WRITE:
            return None, segv("SEGV_ACCERR", pos)
        if not pg.prot & (READ | WRITE | EXEC):
            return None, segv("SEGV_ACCERR", pos)
        if pg.guard:
            return None, segv("SEGV_MAPERR", pos)
        if pg.obj is not None and pg.anon is None and not pg.obj.valid(pg.index):
            return None, ("SIGBUS", pos)
        if write and not pg.shared and not self.exclusive(pg):
            pg.anon = Anon(self.content(pg))     # do_wp_page / do_anonymous_page: a copy
        return pg, None

    def _store(self, pg: Page, off: int, data: bytes) -> None:
        old = self.content(pg)
        new = old[:off] + data + old[off + len(data):]
        if pg.shared:
            pg.obj.pages[pg.index] = new
        else:
            pg.anon.data = new

    # ---------------------------------------------------------------- memory access
    def read(self, addr: int, n: int):
        out = bytearray()
        pos = addr
        while pos < addr + n:
            pg, sig = self._fault(pos - pos % PG, pos, False)
            if sig:
                return sig
            k = min(PG - pos % PG, addr + n - pos)
            out += self.content(pg)[pos % PG:pos % PG + k]
            pos += k
        return ("ok", bytes(out))

    def write(self, addr: int, data: bytes):
        pos = addr
        while pos < addr + len(data):
            pg, sig = self._fault(pos - pos % PG, pos, True)
            if sig:
                return sig
            k = min(PG - pos % PG, addr + len(data) - pos)
            self._store(pg, pos % PG, data[pos - addr:pos - addr + k])
            pos += k
        return ("ok", None)

    def touch(self, addr: int, length: int, write: bool):
        pos = addr
        while pos < addr + length:
            pg, sig = self._fault(pos - pos % PG, pos, write)
            if sig:
                return sig
            pos = pos - pos % PG + PG
        return ("ok", None)

    # ---------------------------------------------------------------- syscalls
    def _map(self, addr: int, npages: int, prot: int, shared: bool, obj, index: int, **kw):
        for i in range(npages):
            self.pages[addr + i * PG] = Page(prot, shared, obj, index + i, **kw)
        if kw.get("locked"):
            self.locked_vm += npages

    def _unmap(self, start: int, end: int) -> None:
        for a in range(start, end, PG):
            pg = self.pages.pop(a, None)
            if pg is not None and pg.locked:
                self.locked_vm -= 1

    def mmap(self, addr: int, length: int, prot: int, shared: bool, fixed: bool,
             noreplace: bool = False, file: Optional[Obj] = None, offset: int = 0,
             populate: bool = False, locked: bool = False):
        length = -(-length // PG) * PG
        if fixed:
            if noreplace and not self.free(addr, addr + length):
                return ("errno", errno.EEXIST)
        elif not (addr and addr + length <= TASK_SIZE and self.free(addr, addr + length)):
            thp = not shared and file is None and length % PMD_SIZE == 0
            addr = self.unmapped_area(length, PMD_SIZE if thp else 0)
            if addr is None:
                return ("errno", errno.ENOMEM)
        self._unmap(addr, addr + length)
        if file is not None:
            obj, index = file, offset // PG
        elif shared:
            obj, index = Obj("shm", length), 0
        else:
            obj, index = None, 0
        self._map(addr, length // PG, prot, shared, obj, index, locked=locked)
        if populate or locked:
            self.populate(addr, length)
        return ("ok", addr)

    def munmap(self, addr: int, length: int):
        self._unmap(addr, addr + length)
        return OK

    def mprotect(self, addr: int, length: int, prot: int):
        for a in range(addr, addr + length, PG):      # Linux walks the VMAs in order and
            pg = self.pages.get(a)                    # stops at a hole: earlier ones changed
            if pg is None:
                return ("errno", errno.ENOMEM)
            old, pg.prot = pg.prot, prot
            if pg.locked and prot & WRITE and not old & WRITE and not pg.shared:
                self._fault(a, a, True)     # mlocked memory made writable is COW-broken now
        return OK

    def madvise(self, addr: int, length: int, advice: str):
        end = addr + length
        if advice in ("populate_read", "populate_write"):
            write = advice == "populate_write"
            for a in range(addr, end, PG):
                pg = self.pages.get(a)
                if pg is None:
                    return ("errno", errno.ENOMEM)
                if not pg.prot & (WRITE if write else READ):
                    return ("errno", errno.EINVAL)
                _, sig = self._fault(a, a, write)
                if sig:
                    return ("errno", errno.EFAULT)
            return OK
        hole = False
        for a in range(addr, end, PG):
            pg = self.pages.get(a)
            if pg is None:
                hole = True
                continue
            private_anon = pg.obj is None
            if pg.locked and advice in ("dontneed", "free", "remove", "guard_install"):
                return ("errno", errno.EINVAL)
            if advice == "dontneed":
                if not pg.shared:
                    pg.anon = None
            elif advice == "free":
                if not private_anon:
                    return ("errno", errno.EINVAL)
                if self.exclusive(pg):
                    pg.anon = None
            elif advice == "remove":
                if private_anon:
                    return ("errno", errno.EINVAL)
                if not pg.shared:
                    return ("errno", errno.EACCES)
                pg.obj.pages.pop(pg.index, None)
            elif advice == "dontfork":
                pg.dontfork = True
            elif advice == "dofork":
                pg.dontfork = False
            elif advice == "wipeonfork":
                if not private_anon:
                    return ("errno", errno.EINVAL)
                pg.wipeonfork = True
            elif advice == "keeponfork":
                pg.wipeonfork = False
            elif advice == "guard_install":
                if not pg.shared:
                    pg.anon = None
                pg.guard = True
            elif advice == "guard_remove":
                pg.guard = False
            elif advice in ("hugepage", "nohugepage"):
                # hugepage_madvise: the VMA flag only; a huge page holds the same bytes
                pg.hugepage, pg.nohugepage = advice == "hugepage", advice == "nohugepage"
            else:
                raise ValueError(advice)
        return ("errno", errno.ENOMEM) if hole else OK

    def mremap(self, addr: int, old_len: int, new_len: int, flags: int, new_addr: int,
               vma_start: int, vma_end: int):
        """mremap with old_len > 0 and valid flags. [vma_start, vma_end): the VMA holding
        addr, where Linux's VMA boundaries decide: a grow or move must stay in one VMA, and
        MREMAP_DONTUNMAP unlocks the whole source VMA."""
        MAYMOVE, FIXED, DONTUNMAP = 1, 2, 4
        # check_mremap_params: with a new address, overlapping ranges are EINVAL before
        # the VMA lookup (6.18; found by the live-kernel oracle)
        if flags & (FIXED | DONTUNMAP) and addr + old_len > new_addr and new_addr + new_len > addr:
            return ("errno", errno.EINVAL)
        if addr not in self.pages:
            return ("errno", errno.EFAULT)
        if flags & (FIXED | DONTUNMAP):                          # mremap_to
            # check_prep_vma comes first (6.18): a source crossing the end of its VMA (only
            # the part kept, when shrinking) is EFAULT with the destination still mapped
            if min(old_len, new_len) > vma_end - addr:
                return ("errno", errno.EFAULT)
            if flags & FIXED:
                self._unmap(new_addr, new_addr + new_len)
                if addr < new_addr < vma_end:
                    vma_end = new_addr
                if vma_start < new_addr + new_len <= addr:
                    vma_start = new_addr + new_len
            if new_len < old_len:
                self._unmap(addr + new_len, addr + old_len)
                vma_end = min(vma_end, addr + new_len)
                old_len = new_len
            if not flags & FIXED:
                if not (new_addr and self.free(new_addr, new_addr + new_len)):
                    new_addr = self.unmapped_area(new_len, self._align(addr, new_len))
            moved = self._move(addr, old_len, new_len, new_addr, bool(flags & DONTUNMAP))
            if flags & DONTUNMAP:
                for a in range(vma_start, vma_end, PG):
                    self.pages[a].locked = False
            return moved
        if new_len == old_len:
            return ("ok", addr)
        if new_len < old_len:
            self._unmap(addr + new_len, addr + old_len)
            return ("ok", addr)
        if old_len > vma_end - addr:
            return ("errno", errno.EFAULT)
        if vma_end - addr == old_len and self.free(addr + old_len, addr + new_len):
            self._grow(addr, old_len, new_len, addr)
            return ("ok", addr)
        if not flags & MAYMOVE:
            return ("errno", errno.ENOMEM)
        return self._move(addr, old_len, new_len,
                          self.unmapped_area(new_len, self._align(addr, new_len)), False)

    def _align(self, addr: int, length: int) -> int:
        pg = self.pages[addr]
        return PMD_SIZE if pg.obj is None and not pg.shared and length % PMD_SIZE == 0 else 0

    def _grow(self, src: int, old_len: int, new_len: int, dst: int) -> None:
        """The grown part continues the mapping of the last old page (same object)."""
        last = self.pages.get(dst + old_len - PG)
        for i in range(old_len // PG, new_len // PG):
            self.pages[dst + i * PG] = Page(
                last.prot, last.shared, last.obj, last.index + 1 + i - old_len // PG,
                dontfork=last.dontfork, wipeonfork=last.wipeonfork, locked=last.locked,
                hugepage=last.hugepage, nohugepage=last.nohugepage)
        if last.locked:
            self.locked_vm += (new_len - old_len) // PG
            self.populate(dst + old_len, new_len - old_len)

    def _move(self, addr, old_len, new_len, new_addr, dontunmap):
        moved = {a: self.pages[addr + a] for a in range(0, old_len, PG)}
        if dontunmap:
            for a in range(0, old_len, PG):      # the source stays mapped, emptied
                pg = moved[a]
                self.pages[addr + a] = replace(pg, anon=None, guard=False, locked=False)
        else:
            self._unmap(addr, addr + old_len)
        for a, pg in moved.items():
            self.pages[new_addr + a] = pg
            self.locked_vm += pg.locked
        if new_len > old_len:
            self._grow(new_addr, old_len, new_len, new_addr)
        return ("ok", new_addr)

    def brk(self, brk: int):
        """brk(2): the new break, or the old one if it cannot move."""
        def align(n):
            return -(-n // PG) * PG
        if brk < self.start_brk:
            return ("ok", self.brk_)
        newbrk, oldbrk = align(brk), align(self.brk_)
        if newbrk == oldbrk:
            self.brk_ = brk
            return ("ok", brk)
        if brk <= self.brk_:
            if self.free(newbrk, oldbrk):
                return ("ok", self.brk_)
            self._unmap(newbrk, oldbrk)
            self.brk_ = brk
            return ("ok", brk)
        above = [a for a in self.pages if a >= oldbrk]
        if above and newbrk + PG > min(above):
            return ("ok", self.brk_)
        self._map(oldbrk, (newbrk - oldbrk) // PG, READ | WRITE, False, None, 0)
        self.brk_ = brk
        return ("ok", brk)

    def populate(self, addr: int, length: int) -> None:
        """MAP_POPULATE / mlock: fault every page in, a write fault where the mapping is
        private and writable; a page that cannot be faulted is skipped (those that follow
        it in the mapping would fail the same way: they are further past the end of file)."""
        for a in range(addr, addr + length, PG):
            pg = self.pages[a]
            if pg.prot & (READ | WRITE | EXEC):
                self._fault(a, a, bool(pg.prot & WRITE) and not pg.shared)

    def pwrite(self, obj: Obj, off: int, data: bytes):
        return ("ok", obj.write(off, data))

    def fork(self) -> "ModelProcess":
        child = self.model.spawn()
        child.start_brk, child.brk_ = self.start_brk, self.brk_
        for a, pg in self.pages.items():
            if pg.dontfork:
                continue
            if pg.wipeonfork:
                child.pages[a] = replace(pg, anon=None, guard=False, locked=False)
            else:
                child.pages[a] = replace(pg, locked=False)
        return child

    def execve(self):
        self.pages = {}
        self.locked_vm = 0
        self.start_brk = self.brk_ = DEFAULT_BRK
        return ("ok", None)

    def exit(self):
        self.pages = {}
        self.model.procs.remove(self)
        return ("ok", None)
