"""A typical user script: build a machine, fork a populated process both ways, and compare
what the kernel would report. Kept type-checked (mypy --strict, pyright) by the test suite.

Run it with ``python examples/user_script.py``.
"""
from __future__ import annotations

from typing import Dict

import numpy as np

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE


def fork_cost(size: str, cow: bool) -> Dict[str, int]:
    """PageTables added by a fork of a process with size bytes written, in kB, and the
    fork's work counters that are not zero."""
    m = mmemu.Machine("1G", cow_pte_accounting="deferred")
    p: mmemu.Process = m.spawn(layout="typical")
    n = mmemu.parse_size(size)
    a: int = p.mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.touch(a, n)
    before = m.meminfo()["PageTables"]
    events = m.vmstat()
    child = p.fork(cow_pgtable=cow)
    work = (m.vmstat() - events).nonzero()
    out = {"PageTables": m.meminfo()["PageTables"] - before, "child VmPTE": child.status()["VmPTE"]}
    for info in work.describe():
        if not info.name.startswith("nr_"):
            out[info.name] = info.value
    data: bytes = child.read(a, 4)
    entries: np.ndarray = p.pagemap(a, 4)
    assert data == b"\0" * 4 and entries.dtype == np.uint64
    child.exit()
    p.exit()
    m.check()
    return out


def main() -> None:
    for cow in (False, True):
        print("COW page tables" if cow else "classic fork", fork_cost("64M", cow))
    try:
        mmemu.Machine("1P")
    except ValueError as e:
        print("refused:", e)
    try:
        m = mmemu.Machine("64M")
        m.spawn().munmap(1, 4096)
    except mmemu.MMError as e:
        print("munmap:", e.errname)


if __name__ == "__main__":
    main()
