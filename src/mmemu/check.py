"""The invariant checker: recompute every counter from the page tables and compare.

Walks every live mm's tables (the _core.task_mmu recount kernels) and checks, at least:
per-frame mapcount = accounted PTEs mapping it (a COW-shared table's entries count once per
holder in eager accounting, once for its owner in deferred accounting); refcount = mapcount
(+1 for the page cache); pt_share = PMD entries pointing at a PTE table, and a shared
table's PMDs are all read-only; in deferred accounting every table's owner holds it;
per-mm rss and pgtables_bytes by the same rules; the global NR_* counters; free frames
are exactly the frames not in use; PTEs exist only inside VMAs and obey the
write-protection rules (an effectively writable private PTE maps an exclusive anon page).
"""
from __future__ import annotations

import numpy as np

from ._core import task_mmu
from ._core.constants import (
    PG_ANON, PG_ANON_EXCLUSIVE, PG_FILE, PG_SWAPBACKED, PG_TABLE, PG_USED, PG_ZERO,
)
from .flags import VmFlags


class InvariantError(AssertionError):
    """A stored counter disagrees with what the page tables say."""


def _first(idx, n=5):
    return ", ".join(str(int(i)) for i in idx[:n]) + (" ..." if len(idx) > n else "")


def check_machine(machine) -> None:
    phys = machine.phys
    n = phys.nframes
    problems = []
    exp_map = np.zeros(n, dtype=np.int32)
    exp_share = np.zeros(n, dtype=np.int32)
    owners = np.zeros(n, dtype=np.int32)
    level = np.zeros(n, dtype=np.uint8)

    from .swap import check as _swap_check
    _swap_check(machine, problems)
    for p in machine.processes:
        core = p.mm.core
        lvl = np.zeros(n, dtype=np.uint8)
        rss, ntables, probs = task_mmu.recount_mm(core, exp_map, exp_share, lvl, owners)
        problems += [f"pid {p.pid}: {s}" for s in probs]
        both = (level != 0) & (lvl != 0)
        if np.any(both & ((level != 1) | (lvl != 1))):
            problems.append(f"pid {p.pid}: upper-level tables shared with another mm: "
                            f"{_first(np.flatnonzero(both & ((level != 1) | (lvl != 1))))}")
        level = np.maximum(level, lvl)
        if tuple(rss) != tuple(core.rss):
            problems.append(f"pid {p.pid}: rss (file, anon, swap, shmem) stored {core.rss}, "
                            f"page tables say {tuple(rss)}")
        if ntables * 4096 != core.pgtables_bytes:
            problems.append(f"pid {p.pid}: pgtables_bytes {core.pgtables_bytes} but "
                            f"{ntables} PUD/PMD/PTE tables are linked")
        total = 0
        for v in p.mm.vmas:
            cnt, bad = task_mmu.audit_range(core, v.start, v.end, bool(v.flags & VmFlags.SHARED),
                                            bool(v.flags & VmFlags.WRITE))
            total += cnt
            if bad:
                problems.append(f"pid {p.pid}: {bad}")
        present = task_mmu.count_present(core)
        if present != total:
            problems.append(f"pid {p.pid}: {present - total} PTEs lie outside every VMA")
        for a, b in zip(p.mm.vmas, p.mm.vmas[1:]):
            if a.end > b.start or a.start >= a.end:
                problems.append(f"pid {p.pid}: VMAs overlap or are empty: {a} {b}")

    flags = phys.flags
    refc = phys.refcount
    mapc = phys.mapcount
    share = phys.pt_share
    (d0, d1), (t0, t1) = phys.used_ranges()
    idx = np.concatenate([np.arange(d0, d1), np.arange(t0, t1)])
    fl = flags[idx]
    used = (fl & PG_USED) != 0
    tables = (fl & PG_TABLE) != 0
    zero = (fl & PG_ZERO) != 0
    anon = (fl & PG_ANON) != 0
    filep = (fl & PG_FILE) != 0

    # page-cache membership
    in_cache = np.zeros(n, dtype=np.int32)
    for obj in machine._backings:
        np.add.at(in_cache, obj.cache.entries()[1], 1)
    cache_i = in_cache[idx]

    mism = idx[(mapc[idx] != exp_map[idx]) & ~tables]
    if len(mism):
        i = int(mism[0])
        problems.append(f"mapcount differs on {len(mism)} frames (first pfn {i}: stored "
                        f"{int(mapc[i])}, PTEs {int(exp_map[i])})")
    bad_ref = idx[used & ~tables & ~zero & (refc[idx] != mapc[idx] + cache_i)]
    if len(bad_ref):
        i = int(bad_ref[0])
        problems.append(f"refcount differs on {len(bad_ref)} frames (first pfn {i}: refcount "
                        f"{int(refc[i])}, mapcount {int(mapc[i])}, page cache {int(in_cache[i])})")
    lv = level[idx]
    if np.any(tables != (lv != 0)):
        bad = idx[tables != (lv != 0)]
        problems.append(f"table frames and linked tables differ: pfns {_first(bad)}")
    pte_tables = idx[lv == 1]
    bad_share = pte_tables[share[pte_tables] != exp_share[pte_tables]]
    if len(bad_share):
        i = int(bad_share[0])
        problems.append(f"pt_share differs on {len(bad_share)} PTE tables (first pfn {i}: "
                        f"stored {int(share[i])}, PMD entries {int(exp_share[i])})")
    if phys.cow_pte_accounting == "deferred":
        orphan = pte_tables[owners[pte_tables] != 1]
        if len(orphan):
            problems.append(f"PTE tables whose owner does not hold them (deferred accounting): "
                            f"{_first(orphan)}")
    leaked = idx[used & ~tables & ~zero & (mapc[idx] == 0) & (cache_i == 0)]
    if len(leaked):
        problems.append(f"{len(leaked)} frames in use but neither mapped nor cached: {_first(leaked)}")
    not_used = idx[~used & ((mapc[idx] != 0) | (refc[idx] != 0) | (cache_i != 0))]
    if len(not_used):
        problems.append(f"free frames still referenced: {_first(not_used)}")
    ae_bad = idx[((fl & PG_ANON_EXCLUSIVE) != 0) & (mapc[idx] > 1)]
    if len(ae_bad):
        problems.append(f"PageAnonExclusive pages mapped more than once: {_first(ae_bad)}")
    if np.any(filep & ~(cache_i > 0) & used):
        problems.append(f"page-cache frames outside every cache: {_first(idx[filep & (cache_i == 0) & used])}")

    c = phys.counters()
    expect = {
        "nr_free_pages": n - int(np.count_nonzero(used)),
        "nr_anon_mapped": int(np.count_nonzero(anon & (mapc[idx] > 0))),
        "nr_file_mapped": int(np.count_nonzero(filep & (mapc[idx] > 0))),
        "nr_page_table_pages": int(np.count_nonzero(tables)),
        "nr_file_pages": int(np.count_nonzero(filep & used)),
        "nr_shmem": int(np.count_nonzero(filep & used & ((fl & PG_SWAPBACKED) != 0))),
    }
    for k, v in expect.items():
        if c[k] != v:
            problems.append(f"{k}: counter {c[k]}, recomputed {v}")
    fd, ft = phys.free_pfns()
    free_list = np.concatenate([fd, ft])
    if len(free_list) != len(np.unique(free_list)):
        problems.append("a frame is on the free lists twice")
    if len(free_list) and np.any((flags[free_list] & PG_USED) != 0):
        problems.append(f"frames on the free lists are in use: {_first(free_list[(flags[free_list] & PG_USED) != 0])}")
    never = (n - (d1 - d0) - (t1 - t0))
    if len(free_list) + never != c["nr_free_pages"]:
        problems.append(f"free lists hold {len(free_list)} + {never} never-used frames, "
                        f"NR_FREE_PAGES is {c['nr_free_pages']}")
    if problems:
        raise InvariantError("mmemu invariants violated:\n  " + "\n  ".join(problems))
