"""The pure-Python reference model (``mmemu.reference``) on the fork-then-write workload."""
from __future__ import annotations

import time

from .. import reference as model
from .._core.constants import PAGE_SIZE as PAGE

ADDR = 0x7F0000000000
NAME = model.__name__


def _mmap(proc, npages):
    """Map npages of private read-write memory at ADDR."""
    got = proc.mmap(ADDR, npages * PAGE, 3, False, True)     # (addr, length, prot, shared, fixed)
    if got != ("ok", ADDR):
        raise RuntimeError(f"the reference model's mmap returned {got!r}")


def _filled(size):
    parent = model.Model().spawn()
    _mmap(parent, size // PAGE)
    page = b"\x5a" * PAGE
    for i in range(size // PAGE):
        parent.write(ADDR + i * PAGE, page)
    return parent


def fork(size: int, rounds: int = 5) -> dict:
    """Parent fills size bytes (untimed); timed: fork alone (no data moves)."""
    parent = _filled(size)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        child = parent.fork()
        times.append(time.perf_counter() - t)
        del child
    return {"times": times, "pages": size // PAGE, "model": NAME}


def fork_write(size: int, rounds: int = 3) -> dict:
    """Parent fills size bytes (untimed); timed: fork, then the child writes one byte to
    every page. Returns {"times": [...], "pages": n, "model": "mmemu.reference"}."""
    parent = _filled(size)
    npages = size // PAGE
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        child = parent.fork()
        for i in range(npages):
            child.write(ADDR + i * PAGE, b"\x01")
        times.append(time.perf_counter() - t)
        if child.read(ADDR, 2) != ("ok", b"\x01\x5a"):
            raise RuntimeError("the reference model did not return the written bytes")
        del child
    return {"times": times, "pages": npages, "model": NAME}
