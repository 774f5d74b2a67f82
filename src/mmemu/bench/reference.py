"""The pure-Python reference model of the test suite, on the fork-then-write workload.

The model lives in the source checkout (``tests/reference_model.py``), not in the
installed package; it is imported by path, found from
$MMEMU_REFERENCE, the current directory and its parents, or the checkout this package was
imported from. Without a checkout the baseline is skipped with a message.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

NAME = "reference_model.py"
PAGE = 4096
ADDR = 0x7F0000000000


class Unavailable(Exception):
    """The reference model cannot be found or driven."""


def locate() -> Path:
    env = os.environ.get("MMEMU_REFERENCE")
    if env:
        if Path(env).is_file():
            return Path(env)
        raise Unavailable(f"MMEMU_REFERENCE={env} is not a file")
    bases = [Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents]
    for base in bases:
        path = base / "tests" / NAME
        if path.is_file():
            return path
    raise Unavailable("no tests/reference_model.py found (run from a "
                      "source checkout, or set MMEMU_REFERENCE=/path/to/reference_model.py)")


def load():
    path = locate()
    spec = importlib.util.spec_from_file_location("_mmemu_reference_model", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod              # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    except Exception:
        del sys.modules[spec.name]
        raise
    if not hasattr(mod, "Model"):
        raise Unavailable(f"{path} has no Model")
    return mod, path


def _mmap(proc, npages):
    """Map npages of private read-write memory at ADDR."""
    got = proc.mmap(ADDR, npages * PAGE, 3, False, True)     # (addr, length, prot, shared, fixed)
    if got != ("ok", ADDR):
        raise Unavailable(f"the reference model's mmap returned {got!r}")


def _filled(size):
    mod, path = load()
    parent = mod.Model().spawn()
    _mmap(parent, size // PAGE)
    page = b"\x5a" * PAGE
    for i in range(size // PAGE):
        parent.write(ADDR + i * PAGE, page)
    return parent, path


def fork(size: int, rounds: int = 5) -> dict:
    """Parent fills size bytes (untimed); timed: fork alone (no data moves)."""
    parent, path = _filled(size)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        child = parent.fork()
        times.append(time.perf_counter() - t)
        del child
    return {"times": times, "pages": size // PAGE, "model": str(path)}


def fork_write(size: int, rounds: int = 3) -> dict:
    """Parent fills size bytes (untimed); timed: fork, then the child writes one byte to
    every page. Returns {"times": [...], "model": path}."""
    parent, path = _filled(size)
    npages = size // PAGE
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        child = parent.fork()
        for i in range(npages):
            child.write(ADDR + i * PAGE, b"\x01")
        times.append(time.perf_counter() - t)
        if child.read(ADDR, 2) != ("ok", b"\x01\x5a"):
            raise Unavailable("the reference model did not return the written bytes")
        del child
    return {"times": times, "pages": npages, "model": str(path)}
