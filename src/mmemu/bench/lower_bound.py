"""numpy lower bounds: the same data movement as an emulator operation, vectorised.

Each function builds its inputs untimed, then times `rounds` runs of the vectorised work
and returns the times (seconds). They bound what the Cython kernels could reach on this
machine's memory system with numpy's own loops; a kernel near its bound has little left
to gain.
"""
from __future__ import annotations

import time

import numpy as np

from .._core.constants import BIT_RW, PAGE_SIZE as PAGE

PTE_RW = np.uint64(1 << BIT_RW)
PTE_FLAGS = np.uint64(0x8000000000000067)   # NX | dirty | accessed | user | RW | present


def _times(fn, rounds):
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _ptes(npages):
    # a populated region's PFNs are one ascending run: the allocator hands out never-used
    # data frames in order, as it did for the emulator's region being compared
    return (np.arange(npages, dtype=np.uint64) << np.uint64(12)) | PTE_FLAGS


def fork(size: int, rounds: int = 10):
    """Classic fork's per-page work at memory speed: the child's PTE bytes written with RW
    cleared, the parent's RW cleared in place, and the refcount and mapcount of every
    mapped frame raised (one contiguous run of frames, so plain slices, no gather)."""
    n = size // PAGE
    parent = _ptes(n)
    child = np.empty_like(parent)
    ref = np.ones(n, np.int32)
    mapc = np.ones(n, np.int32)
    mask = ~PTE_RW

    def work():
        np.bitwise_and(parent, mask, out=child)
        np.bitwise_and(parent, mask, out=parent)
        np.add(ref, 1, out=ref)
        np.add(mapc, 1, out=mapc)
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
    """munmap / exit per-page work at memory speed: drop the refcount and mapcount of every
    mapped frame (one contiguous run) and clear the PTEs."""
    n = size // PAGE
    base = _ptes(n)
    ptes = np.empty_like(base)
    ref = np.full(n, 2, np.int32)
    mapc = np.full(n, 2, np.int32)

    def work():
        np.subtract(ref, 1, out=ref)
        np.subtract(mapc, 1, out=mapc)
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


def two_threads(size: int, rounds: int = 5) -> dict:
    """The host's own ceiling for two machines on two threads: each machine's data movement
    in a cycle -- copy size bytes (the COW copies), then write size bytes of other data over
    them (the child's write) -- for two machines, one after the other and in two threads at
    once (numpy drops the GIL for large copies), alternating which goes first. Returns
    {"times": in two threads, "serial": one after the other} (seconds)."""
    import threading
    rng = np.random.default_rng(3)
    bufs = [[rng.integers(0, 256, size, dtype=np.uint8) for _ in range(3)] for _ in range(2)]

    def cycle(b):
        np.copyto(b[1], b[0])
        np.copyto(b[1], b[2])

    def serial():
        for b in bufs:
            cycle(b)

    def parallel():
        threads = [threading.Thread(target=cycle, args=(b,)) for b in bufs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    serial()                                 # warm: every buffer faulted in
    out = {"times": [], "serial": []}
    for i in range(rounds):
        order = [("serial", serial), ("times", parallel)]
        for key, fn in (order if i % 2 == 0 else order[::-1]):
            out[key] += _times(fn, 1)
    return out


LOWER_BOUNDS = {
    "fork": fork,
    "touch": touch,
    "zero_read": touch,
    "cow_data": cow_copy,
    "munmap": zap,
    "exit": zap,
    "read": read_copy,
    "two_machines": two_threads,
}
