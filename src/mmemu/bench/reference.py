"""The pure-Python reference model of the test suite, on the fork-then-write workload.

The model lives in the source checkout (``tests/reference_model.py``, or the older
``tests/reference.py``), not in the installed package; it is imported by path, found from
$MMEMU_REFERENCE, the current directory and its parents, or the checkout this package was
imported from. Without a checkout the baseline is skipped with a message.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

NAMES = ("reference_model.py", "reference.py")
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
        for name in NAMES:
            path = base / "tests" / name
            if path.is_file():
                return path
    raise Unavailable("no tests/reference_model.py or tests/reference.py found (run from a "
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
    if not hasattr(mod, "Model") and not hasattr(mod, "RefProcess"):
        raise Unavailable(f"{path} has neither Model nor RefProcess")
    return mod, path


def _process(mod):
    """A fresh model process: Model().spawn() (reference_model.py) or RefProcess()."""
    return mod.Model().spawn() if hasattr(mod, "Model") else mod.RefProcess()


def _mmap(proc, npages):
    """Map npages of private read-write memory at ADDR, in whichever signature the model has."""
    try:
        return proc.mmap(ADDR, npages * PAGE, 3, False, True)   # (addr, length, prot, shared, fixed)
    except TypeError:
        pass
    try:
        return proc.mmap(ADDR, npages, 3, False)          # (addr, npages, prot, shared)
    except TypeError:
        pass
    from ..flags import MAP_ANONYMOUS, MAP_PRIVATE
    try:
        return proc.mmap(ADDR, npages * PAGE, 3, int(MAP_PRIVATE | MAP_ANONYMOUS))
    except TypeError as e:
        raise Unavailable(f"cannot drive RefProcess.mmap: {e}") from None


def _filled(size):
    mod, path = load()
    parent = _process(mod)
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
        got = child.read(ADDR, 2)
        if (got[1] if isinstance(got, tuple) else got) != b"\x01\x5a":
            raise Unavailable("the reference model did not return the written bytes")
        del child
    return {"times": times, "pages": npages, "model": str(path)}
