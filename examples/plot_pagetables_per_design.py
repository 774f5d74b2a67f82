"""
PageTables per design
=====================

The seed's experiment at 256 MiB: a small C program (``layout="typical"``) writes its
memory and forks. ``/proc/meminfo`` PageTables grows by the child's page tables: all of
them with a classic fork, only the upper levels and the tables that may not be shared
(the brk heap's) with COW page tables. The child's VmPTE differs between the accounting
modes: "deferred" counts a shared table in its owner only, "eager" in every user.
"""
from __future__ import annotations

from typing import Dict, Tuple

import matplotlib.pyplot as plt
import numpy as np

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE

SIZE = 256 << 20
DESIGNS = {"classic fork": (False, "deferred"), "COW PTE deferred": (True, "deferred"),
           "COW PTE eager": (True, "eager")}


def measure(cow: bool, accounting: str) -> Tuple[int, int]:
    """(PageTables added by the fork, the child's VmPTE), in kB."""
    m = mmemu.Machine("1G", cow_pte_accounting=accounting)
    p = m.spawn(layout="typical")
    a = p.mmap(0, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.touch(a, SIZE)
    before = m.meminfo()["PageTables"]
    child = p.fork(cow_pgtable=cow)
    out = (m.meminfo()["PageTables"] - before, child.status()["VmPTE"])
    m.check()
    return out


values: Dict[str, Tuple[int, int]] = {d: measure(*opt) for d, opt in DESIGNS.items()}
for d, (pt, vmpte) in values.items():
    print(f"{d:<18} PageTables +{pt} kB, child VmPTE {vmpte} kB")

x = np.arange(len(values))
fig, ax = plt.subplots(figsize=(6.4, 4.2))
ax.bar(x - 0.2, [v[0] for v in values.values()], width=0.4, label="PageTables delta (kB)")
ax.bar(x + 0.2, [v[1] for v in values.values()], width=0.4, hatch="//", label="child VmPTE (kB)")
ax.set_xticks(x)
ax.set_xticklabels(list(values))
ax.set_yscale("log")
ax.set_ylabel("kB")
ax.set_title("page tables of a fork of 256 MiB, per design")
ax.legend()
fig.tight_layout()
plt.show()
