"""The fork tables the COW page-table series published, for ``mmemu fork-table`` to print
beside mmemu's numbers for the same program (1 GiB of private anonymous memory, every
page written, one fork), and the explanation of every difference.

Sources: v1 cover letter (lore 20220519183127.3909598-1, "state table for mapping the 1 GB
memory of forking", /proc/meminfo before and after the fork) and the RFC v2 cover letter
(20220927162957.270460-1, parent/child VmRSS and VmPTE; the numbers as issue 13 and
SEMANTICS.md 1.14 quote them: the RFC v2 text itself is not in the library).
"""
from __future__ import annotations

from typing import List

# v1 cover letter: MemFree / AnonPages / Mapped / PageTables (kB), before and after the fork
V1_MEMINFO = {
    "classic": {"MemFree": (31468152, 31463244), "AnonPages": (1073836, 1073628),
                "Mapped": (39520, 39992), "PageTables": (3356, 5432)},
    "cow": {"MemFree": (31471324, 31468888), "AnonPages": (1073628, 1073660),
            "Mapped": (39264, 39504), "PageTables": (3304, 3396)},
}
# RFC v2 cover letter: (parent, child) VmRSS and VmPTE in kB
V2_STATUS = {
    "classic": {"VmRSS": (1049688, 1048688), "VmPTE": (2096, 2096)},
    "cow": {"VmRSS": (1049968, 2576), "VmPTE": (2096, 44)},
}

def _why_v1(r: dict) -> List[str]:
    return [
        f"PageTables: seed +92 kB with COW, +2076 kB classic; mmemu v1 {r['delta']['PageTables']:+} kB:",
        "  the child's PGD, PUD and PMD tables only; the shared PTE tables stay counted by",
        "  their owner (the parent), as v1's ownership does. The seed's +92 kB also holds",
        "  the tables of the test program's libc, stack and shell, which mmemu does not run.",
        "MemFree/AnonPages/Mapped: the seed's deltas are a live system's noise (other",
        "  processes, page cache, the fork's own kernel allocations); mmemu's machine runs",
        f"  nothing else: MemFree moves by the new tables only ({r['delta']['MemFree']:+} kB).",
    ]


def _why_v2(r: dict) -> List[str]:
    return [
        f"child VmRSS: RFC v2 2576 kB, mmemu {r['child']['VmRSS']} kB: with deferred accounting",
        "  the child counts none of the shared pages; the RFC's 2576 kB are its own libc,",
        "  stack and program pages, which the emulated program (one 1 GiB VMA) has not.",
        f"child VmPTE: RFC v2 44 kB, mmemu {r['child']['VmPTE']} kB: the child's own PUD and",
        "  PMD tables (the PGD is not in VmPTE); the RFC's also cover its libc and stack.",
        f"parent VmRSS/VmPTE: RFC 1049968/2096 kB, mmemu {r['parent']['VmRSS']}/"
        f"{r['parent']['VmPTE']} kB: the same 1 GiB plus what each program maps besides.",
        "classic: the RFC's child holds the 1 GiB plus 112 kB of its own pages and copies",
        "  every table (2096 kB), as mmemu's classic column does for its smaller program.",
    ]


def published_rows(results: List[dict]) -> List[str]:
    """Lines for format_table: each published table next to the matching mmemu column,
    for the versions among the results (v1: meminfo deltas; v2: the child's and
    parent's VmRSS and VmPTE), then why they differ. Empty if none of them was run."""
    by = {r["design"]: r for r in results}
    lines: List[str] = []
    if "v1" in by:
        r = by["v1"]
        lines += ["", "published: v1 cover letter (20220519183127.3909598-1), 1 GB, meminfo delta kB",
                  f"  {'field':<12}{'seed classic':>14}{'seed COW':>12}{'mmemu v1':>12}"]
        for k in ("MemFree", "AnonPages", "Mapped", "PageTables"):
            c, w = V1_MEMINFO["classic"][k], V1_MEMINFO["cow"][k]
            mine = r["delta"].get(k, "-")
            lines.append(f"  {k:<12}{c[1] - c[0]:>+14}{w[1] - w[0]:>+12}{mine:>+12}")
        lines += ["  " + s for s in _why_v1(r)]
    if "v2" in by:
        r = by["v2"]
        mine = {"VmRSS": (r["parent"]["VmRSS"], r["child"]["VmRSS"]),
                "VmPTE": (r["parent"]["VmPTE"], r["child"]["VmPTE"])}
        lines += ["", "published: RFC v2 cover letter (20220927162957.270460-1), 1 GB, kB "
                      "(parent/child)",
                  f"  {'field':<8}{'RFC classic':>20}{'RFC COW':>18}{'mmemu v2':>18}"]
        for k in ("VmRSS", "VmPTE"):
            c, w = V2_STATUS["classic"][k], V2_STATUS["cow"][k]
            lines.append(f"  {k:<8}{c[0]:>11}/{c[1]:<8}{w[0]:>10}/{w[1]:<7}"
                         f"{mine[k][0]:>10}/{mine[k][1]:<7}")
        lines += ["  " + s for s in _why_v2(r)]
    return lines
