"""The invariant checker: recompute every counter from the page tables and compare.

First proves every mm's tables safe to walk (MMCore.validate_tables: links to page-table
frames in use, entries encoded as mmemu encodes them), then walks them (the _core.task_mmu
recount kernels) and checks, at least: per-frame mapcount = accounted PTEs mapping it (a
COW-shared table's entries count once per holder in eager accounting, once for its owner in
deferred accounting); refcount = mapcount (+1 for the page cache), 1 for page tables and
the zero page; pt_share = PMD entries pointing at a PTE table (0 on other frames), a shared
table's PMDs are all read-only, it is linked at one address in every holder and holds no
swap entry; in deferred accounting every table's owner holds it, an upper-level table is
its mm's own; per-mm rss, pgtables_bytes and VM counters by the same rules; the global NR_*
counters; frame flags (one role per frame in use, the zero page alone PG_ZERO, all zero
bytes); page caches (each frame in one cache, of its kind); the page allocator's free lists
(_check_free_lists) hold exactly the frames not in use; PTEs exist only inside VMAs and obey
the write-protection rules (an effectively writable private PTE maps an exclusive anon
page), a page-cache page is mapped only by a VMA of its object at its offset, an anon page
or swap entry only by a VMA with an anon_vma. Transparent huge pages: a THP folio is a
PG_HEAD frame and 511 PG_TAIL frames, its refcount (on the head; 0 on tails) = its PMD
mappings (the head's pt_share, recounted from the huge PMDs) + its pages' PTE mapcounts; its
pages count in NR_ANON_MAPPED while any PMD or PTE maps them, the folios some PMD maps in
NR_ANON_THPS; every huge PMD of an anonymous folio has one deposited PTE table of its mm
(counted in pgtables_bytes, linked by no PMD); the huge zero folio is reserved like the zero
page. A PMD-sized page-cache folio has the same shape plus the cache's reference, its pages
at 512 aligned consecutive indexes, NR_FILE_THPS / NR_FILE_PMDMAPPED (a shmem folio's:
NR_SHMEM_THPS / NR_SHMEM_PMDMAPPED) recounted, and its huge PMDs no deposited table.
Host memory and time follow the frames ever used and the tables, not the memory size.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ._core import task_mmu
from ._core.constants import (
    COW_RULE_OWNER_NULL, HPAGE_PMD_NR, PG_ANON, PG_ANON_EXCLUSIVE, PG_DIRTY, PG_FILE, PG_HASDATA,
    PG_HEAD, PG_PARTIALLY_MAPPED, PG_RESERVED, PG_SWAPBACKED, PG_TABLE, PG_TAIL, PG_USED, PG_ZERO,
)
from ._core.physmem import BUDDY_FLAG as PG_BUDDY, MAX_ORDER, ORDER_SHIFT
from .mm import MM


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


_KNOWN_FLAGS = (PG_USED | PG_ANON | PG_FILE | PG_SWAPBACKED | PG_TABLE | PG_ZERO | PG_HASDATA
                | PG_ANON_EXCLUSIVE | PG_DIRTY | PG_RESERVED | PG_BUDDY | (15 << ORDER_SHIFT)
                | PG_HEAD | PG_TAIL | PG_PARTIALLY_MAPPED)
_ORDER_BITS = 15 << ORDER_SHIFT
_NOT_FREE_FLAGS = 0xFFFFFFFF & ~(PG_HASDATA | PG_BUDDY | _ORDER_BITS)   # a free frame has none
_ROLES = (PG_ANON, PG_FILE, PG_TABLE, PG_ZERO)     # a frame in use has exactly one


def _check_flags(phys, idx, fl) -> list:
    """Frame flags over the used ranges (idx, fl): known bits only; the zero page, and it
    alone, PG_ZERO | PG_RESERVED with bytes all zero; a frame in use one role (anon, page
    cache, page table, zero page), PageAnonExclusive only on anon pages, PG_SWAPBACKED and
    PG_DIRTY only on page-cache pages, no buddy order; a free frame nothing but PG_HASDATA
    and, heading a free block, PG_BUDDY with its order."""
    problems = []
    z = phys.zero_pfn
    hz = phys.huge_zero_pfn
    huge_zero = (idx >= hz) & (idx < hz + HPAGE_PMD_NR) if hz >= 0 else np.zeros(len(idx), bool)
    used = (fl & PG_USED) != 0
    head, tail = (fl & PG_HEAD) != 0, (fl & PG_TAIL) != 0
    checks = [
        ("unknown flag bits", (fl & np.uint32(0xFFFFFFFF & ~_KNOWN_FLAGS)) != 0),
        ("PG_ZERO or PG_RESERVED off the zero page and the huge zero folio",
         ((fl & (PG_ZERO | PG_RESERVED)) != 0) & (idx != z) & ~huge_zero),
        ("the huge zero folio not PG_ZERO | PG_RESERVED",
         huge_zero & (fl != (PG_USED | PG_ZERO | PG_RESERVED))),
        ("THP head or tail flags on frames that are not anon or page-cache pages in use, or both",
         (head | tail) & (((fl & PG_USED) == 0) | ((fl & (PG_ANON | PG_FILE)) == 0)
                          | (head & tail))),
        ("a THP head not 512-aligned, or its 511 tails not after it",
         head & (((idx & (HPAGE_PMD_NR - 1)) != 0))),
        ("PG_PARTIALLY_MAPPED off a THP head", ((fl & PG_PARTIALLY_MAPPED) != 0) & ~head),
        ("frames in use without exactly one role (anon, page cache, table, zero page)",
         used & (sum(((fl & r) != 0).astype(np.int8) for r in _ROLES) != 1)),
        ("PageAnonExclusive on pages that are not anon",
         ((fl & PG_ANON_EXCLUSIVE) != 0) & ((fl & PG_ANON) == 0)),
        ("PG_SWAPBACKED or PG_DIRTY on pages not in a page cache",
         ((fl & (PG_SWAPBACKED | PG_DIRTY)) != 0) & ((fl & PG_FILE) == 0)),
        ("buddy flags on frames in use", used & ((fl & (PG_BUDDY | _ORDER_BITS)) != 0)),
        ("free frames with flags of frames in use", ~used & ((fl & np.uint32(_NOT_FREE_FLAGS)) != 0)),
        ("a buddy order on frames that head no free block",
         ((fl & PG_BUDDY) == 0) & ((fl & _ORDER_BITS) != 0)),
    ]
    for text, bad in checks:
        if np.any(bad):
            problems.append(f"{text}: {_first(idx[bad])}")
    zf = int(phys.flags[z])
    if zf != PG_USED | PG_ZERO | PG_RESERVED or phys.frame(z) != bytes(4096):
        problems.append(f"the zero page {z} has flags {zf:#x} or bytes that are not zero")
    if hz >= 0 and any(phys.frame(hz + i) != bytes(4096) for i in range(HPAGE_PMD_NR)):
        problems.append(f"the huge zero folio {hz} has bytes that are not zero")
    heads = idx[head]
    for h in heads.tolist():        # a folio's tails follow its head in the used range
        p = np.searchsorted(idx, h)
        if p + HPAGE_PMD_NR > len(idx) or idx[p + HPAGE_PMD_NR - 1] != h + HPAGE_PMD_NR - 1 \
                or not np.all(tail[p + 1:p + HPAGE_PMD_NR]):
            problems.append(f"THP head {h} without its 511 tails")
    if np.count_nonzero(tail) != (HPAGE_PMD_NR - 1) * len(heads):
        problems.append(f"{np.count_nonzero(tail)} THP tail frames for {len(heads)} heads")
    return problems


def _check_mm_counters(p) -> list:
    """total_vm and its exec/stack/data split are the pages of the VMAs (vm_stat_account;
    locked_vm is not: MREMAP_DONTUNMAP leaves the source counted, as Linux does)."""
    want = SimpleNamespace(total_vm=0, exec_vm=0, stack_vm=0, data_vm=0)
    for v in p.mm.vmas:
        MM.vm_stat_account(want, v.flags, v.npages)
    return [f"pid {p.pid}: {k} {getattr(p.mm, k)}, its VMAs have {n} pages"
            for k, n in vars(want).items() if getattr(p.mm, k) != n]


def _pmd_mapped(head, share):
    """Per frame of the used ranges: a page of a THP folio some PMD maps."""
    out = np.zeros(len(head), dtype=bool)
    for p in np.flatnonzero(head & (share > 0)).tolist():
        out[p:p + HPAGE_PMD_NR] = True
    return out


def _check_thp(phys, idx, fl, refc, mapc, share, exp_share, head) -> list:
    """THP folios: the entire mapcount (the head's pt_share) is the huge PMDs mapping it, the
    head's refcount is that plus its pages' PTE mapcounts (plus the page cache's one
    reference for a page-cache folio), the tails' refcount is 0, and an anonymous folio no
    PMD nor PTE maps is not in use."""
    problems = []
    tail = (fl & PG_TAIL) != 0
    bad = idx[head & (share != exp_share)]
    if len(bad):
        problems.append(f"THP entire mapcount differs from the huge PMDs mapping it: {_first(bad)}")
    if np.any(tail & (refc != 0)):
        problems.append(f"THP tails with a refcount: {_first(idx[tail & (refc != 0)])}")
    for p in np.flatnonzero(head).tolist():
        want = int(share[p]) + int(mapc[p:p + HPAGE_PMD_NR].sum()) + int(fl[p] & PG_FILE != 0)
        if refc[p] != want or want == 0:
            problems.append(f"THP folio {idx[p]}: refcount {refc[p]}, PMD and PTE mappings {want}")
    return problems


def _check_cached_folios(inode, index, pfns, flags) -> list:
    """A PMD-sized folio in a page cache (its entries: index -> pfns): its 512 pages at 512
    consecutive indexes from a 512-aligned one, in order; no page of it cached alone."""
    comp = (flags[pfns] & (PG_HEAD | PG_TAIL)) != 0
    if not comp.any():
        return []
    heads = np.flatnonzero(comp & ((flags[pfns] & PG_HEAD) != 0)).tolist()
    ok = 0
    for p in heads:
        q = p + HPAGE_PMD_NR
        if (q <= len(index) and index[p] % HPAGE_PMD_NR == 0
                and index[q - 1] - index[p] == HPAGE_PMD_NR - 1
                and np.array_equal(pfns[p:q], np.arange(pfns[p], pfns[p] + HPAGE_PMD_NR))):
            ok += 1
    if ok != len(heads) or np.count_nonzero(comp) != ok * HPAGE_PMD_NR:
        return [f"page cache of inode {inode}: a large folio's pages not at 512 aligned "
                f"consecutive indexes, or some cached alone"]
    return []


def check_machine(machine) -> None:
    """Recompute everything from the page tables, after proving them safe to walk. Host
    memory and time follow the frames ever used and the tables, not the memory size."""
    phys = machine.phys
    n = phys.nframes
    problems = []
    procs = []
    for p in machine.processes:
        try:
            p.mm.core.validate_tables()     # nothing below walks tables it has not proved
        except ValueError as e:
            problems.append(f"pid {p.pid}: {e}")
        else:
            procs.append(p)
    if len(procs) < len(machine.processes):
        raise InvariantError("mmemu invariants violated:\n  " + "\n  ".join(problems))
    from .swap import check as _swap_check
    _swap_check(machine, problems)

    # per-frame arrays over the used ranges [0, d1) and [t0, n): idx[i] is the frame at i
    (_, d1), (t0, _) = phys.used_ranges()
    idx = np.concatenate([np.arange(d1), np.arange(t0, n)])
    u = len(idx)
    exp_map, exp_share, owners, last = (np.zeros(u, dtype=np.int32) for _ in range(4))
    level = np.zeros(u, dtype=np.uint8)
    spans = np.zeros(u, dtype=np.int64)
    for me, p in enumerate(procs, 1):
        core = p.mm.core
        rss, ntables, probs = task_mmu.recount_mm(core, me, exp_map, exp_share, level, last,
                                                  owners, spans)
        problems += [f"pid {p.pid}: {s}" for s in probs]
        if tuple(rss) != tuple(core.rss):
            problems.append(f"pid {p.pid}: rss (file, anon, swap, shmem) stored {core.rss}, "
                            f"page tables say {tuple(rss)}")
        if ntables * 4096 != core.pgtables_bytes:
            problems.append(f"pid {p.pid}: pgtables_bytes {core.pgtables_bytes} but "
                            f"{ntables} PUD/PMD/PTE tables are linked")
        total = 0
        for v in p.mm.vmas:
            cnt, bad = task_mmu.audit_range(core, v)
            total += cnt
            if bad:
                problems.append(f"pid {p.pid}: {bad}")
        present = task_mmu.count_present(core)
        if present != total:
            problems.append(f"pid {p.pid}: {present - total} PTEs lie outside every VMA")
        for a, b in zip(p.mm.vmas, p.mm.vmas[1:]):
            if a.end > b.start or a.start >= a.end:
                problems.append(f"pid {p.pid}: VMAs overlap or are empty: {a} {b}")
        problems += _check_mm_counters(p)

    def used_part(view):
        return np.concatenate([view[:d1], view[t0:]])
    fl, refc, mapc = used_part(phys.flags), used_part(phys.refcount), used_part(phys.mapcount)
    share, owner = used_part(phys.pt_share), used_part(phys.pt_owner)
    used = (fl & PG_USED) != 0
    tables = (fl & PG_TABLE) != 0
    zero = (fl & PG_ZERO) != 0
    anon = (fl & PG_ANON) != 0
    filep = (fl & PG_FILE) != 0
    head = (fl & PG_HEAD) != 0
    thp = (fl & (PG_HEAD | PG_TAIL)) != 0

    # page-cache membership: each cached frame a page-cache frame of the object's kind, in
    # one cache once
    flags = phys.flags
    in_cache = np.zeros(u, dtype=np.int32)
    for obj in machine._backings:
        index, cached = obj.cache.entries()
        want = PG_USED | PG_FILE | (PG_SWAPBACKED if obj.swapbacked else 0)
        wrong = cached[(flags[cached] & (PG_USED | PG_FILE | PG_SWAPBACKED | PG_TABLE)) != want]
        if len(wrong):
            problems.append(f"page cache of inode {obj.inode} holds frames that are not "
                            f"{'shmem' if obj.swapbacked else 'file'} page-cache frames: "
                            f"{_first(wrong)}")
        problems += _check_cached_folios(obj.inode, index, cached, flags)
        cached = cached[(cached < d1) | (cached >= t0)]     # never-used ones: just reported
        np.add.at(in_cache, np.where(cached < d1, cached, cached - (t0 - d1)), 1)
    if np.any(in_cache > 1):
        problems.append(f"frames in more than one page cache: {_first(idx[in_cache > 1])}")
    problems += _check_flags(phys, idx, fl)

    mism = np.flatnonzero((mapc != exp_map) & ~tables)
    if len(mism):
        i = mism[0]
        problems.append(f"mapcount differs on {len(mism)} frames (first pfn {idx[i]}: stored "
                        f"{mapc[i]}, PTEs {exp_map[i]})")
    odd = idx[(tables | zero) & ((refc != 1) | (mapc != 0))]
    if len(odd):
        problems.append(f"page tables or the zero page with a refcount other than 1 or a "
                        f"mapcount: {_first(odd)}")
    bad_ref = np.flatnonzero(used & ~tables & ~zero & ~thp & (refc != mapc + in_cache))
    if len(bad_ref):
        i = bad_ref[0]
        problems.append(f"refcount differs on {len(bad_ref)} frames (first pfn {idx[i]}: refcount "
                        f"{refc[i]}, mapcount {mapc[i]}, page cache {in_cache[i]})")
    nonpte = (share != 0) & ((level < 1) | (level > 3)) & ~head
    if np.any(nonpte):
        problems.append(f"pt_share set on frames that are not PTE, PMD or PUD tables or THP heads: "
                        f"{_first(idx[nonpte])}")
    problems += _check_thp(phys, idx, fl, refc, mapc, share, exp_share, head)
    if np.any((owner != 0) & ~tables):
        problems.append(f"pt_owner set on frames that are not page tables: "
                        f"{_first(idx[(owner != 0) & ~tables])}")
    if np.any(tables != (level != 0)):
        problems.append(f"table frames and linked tables differ: pfns "
                        f"{_first(idx[tables != (level != 0)])}")
    pte = level == 1
    bad_share = np.flatnonzero(pte & (share != exp_share))
    if len(bad_share):
        i = bad_share[0]
        problems.append(f"pt_share differs on {len(bad_share)} PTE tables (first pfn {idx[i]}: "
                        f"stored {share[i]}, PMD entries {exp_share[i]})")
    upper = (level == 2) | (level == 3)     # whole-table COW: 0 on a table never shared means 1
    bad_share = np.flatnonzero(upper & (share != exp_share) & ((share != 0) | (exp_share != 1)))
    if len(bad_share):
        i = bad_share[0]
        problems.append(f"pt_share differs on {len(bad_share)} PMD/PUD tables (first pfn {idx[i]}: "
                        f"stored {share[i]}, upper entries {exp_share[i]})")
    # v1/v2 (COW_RULE_OWNER_NULL): a table whose owner left while shared has owner NULL
    unowned = (owner == 0) & (owners == 0) if phys.cow_rules & COW_RULE_OWNER_NULL else False
    if phys.cow_pte_accounting == "deferred" and np.any(pte & (owners != 1) & ~unowned):
        problems.append(f"PTE tables whose owner does not hold them (deferred accounting): "
                        f"{_first(idx[pte & (owners != 1) & ~unowned])}")
    if phys.cow_pte_accounting == "deferred" and np.any(upper & (owners != 1)):
        problems.append(f"PMD/PUD tables whose owner does not hold them (deferred accounting): "
                        f"{_first(idx[upper & (owners != 1)])}")
    leaked = idx[used & ~tables & ~zero & ~thp & (mapc == 0) & (in_cache == 0)]
    if len(leaked):
        problems.append(f"{len(leaked)} frames in use but neither mapped nor cached: {_first(leaked)}")
    not_used = idx[~used & ((mapc != 0) | (refc != 0) | (in_cache != 0))]
    if len(not_used):
        problems.append(f"free frames still referenced: {_first(not_used)}")
    ae_bad = idx[((fl & PG_ANON_EXCLUSIVE) != 0) & ((mapc > 1) | (head & (share > 1)))]
    if len(ae_bad):
        problems.append(f"PageAnonExclusive pages mapped more than once: {_first(ae_bad)}")
    if np.any(filep & (in_cache == 0) & used):
        problems.append(f"page-cache frames outside every cache: {_first(idx[filep & (in_cache == 0) & used])}")

    c = phys.counters()
    shmem = (fl & PG_SWAPBACKED) != 0
    expect = {
        "nr_free_pages": n - int(np.count_nonzero(used)),
        "nr_anon_mapped": int(np.count_nonzero(anon & ((mapc > 0) | _pmd_mapped(head, share)))),
        "nr_anon_transparent_hugepages": int(np.count_nonzero(head & anon & (share > 0))),
        "nr_file_mapped": int(np.count_nonzero(filep & ((mapc > 0) | _pmd_mapped(head, share)))),
        "nr_file_hugepages": int(np.count_nonzero(head & filep & ~shmem & (in_cache > 0))),
        "nr_file_pmdmapped": int(np.count_nonzero(head & filep & ~shmem & (share > 0))),
        "nr_shmem_hugepages": int(np.count_nonzero(head & filep & shmem & (in_cache > 0))),
        "nr_shmem_pmdmapped": int(np.count_nonzero(head & filep & shmem & (share > 0))),
        "nr_page_table_pages": int(np.count_nonzero(tables)),
        "nr_file_pages": int(np.count_nonzero(filep & used)),
        "nr_shmem": int(np.count_nonzero(filep & used & shmem)),
    }
    for k, v in expect.items():
        if c[k] != v:
            problems.append(f"{k}: counter {c[k]}, recomputed {v}")
    problems += _check_free_lists(phys, fl, (d1, t0), c["nr_free_pages"])
    if problems:
        raise InvariantError("mmemu invariants violated:\n  " + "\n  ".join(problems))
