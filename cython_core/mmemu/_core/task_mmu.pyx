# cython: language_level=3
"""Walks that read page tables for statistics and for the invariant checker.

Models pagemap_pte_range/pte_to_pagemap_entry and smaps_pte_range/smaps_account
(fs/proc/task_mmu.c), each a walk_page_range (pagewalk.pxd) with its per-PTE loop inside
the pmd_entry. The recount walks are the checker's own: they rebuild from the tables what
the counters should say. A huge PMD (huge_memory.pyx) is seen by each walk's pmd_entry:
pagemap_pmd_range's and smaps_pmd_entry's parts are inline there.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport *
from mmemu._core.pagemap cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport mm_t, MMCore, vma_t, vma_from_py
from mmemu._core.filemap cimport xa_load
from mmemu._core.pagewalk cimport mm_walk, mm_walk_ops, walk_page_range, WALK_ALL_END
from mmemu._core.cow_pte_profile cimport cow_owner_null

cnp.import_array()


# ---- /proc/PID/pagemap ----

cdef struct pagemapread:
    uint64_t* out           # one entry per page from start
    uint64_t start


cdef int pagemap_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """pagemap_pte_range + pte_to_pagemap_entry over [addr, end) of one PTE table (holes
    stay 0)."""
    cdef physmem_t* pm = walk.pm
    cdef pagemapread* pr = <pagemapread*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef uint64_t* o = pr.out + ((addr - pr.start) >> PAGE_SHIFT)
    cdef int i, i0 = pte_index(addr), i1 = pte_index(end - 1) + 1
    cdef pte_t e
    cdef pfn_t pfn, head
    cdef uint32_t fl
    cdef uint64_t v
    if pmd_leaf(pmd[0]):
        # pagemap_pmd_range_thp: every page present at its PFN; the huge zero folio and a
        # page-cache folio are not anon (PM_FILE); 6.18 (CONFIG_PAGE_MAPCOUNT) marks every
        # page exclusive when the precise mapcount (PMD + PTE) of pmd_page, the head page,
        # is 1 (the live oracle)
        e = pmd[0]
        if not pte_present(e):
            return 0
        head = pte_pfn(e)
        fl = pm.flags[head]
        v = PM_PRESENT | (PM_FILE if not (fl & PG_ANON) else 0)
        for i in range(i0, i1):
            o[i - i0] = v | (<uint64_t>(head + i) & PM_PFN_MASK)
            if head != pm.huge_zero_pfn and pm.pt_share[head] + pm.mapcount[head] == 1:
                o[i - i0] |= PM_MMAP_EXCLUSIVE
        return 0
    for i in range(i0, i1):
        e = t[i]
        if is_guard_pte(e):
            o[i - i0] = PM_GUARD_ENTRY
            continue
        if is_swap_pte(e):
            # swap type 0 in bits 0-4, the offset from bit 5 (MAX_SWAPFILES_SHIFT)
            o[i - i0] = PM_SWAP | ((<uint64_t>swap_pte_slot(e) << 5) & PM_PFN_MASK)
            continue
        if e == 0 or not pte_present(e):
            continue
        pfn = pte_pfn(e)
        v = PM_PRESENT | (<uint64_t>pfn & PM_PFN_MASK)
        fl = pm.flags[pfn]
        if not pte_special(e) and not (fl & PG_ZERO):
            if not (fl & PG_ANON):
                v |= PM_FILE
            if pm.mapcount[pfn] + (pm.pt_share[compound_head(pfn)] if fl & PG_COMPOUND else 0) == 1:
                v |= PM_MMAP_EXCLUSIVE
        o[i - i0] = v
    return 0


cdef mm_walk_ops pagemap_ops
pagemap_ops.pmd_entry = pagemap_pte_range


def pagemap(MMCore mmc, uint64_t start, int64_t npages):
    """/proc/PID/pagemap entries for npages pages from start (kernel bit layout)."""
    out = np.zeros(npages, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef pagemapread pr
    if npages == 0:
        return out
    pr.out = &o[0]
    pr.start = start
    with nogil:
        walk_page_range(&mmc.phys.pm, &mmc.mm, start, start + (<uint64_t>npages << PAGE_SHIFT),
                        &pagemap_ops, &pr)
    return out


# ---- /proc/PID/smaps ----

cdef struct mem_size_stats:
    int64_t resident, anonymous, referenced, anonymous_thp, file_thp, shmem_thp
    int64_t shared_clean, shared_dirty, private_clean, private_dirty
    uint64_t pss, pss_anon, pss_file, pss_shmem, pss_dirty


cdef int smaps_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """smaps_pte_range + smaps_account for the PTEs of [addr, end) of one PTE table."""
    cdef physmem_t* pm = walk.pm
    cdef mem_size_stats* mss = <mem_size_stats*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef int i, i0 = pte_index(addr), i1 = pte_index(end - 1) + 1
    cdef pte_t e
    cdef pfn_t pfn, head = -1
    cdef uint32_t fl
    cdef int32_t mc
    cdef bint dirty, private
    cdef uint64_t pss
    if pmd_leaf(pmd[0]):
        # smaps_pmd_entry: an anonymous folio counts whole in AnonHugePages, a page-cache
        # one in FilePmdMapped (a shmem one in ShmemPmdMapped), its pages as smaps_account(compound) does; the huge zero
        # folio counts nothing
        e = pmd[0]
        head = pte_pfn(e)
        if not pte_present(e) or (pm.flags[head] & PG_ZERO):
            return 0
        if pm.flags[head] & PG_ANON:
            mss.anonymous_thp += PMD_SIZE
        elif pm.flags[head] & PG_SWAPBACKED:
            mss.shmem_thp += PMD_SIZE
        else:
            mss.file_thp += PMD_SIZE
        i0, i1 = 0, HPAGE_PMD_NR
    for i in range(i0, i1):
        if head >= 0:
            pfn = head + i
        else:
            e = t[i]
            if e == 0 or not pte_present(e) or pte_special(e):
                continue
            pfn = pte_pfn(e)
        fl = pm.flags[pfn]
        if fl & PG_ZERO:
            continue
        mss.resident += 4096
        if fl & PG_ANON:
            mss.anonymous += 4096
        if pte_young(e):
            mss.referenced += 4096
        dirty = pte_dirty(e) or (fl & PG_DIRTY) != 0
        pss = (<uint64_t>4096) << 12
        if pm.refcount[compound_head(pfn) if fl & PG_COMPOUND else pfn] == 1:
            private = True
        else:
            # folio_precise_page_mapcount: a THP page's PTE mapcount plus the PMD mappings
            mc = pm.mapcount[pfn] + (pm.pt_share[compound_head(pfn)] if fl & PG_COMPOUND else 0)
            if mc >= 2:
                pss = pss // <uint64_t>mc
            private = mc < 2
        mss.pss += pss
        if fl & PG_ANON:
            mss.pss_anon += pss
        elif fl & PG_SWAPBACKED:
            mss.pss_shmem += pss
        else:
            mss.pss_file += pss
        if dirty:
            mss.pss_dirty += pss
            if private:
                mss.private_dirty += 4096
            else:
                mss.shared_dirty += 4096
        else:
            if private:
                mss.private_clean += 4096
            else:
                mss.shared_clean += 4096
    return 0


cdef mm_walk_ops smaps_ops
smaps_ops.pmd_entry = smaps_pte_range


def smaps_range(MMCore mmc, uint64_t start, uint64_t end):
    """smaps_pte_range + smaps_account over [start, end): a dict of byte counts.

    'pss' is in bytes << 12 (PSS_SHIFT), as the kernel accumulates it.
    """
    cdef mem_size_stats mss
    mss.resident = mss.anonymous = mss.referenced = mss.anonymous_thp = mss.file_thp = mss.shmem_thp = 0
    mss.shared_clean = mss.shared_dirty = mss.private_clean = mss.private_dirty = 0
    mss.pss = mss.pss_anon = mss.pss_file = mss.pss_shmem = mss.pss_dirty = 0
    with nogil:
        walk_page_range(&mmc.phys.pm, &mmc.mm, start, end, &smaps_ops, &mss)
    return {
        "Rss": mss.resident, "Pss": mss.pss, "Pss_Dirty": mss.pss_dirty,
        "Pss_Anon": mss.pss_anon, "Pss_File": mss.pss_file, "Pss_Shmem": mss.pss_shmem,
        "Shared_Clean": mss.shared_clean, "Shared_Dirty": mss.shared_dirty,
        "Private_Clean": mss.private_clean, "Private_Dirty": mss.private_dirty,
        "Referenced": mss.referenced, "Anonymous": mss.anonymous,
        "AnonHugePages": mss.anonymous_thp,
        "FilePmdMapped": mss.file_thp,
        "ShmemPmdMapped": mss.shmem_thp,
    }


# ---- the checker's recount ----

cdef struct recount:
    int64_t d1              # the arrays cover the used ranges, [0, d1) then [t0, nframes):
    int64_t shift           #   frame p is at p below d1, at p - shift (t0 - d1) above
    int32_t* mapcount       # out: PTEs mapping each frame (accounted entries only)
    int32_t* pt_share       # out: upper entries pointing at each table (each entry once)
    uint8_t* level          # in/out: 4 = PGD .. 1 = PTE table, per frame any mm links
    int32_t* last           # in/out: the last mm (its `me`) that linked each table
    int32_t me              # this mm's number in the recount (> 0)
    int32_t* owners         # out: PTE tables this mm owns
    int64_t* spans          # in/out: 1 + the PMD span (addr >> 21) each PTE table is linked at
    int64_t rss[4]
    int64_t ntables
    int64_t nhuge           # huge PMDs (each has a deposited table)
    int64_t nfile           # file PMDs
    void* problems          # a Python list of str
    bint pud_first          # the walk is the first into the current PUD table: count its links
    bint pmd_first          # ... into the current PMD table
    bint pud_ro             # a read-only PGD entry is above the current PUD table
    bint pmd_ro             # a read-only PGD or PUD entry is above the current PMD table


_PROBLEMS = (
    "PMD table {x} linked twice",
    "PUD table {x} linked twice",
    "PTE table {x} linked twice in one mm",
    "PTE table {x} is shared {y} ways but its PMD is writable",
    "unexpected non-present PTE {x:#x}",
    "PTE {x:#x} points outside memory",
    "zero-page PTE {x:#x} not special read-only",
    "PTE {x:#x} maps free frame {y}",
    "PTE {x:#x} maps page-table frame {y}",
    "PTE table {x} linked at two addresses (spans {y:#x} and another)",
    "special PTE {x:#x} does not map the zero page",
    "PTE table {x} is shared {y} ways but holds a swap entry (deferred accounting)",
    "table {x} is linked by an mm that does not own it (pt_owner {y})",
    "upper-level table {x} shared with another mm",
    "huge PMD {x:#x} maps neither a THP head nor the huge zero folio read-only",
    "{x} tables deposited but {y} huge PMDs",
    "table {x} is shared {y} ways but its upper entry is writable",
    "{x} file PMDs counted but {y} in the tables",
)

cdef enum:     # indexes into _PROBLEMS
    P_PMD_TWICE = 0
    P_PUD_TWICE = 1
    P_PTE_TWICE = 2
    P_SHARED_WRITABLE = 3
    P_NOT_PRESENT = 4
    P_OUTSIDE = 5
    P_ZERO = 6
    P_FREE = 7
    P_TABLE = 8
    P_SPANS = 9
    P_SPECIAL = 10
    P_SHARED_SWAP = 11
    P_OWNER = 12
    P_SHARED_UPPER = 13
    P_HUGE = 14
    P_DEPOSIT = 15
    P_UPPER_WRITABLE = 16
    P_FILE_PMDS = 17


cdef void _problem(mm_walk* walk, int kind, uint64_t x, int64_t y=0) noexcept nogil:
    """Report a problem (_PROBLEMS[kind] with x and y) in the recount's list."""
    with gil:
        (<list>(<recount*>walk.private).problems).append(_PROBLEMS[kind].format(x=x, y=y))


cdef inline int64_t _ix(recount* r, pfn_t p) noexcept nogil:
    """The index of frame p (in use: inside the used ranges) in the recount's arrays."""
    return p if p < r.d1 else p - r.shift


cdef inline bint _mark(mm_walk* walk, pfn_t tp, uint8_t lvl, int twice) noexcept nogil:
    """This mm links table tp at level lvl: once in the mm; other mms may link it too (a
    COW-shared table) only at the same level. True if no mm linked it before (the walk
    is the first into it). Cost: O(tables), whatever the memory size."""
    cdef recount* r = <recount*>walk.private
    cdef int64_t i = _ix(r, tp)
    cdef bint first = r.level[i] == 0
    if r.last[i] == r.me:
        _problem(walk, twice, tp)
    elif not first and r.level[i] != lvl:
        _problem(walk, P_SHARED_UPPER, tp)
    r.last[i] = r.me
    if r.level[i] < lvl:
        r.level[i] = lvl
    return first


cdef inline bint _link_table(mm_walk* walk, pte_t e, uint8_t lvl, bint counted,
                             bint ro_above) noexcept nogil:
    """An upper-level entry links the table below it: its own mm's table, or one shared
    copy-on-write (whole-table COW) through a read-only entry on the path (ro_above, or e
    itself). counted: the entry is the first walk's into its table (one link in pt_share).
    Eager accounting counts the table in every holder, deferred in its owner. True if the
    walk is the first into the table."""
    cdef recount* r = <recount*>walk.private
    cdef physmem_t* pm = walk.pm
    cdef pfn_t tp = pte_pfn(e)
    cdef int64_t ti = _ix(r, tp)
    cdef bint first = _mark(walk, tp, lvl, P_PUD_TWICE if lvl == 3 else P_PMD_TWICE)
    cdef bint ro = ro_above or not pte_write(e)
    if counted:
        r.pt_share[ti] += 1
    if pm.pt_share[tp] > 1 and not ro:
        _problem(walk, P_UPPER_WRITABLE, tp, pm.pt_share[tp])
    if not ro and pm.pt_owner[tp] != walk.mm.id:
        _problem(walk, P_OWNER, tp, pm.pt_owner[tp])
    if pm.pt_owner[tp] == walk.mm.id:
        r.owners[ti] += 1
    if pm.cow_eager or pm.pt_owner[tp] == walk.mm.id:
        r.ntables += 1
    return first


cdef int recount_pgd_entry(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    cdef recount* r = <recount*>walk.private
    r.pud_first = _link_table(walk, e[0], 3, True, False)
    r.pud_ro = not pte_write(e[0])
    return 0


cdef int recount_pud_entry(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    cdef recount* r = <recount*>walk.private
    r.pmd_first = _link_table(walk, e[0], 2, r.pud_first, r.pud_ro)
    r.pmd_ro = r.pud_ro or not pte_write(e[0])
    return 0


cdef int recount_huge_pmd(mm_walk* walk, pte_t e) noexcept nogil:
    """A huge PMD: its deposited table counts in pgtables_bytes; a THP's entire mapcount
    (kept in its head's pt_share) and 512 pages of MM_ANONPAGES; the huge zero folio
    read-only and uncounted; a page-cache folio its entire mapcount and 512 file pages,
    with no deposited table."""
    cdef physmem_t* pm = walk.pm
    cdef recount* r = <recount*>walk.private
    cdef pfn_t head = pte_pfn(e)
    if (head != pm.huge_zero_pfn and (pm.flags[head] & (PG_USED | PG_HEAD | PG_FILE | PG_ANON))
            == PG_USED | PG_HEAD | PG_FILE):
        # a page-cache folio: no deposited table; 512 pages of the file (or shmem) counter
        r.pt_share[_ix(r, head)] += 1
        r.rss[MM_SHMEMPAGES if pm.flags[head] & PG_SWAPBACKED else MM_FILEPAGES] += HPAGE_PMD_NR
        r.nfile += 1
        return 0
    r.ntables += 1
    r.nhuge += 1
    if head == pm.huge_zero_pfn:
        if pte_write(e):
            _problem(walk, P_HUGE, e)
        return 0
    if (pm.flags[head] & (PG_USED | PG_HEAD | PG_ANON)) != PG_USED | PG_HEAD | PG_ANON:
        _problem(walk, P_HUGE, e)
        return 0
    r.pt_share[_ix(r, head)] += 1
    r.rss[MM_ANONPAGES] += HPAGE_PMD_NR
    return 0


cdef int recount_pte_range(pte_t* pmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """A PTE table: its share and owner, and (if this mm accounts it) its entries."""
    cdef physmem_t* pm = walk.pm
    cdef recount* r = <recount*>walk.private
    cdef pfn_t tp = pte_pfn(pmd[0]), p
    cdef pte_t* ptet
    cdef pte_t e
    cdef uint32_t fl
    cdef int l
    cdef int64_t ti = _ix(r, tp)
    cdef int64_t nobody[4]
    cdef int64_t* rss = r.rss
    if pmd_leaf(pmd[0]):
        return recount_huge_pmd(walk, pmd[0])
    _mark(walk, tp, 1, P_PTE_TWICE)
    if r.pmd_first:
        r.pt_share[ti] += 1
    if r.spans[ti] == 0:
        r.spans[ti] = 1 + <int64_t>(addr >> PMD_SHIFT)
    elif r.spans[ti] != 1 + <int64_t>(addr >> PMD_SHIFT):
        _problem(walk, P_SPANS, tp, addr & ~(PMD_SIZE - 1))
    if pm.pt_share[tp] > 1 and pte_write(pmd[0]) and not r.pmd_ro:
        _problem(walk, P_SHARED_WRITABLE, tp, pm.pt_share[tp])
    if pm.pt_share[tp] > 1 and not pm.cow_eager:
        # deferred accounting has no holder to count a duplicated swap entry; eager (v3-v5)
        # duplicates each at fork, and the swap check counts one entry per holder
        ptet = table_ptr(pm, tp)
        for l in range(512):
            if is_swap_pte(ptet[l]):
                _problem(walk, P_SHARED_SWAP, tp, pm.pt_share[tp])
                break
    if pm.pt_owner[tp] == walk.mm.id:
        r.owners[ti] += 1
    if pm.cow_eager or pm.pt_owner[tp] == walk.mm.id:
        r.ntables += 1
    elif cow_owner_null(pm) and pm.pt_owner[tp] == 0 and r.pt_share[ti] == 1:
        rss = nobody        # v1/v2: a table whose owner left counts for nobody; its maps, once
    else:
        return 0
    ptet = table_ptr(pm, tp)
    for l in range(512):
        e = ptet[l]
        if e == 0 or is_guard_pte(e):
            continue
        if is_swap_pte(e):
            rss[MM_SWAPENTS] += 1
            continue
        if not pte_present(e):
            _problem(walk, P_NOT_PRESENT, e)
            continue
        p = pte_pfn(e)
        if p < 0 or p >= pm.nframes:
            _problem(walk, P_OUTSIDE, e)
            continue
        fl = pm.flags[p]
        if fl & PG_ZERO:
            if not pte_special(e) or pte_write(e):
                _problem(walk, P_ZERO, e)
            continue
        if pte_special(e):
            _problem(walk, P_SPECIAL, e)
            continue
        if not (fl & PG_USED):
            _problem(walk, P_FREE, e, p)
            continue
        if fl & PG_TABLE:
            _problem(walk, P_TABLE, e, p)
            continue
        r.mapcount[_ix(r, p)] += 1
        if fl & PG_ANON:
            rss[MM_ANONPAGES] += 1
        elif fl & PG_SWAPBACKED:
            rss[MM_SHMEMPAGES] += 1
        else:
            rss[MM_FILEPAGES] += 1
    return 0


cdef mm_walk_ops recount_ops
recount_ops.pgd_entry = recount_pgd_entry
recount_ops.pud_entry = recount_pud_entry
recount_ops.pmd_entry = recount_pte_range


def recount_mm(MMCore mmc, int32_t me, int32_t[::1] mapcount, int32_t[::1] pt_share,
               uint8_t[::1] level, int32_t[::1] last, int32_t[::1] owners, int64_t[::1] spans):
    """Walk every table of one mm, the me-th of the recount (its tables validated first:
    MMCore.validate_tables). The arrays have one entry per frame of the used ranges, [0,
    data_hwm) then [table_lwm, nframes) (what the walk can reach; O(used), not O(memory)),
    and are shared by every mm's walk: add
    each accounted PTE's page to mapcount and each upper entry's table to pt_share (an entry
    of a table shared with an mm walked before counted once); mark
    each table's level (4=PGD .. 1=PTE, the highest any mm gave it) in level and this mm in
    last (a table linked twice by one mm, or by two at different levels, is a problem);
    count in owners the tables this mm owns; note in spans (1 + addr >> 21) where each
    PTE table is linked: a table linked at two addresses is a problem (COW sharers map a
    table at the same address), as is an upper-level table this mm did not allocate, a
    special PTE off the zero page, and a swap entry in a shared table (deferred accounting).

    A table reached through a read-only entry is COW-shared (a PTE table through its PMD,
    a PMD or PUD table through any entry above it): in eager accounting every holder
    accounts it and its entries; in deferred accounting only its owner (pt_owner) does.
    A table of this mm's own (writable path) must be owned by it.
    Returns (rss[4] recomputed, PUD+PMD+PTE tables this mm accounts, list of problems).
    """
    cdef recount r
    cdef physmem_t* pm = &mmc.phys.pm
    cdef pfn_t pgd = mmc.mm.pgd
    cdef int64_t used = pm.data_hwm + pm.nframes - pm.table_lwm
    problems = []
    if not (mapcount.shape[0] == pt_share.shape[0] == level.shape[0] == last.shape[0]
            == owners.shape[0] == spans.shape[0] == used):
        raise ValueError(f"recount arrays must have {used} entries (the used frames)")
    if pgd < 0:
        return (0, 0, 0, 0), 0, problems
    r.d1 = pm.data_hwm
    r.shift = pm.table_lwm - pm.data_hwm
    r.mapcount = &mapcount[0]
    r.pt_share = &pt_share[0]
    r.level = &level[0]
    r.last = &last[0]
    r.me = me
    r.owners = &owners[0]
    r.spans = &spans[0]
    r.rss[0] = r.rss[1] = r.rss[2] = r.rss[3] = 0
    r.ntables = 0
    r.nhuge = 0
    r.nfile = 0
    r.problems = <void*>problems
    r.pud_first = r.pmd_first = True
    r.pud_ro = r.pmd_ro = False
    cdef int64_t gi = _ix(&r, pgd)
    if last[gi] == me or level[gi] != 0:
        problems.append(_PROBLEMS[P_SHARED_UPPER].format(x=pgd))
    level[gi] = 4
    last[gi] = me
    if pm.pt_owner[pgd] != mmc.mm.id:
        problems.append(_PROBLEMS[P_OWNER].format(x=pgd, y=pm.pt_owner[pgd]))
    walk_page_range(pm, &mmc.mm, 0, WALK_ALL_END, &recount_ops, &r)
    recount_deposited(pm, &mmc.mm, &r)
    return (r.rss[0], r.rss[1], r.rss[2], r.rss[3]), r.ntables, problems


cdef void recount_deposited(physmem_t* pm, mm_t* mm, recount* r):
    """The mm's deposited PTE tables (pgtable_trans_huge_deposit): one per huge PMD, each a
    table frame of this mm, held once (a PTE table no PMD links: pt_share 0)."""
    cdef mm_walk walk
    cdef pfn_t t = mm.pmd_huge_pte
    cdef int64_t i
    walk.pm = pm
    walk.mm = mm
    walk.private = r
    if mm.nr_file_pmds != r.nfile:
        _problem(&walk, P_FILE_PMDS, mm.nr_file_pmds, r.nfile)
    if mm.nr_deposited != r.nhuge:
        _problem(&walk, P_DEPOSIT, mm.nr_deposited, r.nhuge)
        return
    for i in range(mm.nr_deposited):
        if t < 0 or t >= pm.nframes or (pm.flags[t] & (PG_USED | PG_TABLE)) != PG_USED | PG_TABLE:
            _problem(&walk, P_DEPOSIT, mm.nr_deposited, r.nhuge)
            return
        _mark(&walk, t, 1, P_PTE_TWICE)
        if pm.pt_owner[t] != mm.id:
            _problem(&walk, P_OWNER, t, pm.pt_owner[t])
        r.owners[_ix(r, t)] += 1
        t = pm.buddy_next[t]


# ---- the checker's entry rules and count ----

cdef enum:
    AUDIT_OK = 0
    AUDIT_WRITE_NO_VM_WRITE = 1
    AUDIT_ANON_IN_SHARED = 2
    AUDIT_WRITE_NOT_ANON = 3
    AUDIT_WRITE_SHARED_ANON = 4
    AUDIT_CACHE_IN_ANON = 5
    AUDIT_CACHE_INDEX = 6
    AUDIT_ANON_NO_ANON_VMA = 7


cdef struct audit:
    bint path_ro            # a read-only PGD or PUD entry above the current PMD table
    bint pgd_ro
    bint shared
    bint writable_vma
    vma_t vma               # the VMA's backing object (cache, pgoff) and start
    int64_t n               # non-none PTEs seen
    int problem             # AUDIT_*
    uint64_t addr           # where
    int32_t mapcount        # AUDIT_WRITE_SHARED_ANON: the page's mapcount


cdef int audit_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """The entry rules over [addr, end) of one PTE table; 1 (stop) at the first problem."""
    cdef physmem_t* pm = walk.pm
    cdef audit* a = <audit*>walk.private
    cdef pte_t* t = table_ptr(pm, pte_pfn(pmd[0]))
    cdef int i
    cdef pte_t e
    cdef pfn_t p
    cdef uint32_t fl
    if pmd_leaf(pmd[0]):
        # a huge PMD: one entry, in a private VMA with an anon_vma; writable only if the
        # VMA is and the folio exclusive, mapped by this PMD alone (a page-cache folio: below)
        e = pmd[0]
        p = pte_pfn(e)
        a.n += 1
        a.addr = addr
        if p != pm.huge_zero_pfn and (pm.flags[p] & PG_FILE):
            # a page-cache folio: at its index in the VMA's file, read-only in a private VMA
            if a.vma.cache == NULL:
                a.problem = AUDIT_CACHE_IN_ANON
            elif xa_load(a.vma.cache, a.vma.pgoff + <int64_t>(
                    ((addr & ~(<uint64_t>PMD_SIZE - 1)) - a.vma.start) >> PAGE_SHIFT)) != p:
                a.problem = AUDIT_CACHE_INDEX
            elif pte_write(e) and not a.writable_vma:
                a.problem = AUDIT_WRITE_NO_VM_WRITE
            elif pte_write(e) and not a.shared:
                a.problem = AUDIT_WRITE_NOT_ANON
            return 1 if a.problem != AUDIT_OK else 0
        if a.shared or not a.vma.anon_vma:
            a.problem = AUDIT_ANON_NO_ANON_VMA if not a.shared else AUDIT_ANON_IN_SHARED
        elif pte_write(e) and not a.writable_vma:
            a.problem = AUDIT_WRITE_NO_VM_WRITE
        elif pte_write(e) and (p == pm.huge_zero_pfn or not (pm.flags[p] & PG_ANON_EXCLUSIVE)
                               or pm.pt_share[p] != 1):
            a.problem = AUDIT_WRITE_SHARED_ANON
            a.mapcount = pm.pt_share[p]
        return 1 if a.problem != AUDIT_OK else 0
    for i in range(pte_index(addr), pte_index(end - 1) + 1):
        e = t[i]
        if e == 0:
            continue
        a.n += 1
        if is_swap_pte(e) and not a.vma.anon_vma:
            a.addr = addr + (<uint64_t>(i - pte_index(addr)) << PAGE_SHIFT)
            a.problem = AUDIT_ANON_NO_ANON_VMA
            return 1
        if not pte_write(pmd[0]) or a.path_ro:
            e = pte_wrprotect(e)        # a COW-shared table is read-only through its PMD
        p = pte_pfn(e)
        fl = pm.flags[p] if 0 <= p < pm.nframes else 0
        a.addr = addr + (<uint64_t>(i - pte_index(addr)) << PAGE_SHIFT)
        if (fl & PG_ANON) and pte_present(e) and not a.vma.anon_vma:
            a.problem = AUDIT_ANON_NO_ANON_VMA
        elif (fl & PG_FILE) and not pte_special(e) and a.vma.cache == NULL:
            a.problem = AUDIT_CACHE_IN_ANON
        elif (fl & PG_FILE) and not pte_special(e) and xa_load(
                a.vma.cache, a.vma.pgoff + <int64_t>((a.addr - a.vma.start) >> PAGE_SHIFT)) != p:
            a.problem = AUDIT_CACHE_INDEX
        elif pte_write(e) and not a.writable_vma:
            a.problem = AUDIT_WRITE_NO_VM_WRITE
        elif a.shared and (fl & PG_ANON):
            a.problem = AUDIT_ANON_IN_SHARED
        elif not a.shared and pte_write(e):
            if not (fl & PG_ANON):
                a.problem = AUDIT_WRITE_NOT_ANON
            elif not (fl & PG_ANON_EXCLUSIVE) or pm.mapcount[p] != 1:
                a.problem = AUDIT_WRITE_SHARED_ANON
                a.mapcount = pm.mapcount[p]
        if a.problem != AUDIT_OK:
            return 1
    return 0


cdef int audit_pgd_entry(pte_t* e, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    (<audit*>walk.private).pgd_ro = not pte_write(e[0])
    return 0


cdef int audit_pud_entry(pte_t* e, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """Effective write permission is the AND of the RW bits along the walk."""
    cdef audit* a = <audit*>walk.private
    a.path_ro = a.pgd_ro or not pte_write(e[0])
    return 0


cdef mm_walk_ops audit_ops
audit_ops.pgd_entry = audit_pgd_entry
audit_ops.pud_entry = audit_pud_entry
audit_ops.pmd_entry = audit_pte_range


def audit_range(MMCore mmc, object vma):
    """Entry rules inside one VMA (mmemu.vma.VMA): (non-none PTE count, first problem or
    None).

    A writable PTE in a private VMA must map an exclusive anon page; no PTE may be
    writable in a VMA without VM_WRITE; a shared VMA maps no anon page; a page-cache page
    is mapped only by a VMA of its object, at its offset (vm_pgoff); an anon page or a swap
    entry only by a VMA with an anon_vma (which fork copies).
    """
    cdef audit a
    vma_from_py(&a.vma, vma)
    cdef uint64_t start = a.vma.start, end = a.vma.end
    a.path_ro = a.pgd_ro = False
    a.shared = (a.vma.flags & VM_SHARED) != 0
    a.writable_vma = (a.vma.flags & VM_WRITE) != 0
    a.n = 0
    a.problem = AUDIT_OK
    a.addr = 0
    a.mapcount = 0
    walk_page_range(&mmc.phys.pm, &mmc.mm, start, end, &audit_ops, &a)
    if a.problem == AUDIT_OK:
        return a.n, None
    text = {
        AUDIT_WRITE_NO_VM_WRITE: "writable PTE in a VMA without VM_WRITE",
        AUDIT_ANON_IN_SHARED: "anon page in a shared VMA",
        AUDIT_WRITE_NOT_ANON: "writable PTE to a non-anon page in a private VMA",
        AUDIT_WRITE_SHARED_ANON: f"writable PTE to a shared anon page (mapcount {a.mapcount})",
        AUDIT_CACHE_IN_ANON: "page-cache page in an anonymous VMA",
        AUDIT_CACHE_INDEX: "page-cache page that is not its object's page at this offset",
        AUDIT_ANON_NO_ANON_VMA: "anon page or swap entry in a VMA without an anon_vma",
    }[a.problem]
    return a.n, f"{a.addr:#x}: {text}"


cdef int count_pte_range(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """Non-none entries of one PTE table (a huge PMD: one)."""
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef int i
    if pmd_leaf(pmd[0]):
        (<int64_t*>walk.private)[0] += 1
        return 0
    for i in range(512):
        if t[i] != 0:
            (<int64_t*>walk.private)[0] += 1
    return 0


cdef mm_walk_ops count_ops
count_ops.pmd_entry = count_pte_range


def count_present(MMCore mmc):
    """Non-none PTEs in the whole address space (each table once per mm)."""
    cdef int64_t n = 0
    walk_page_range(&mmc.phys.pm, &mmc.mm, 0, WALK_ALL_END, &count_ops, &n)
    return n


cdef int pte_table_entry(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """A PMD entry with a PTE table below: its span's address goes to the list."""
    with gil:
        (<list>walk.private).append(addr & ~(PMD_SIZE - 1))
    return 0


cdef mm_walk_ops pte_tables_ops
pte_tables_ops.pmd_entry = pte_table_entry


def pte_tables(MMCore mmc, uint64_t start, uint64_t end):
    """The PMD spans (their 2 MiB-aligned addresses, int64) of [start, end) below 2**47
    that have a PTE table: where pagemap can have a non-zero entry (pagemap_pmd_range)."""
    out = []
    if end > (<uint64_t>1) << 47:
        end = (<uint64_t>1) << 47
    if mmc.mm.pgd < 0 or start >= end:
        return np.empty(0, dtype=np.int64)
    walk_page_range(&mmc.phys.pm, &mmc.mm, start, end, &pte_tables_ops, <void*>out)
    return np.array(out, dtype=np.int64)
