"""A slow, obviously-correct model of what user space can observe: bytes and signals.

Per page: mapped or not, protection, private data or a shared object, fork flags. It knows
nothing of page tables, refcounts or COW; those are what the fast emulator must get right
for the bytes to come out the same.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace
from typing import Dict, Optional

PG = 4096
READ, WRITE, EXEC = 1, 2, 4


class RefShm:
    def __init__(self):
        self.pages: Dict[int, bytes] = {}


@dataclass
class RefPage:
    prot: int
    shm: Optional[RefShm] = None     # shared object, or None for private memory
    index: int = 0                   # page index in the shared object
    dontfork: bool = False
    wipeonfork: bool = False
    data: bytes = field(default=bytes(PG))


class RefProcess:
    def __init__(self):
        self.pages: Dict[int, RefPage] = {}

    # each method returns None, an errno, or ("SEGV", addr)
    def mmap(self, addr, npages, prot, shared):
        shm = RefShm() if shared else None
        for i in range(npages):
            self.pages[addr + i * PG] = RefPage(prot, shm, i)

    def munmap(self, addr, npages):
        for i in range(npages):
            self.pages.pop(addr + i * PG, None)

    def mprotect(self, addr, npages, prot):
        for i in range(npages):
            pg = self.pages.get(addr + i * PG)
            if pg is None:
                return errno.ENOMEM
            pg.prot = prot
        return None

    def madvise(self, addr, npages, advice):
        hole = False
        for i in range(npages):
            pg = self.pages.get(addr + i * PG)
            if pg is None:
                hole = True
                continue
            if advice == "dontneed":
                if pg.shm is None:
                    pg.data = bytes(PG)
            elif advice == "dontfork":
                pg.dontfork = True
            elif advice == "dofork":
                pg.dontfork = False
            elif advice == "wipeonfork":
                if pg.shm is not None:
                    return errno.EINVAL
                pg.wipeonfork = True
            elif advice == "keeponfork":
                pg.wipeonfork = False
        return errno.ENOMEM if hole else None

    def _page(self, addr, write):
        pg = self.pages.get(addr - addr % PG)
        if pg is None:
            return None, ("SEGV", "SEGV_MAPERR")
        if write and not pg.prot & WRITE:
            return None, ("SEGV", "SEGV_ACCERR")
        if not write and not pg.prot & (READ | WRITE | EXEC):
            return None, ("SEGV", "SEGV_ACCERR")
        return pg, None

    def read(self, addr, n):
        out = bytearray()
        while n:
            pg, err = self._page(addr, False)
            if err:
                return bytes(out), err
            off = addr % PG
            k = min(n, PG - off)
            src = pg.shm.pages.get(pg.index, bytes(PG)) if pg.shm is not None else pg.data
            out += src[off:off + k]
            addr += k
            n -= k
        return bytes(out), None

    def write(self, addr, data):
        while data:
            pg, err = self._page(addr, True)
            if err:
                return err
            off = addr % PG
            k = min(len(data), PG - off)
            if pg.shm is not None:
                old = pg.shm.pages.get(pg.index, bytes(PG))
                pg.shm.pages[pg.index] = old[:off] + data[:k] + old[off + k:]
            else:
                pg.data = pg.data[:off] + data[:k] + pg.data[off + k:]
            addr += k
            data = data[k:]
        return None

    def fork(self):
        child = RefProcess()
        for a, pg in self.pages.items():
            if pg.dontfork:
                continue
            c = replace(pg)
            if pg.wipeonfork:
                c.data = bytes(PG)
            child.pages[a] = c
        return child
