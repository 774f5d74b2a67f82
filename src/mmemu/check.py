"""The invariant checker: recompute every counter from the page tables and compare.

Walks every live mm's tables (the _core.task_mmu recount kernels) and checks, at least:
per-frame mapcount = accounted PTEs mapping it (a COW-shared table's entries count once per
holder in eager accounting, once for its owner in deferred accounting); refcount = mapcount
(+1 for the page cache); pt_share = PMD entries pointing at a PTE table, and a shared
table's PMDs are all read-only; in deferred accounting every table's owner holds it;
per-mm rss and pgtables_bytes by the same rules; the global NR_* counters; the page
allocator's free lists (_check_free_lists) hold exactly the frames not in use; PTEs exist
only inside VMAs and obey the
write-protection rules (an effectively writable private PTE maps an exclusive anon page).
"""
from __future__ import annotations

import numpy as np

from ._core import task_mmu
from ._core.constants import (
    PG_ANON, PG_ANON_EXCLUSIVE, PG_FILE, PG_SWAPBACKED, PG_TABLE, PG_USED, PG_ZERO,
)
from ._core.physmem import BUDDY_FLAG as PG_BUDDY, MAX_ORDER, ORDER_SHIFT
from .flags import VmFlags


class InvariantError(AssertionError):
    """A stored counter disagrees with what the page tables say."""


def _first(idx, n=5):
    return ", ".join(str(int(i)) for i in idx[:n]) + (" ..." if len(idx) > n else "")


def _check_free_lists(phys, fl, used_ranges, nr_free) -> list:
    """The page allocator's free memory: the buddy free lists, the per-cpu-pages lists and
    the gap are disjoint and inside memory, hold no frame in use, every block is aligned,
    heads a PG_BUDDY frame of its order on the list of its kind and is merged as far as it
    can be (its buddy is not a free block of its order, it does not touch the gap; frames
    on the pcp lists are not merged, as in Linux), the stored list lengths are right, and
    they all add up to NR_FREE_PAGES. fl: the flags of the used ranges (d1 + n - t0)."""
    n = phys.nframes
    d1, t0 = used_ranges
    lists = phys.free_lists()
    problems = list(lists["problems"])
    (pd, pt), (pfns, orders, kinds) = lists["pcp"], lists["blocks"]
    counts, (lo, hi) = lists["counts"], lists["gap"]
    size = np.left_shift(1, orders)
    listed = np.zeros((2, MAX_ORDER + 1), dtype=np.int64)
    np.add.at(listed, (kinds, orders), 1)
    if not np.array_equal(listed, counts):
        problems.append(f"free list lengths stored {counts.tolist()}, walked {listed.tolist()}")
    if not (0 <= lo <= hi <= n) or (d1 < t0 and not (lo <= d1 and t0 <= hi)):
        problems.append(f"the gap [{lo}, {hi}) does not hold the never-used frames [{d1}, {t0})")
        return problems
    lengths = np.concatenate([np.ones(len(pd) + len(pt), dtype=np.int64), size])
    starts = np.concatenate([pd, pt, pfns]).astype(np.int64)
    ends = starts + lengths
    bad = starts[((starts & (lengths - 1)) != 0) | (ends > n) | ((starts < t0) & (ends > d1))]
    if len(bad):
        problems.append(f"free blocks misaligned, beyond memory or in never-used memory: "
                        f"{_first(bad)}")
        return problems
    if np.any((pfns >= t0) != (kinds == 1)) or np.any(pd >= t0) or np.any(pt < t0):
        problems.append("free frames on the lists of the other end of memory")
    # every free frame exactly once: pcp frames, blocks, the gap
    if hi > lo:
        starts, ends = np.append(starts, lo), np.append(ends, hi)
    order = np.argsort(starts, kind="stable")
    overlap = np.flatnonzero(starts[order[1:]] < ends[order[:-1]])
    if len(overlap):
        problems.append(f"free memory listed twice, from pfn {int(starts[order[overlap[0] + 1]])}")

    def at(p):      # index of a PFN boundary in the used-range arrays
        return np.where(p <= d1, np.minimum(p, d1), d1 + np.maximum(p - t0, 0))
    free = np.zeros(len(fl) + 1, dtype=np.int64)    # difference array of the free ranges
    np.add.at(free, at(starts), 1)
    np.add.at(free, at(ends), -1)
    free = np.cumsum(free[:-1]) > 0
    in_use = (fl & PG_USED) != 0
    if np.any(free & in_use):
        problems.append(f"frames in use on the free lists: {_first(np.flatnonzero(free & in_use))}"
                        " (used-range indices)")
    heads = np.zeros(len(fl), dtype=bool)
    heads[at(pfns)] = True
    if np.any(((fl & PG_BUDDY) != 0) != heads):
        problems.append(f"PG_BUDDY frames and free block heads differ (used-range indices "
                        f"{_first(np.flatnonzero(((fl & PG_BUDDY) != 0) != heads))})")
    elif np.any((fl[at(pfns)] >> ORDER_SHIFT) & 15 != orders):
        problems.append("free block heads carry another order than their list's")
    key = pfns * 16 + orders
    small = orders < MAX_ORDER
    unmerged = pfns[small][np.isin(((pfns ^ size) * 16 + orders)[small], key)]
    if len(unmerged):
        problems.append(f"free blocks not merged with their free buddy: {_first(np.sort(unmerged))}")
    touching = pfns[(pfns + size == lo) | (pfns == hi)]
    if len(touching):
        problems.append(f"free blocks not merged into the gap: {_first(touching)}")
    total = len(pd) + len(pt) + int(size.sum()) + (hi - lo)
    if total != nr_free:
        problems.append(f"pcp lists hold {len(pd) + len(pt)}, buddy lists {int(size.sum())}, "
                        f"the gap {hi - lo} frames: {total}, NR_FREE_PAGES is {nr_free}")
    return problems


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
    problems += _check_free_lists(phys, fl, (d1, t0), c["nr_free_pages"])
    if problems:
        raise InvariantError("mmemu invariants violated:\n  " + "\n  ".join(problems))
