"""
Fork cost against size
======================

A process writes every page of a private anonymous mapping and forks, once per design: a
classic fork copies every PTE table (``copy_page_range``), a COW page-table fork shares
them (``copy_cow_pte_range``). The fork's wall time and its work grow with the size for a
classic fork; the shared design does a fixed amount of work per PTE table.
"""
from __future__ import annotations

import time
from typing import Dict, List

import matplotlib.pyplot as plt

import mmemu
from mmemu import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE
from mmemu.args import format_size

SIZES = [16 << 20, 64 << 20, 256 << 20, 1 << 30]
DESIGNS = {"classic fork": (False, "deferred"), "COW PTE deferred": (True, "deferred"),
           "COW PTE eager": (True, "eager")}


def fork_ms(size: int, cow: bool, accounting: str) -> float:
    """The median of 5 forks of a process with size bytes written, in ms."""
    m = mmemu.Machine("4G", cow_pte_accounting=accounting)
    p = m.spawn()
    a = p.mmap(0, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    p.touch(a, size)
    p.fork(cow_pgtable=cow).exit()          # warm up
    times: List[float] = []
    for _ in range(5):
        t0 = time.perf_counter()
        c = p.fork(cow_pgtable=cow)
        times.append((time.perf_counter() - t0) * 1e3)
        c.exit()
    m.check()
    return sorted(times)[2]


results: Dict[str, List[float]] = {d: [fork_ms(s, *opt) for s in SIZES] for d, opt in DESIGNS.items()}

fig, ax = plt.subplots(figsize=(6.4, 4.2))
for (label, ms), marker, style in zip(results.items(), "o^v", ["-", "--", ":"]):
    ax.plot(SIZES, ms, marker=marker, linestyle=style, markerfacecolor="none", label=label)
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xticks(SIZES)
ax.set_xticklabels([format_size(s) for s in SIZES])
ax.minorticks_off()
ax.set_xlabel("populated private anonymous memory")
ax.set_ylabel("fork time (ms, median of 5)")
ax.set_title("fork cost against size")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
plt.show()
