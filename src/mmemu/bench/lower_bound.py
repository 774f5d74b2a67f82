"""numpy lower bounds: the same data movement as an emulator operation, vectorised.

Each function builds its inputs untimed, then times `rounds` runs of the vectorised work
and returns the times (seconds). They bound what the Cython kernels could reach on this
machine's memory system with numpy's own loops; a kernel near its bound has little left
to gain.
"""
from __future__ import annotations

import time

import numpy as np

PAGE = 4096
RW = np.uint64(2)
PTE_FLAGS = np.uint64(0x8000000000000067)   # NX | dirty | accessed | user | RW | present
PFN_MASK = np.uint64(0x000FFFFFFFFFF000)


def _times(fn, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ptes(npages):
    # PFNs spread as the allocator spreads data frames: ascending, every other one
    pfns = np.arange(0, 2 * npages, 2, dtype=np.uint64)
    return (pfns << np.uint64(12)) | PTE_FLAGS


def fork(size: int, rounds: int = 10):
    """Classic fork's per-page work: copy the PTE bytes with RW cleared in both copies,
    then raise the refcount and mapcount of every mapped frame (its PFN read from the PTE)."""
    n = size // PAGE
    parent = _ptes(n)
    child = np.empty_like(parent)
    ref = np.ones(2 * n, np.int32)
    mapc = np.ones(2 * n, np.int32)
    mask = ~RW

    def work():
        np.bitwise_and(parent, mask, out=child)
        parent[:] = child
        pfns = ((child & PFN_MASK) >> np.uint64(12)).astype(np.intp)
        ref[pfns] += 1
        mapc[pfns] += 1
    return _times(work, rounds)


def touch(size: int, rounds: int = 5):
    """First-touch faults: build every PTE value (a PFN per page, flags or-ed in)."""
    n = size // PAGE
    out = np.empty(n, np.uint64)
    pfns = np.arange(n, dtype=np.uint64)
    ref = np.zeros(n, np.int32)

    def work():
        np.bitwise_or(pfns << np.uint64(12), PTE_FLAGS, out=out)
        ref[:] = 1
    return _times(work, rounds)


def cow_copy(size: int, rounds: int = 3):
    """COW breaks with data: copy every page's 4 KiB (np.copyto of the region), warm."""
    src = np.full(size, 0x5A, np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)                      # fault the destination in first: warm
    return _times(lambda: np.copyto(dst, src), rounds)


def first_touch_host(size: int, rounds: int = 1):
    """The host's cost of fresh memory, the floor of a cold COW round: map size bytes of
    anonymous memory (4 KiB pages, as the emulator's backing) and write one byte to every
    page, each round on a new mapping."""
    import mmap
    out = []
    for _ in range(rounds):
        m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if hasattr(mmap, "MADV_NOHUGEPAGE"):
            m.madvise(mmap.MADV_NOHUGEPAGE)
        t = time.perf_counter()
        m[::PAGE] = b"\x01" * (size // PAGE)
        out.append(time.perf_counter() - t)
        m.close()
    return out


def zap(size: int, rounds: int = 5):
    """munmap / exit per-page work: read each PTE's PFN, drop the refcount and mapcount,
    clear the PTEs."""
    n = size // PAGE
    base = _ptes(n)
    ptes = np.empty_like(base)
    ref = np.full(2 * n, 2, np.int32)
    mapc = np.full(2 * n, 2, np.int32)

    def work():
        pfns = ((ptes & PFN_MASK) >> np.uint64(12)).astype(np.intp)
        ref[pfns] -= 1
        mapc[pfns] -= 1
        ptes[:] = 0
    out = []
    for _ in range(rounds):
        ptes[:] = base
        out += _times(work, 1)
    return out


def read_copy(size: int, rounds: int = 5):
    """Process.read: gather every page's bytes into a new buffer (one 4 KiB copy per page)."""
    src = np.full(size, 0x5A, np.uint8)
    return _times(lambda: src.tobytes(), rounds)


LOWER_BOUNDS = {
    "fork": fork,
    "touch": touch,
    "zero_read": touch,
    "cow_data": cow_copy,
    "munmap": zap,
    "exit": zap,
    "read": read_copy,
}
