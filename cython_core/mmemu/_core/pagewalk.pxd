"""walk_page_range: the one descent from the PGD that every range kernel goes through.

Models mm/pagewalk.c (struct mm_walk_ops, struct mm_walk, enum page_walk_action,
walk_page_range_mm / walk_pgd_range / walk_pud_range / walk_pmd_range / walk_pte_range),
P4D folded. A kernel fills a mm_walk_ops with C callbacks and hands its own state as
`private`; the walker visits the entries of [start, end) in address order:
  pgd_entry / pud_entry / pmd_entry(entry, addr, next, walk) for every non-none entry,
    leaf (huge, PSE) PMD and PUD entries included: the walker never descends below a
    leaf, so the entry callback is where a huge entry is handled;
  pte_entry(pte, addr, next, walk) for every PTE of a PTE table the walk descends into
    (range kernels leave it NULL and loop over the PTEs inline in their pmd_entry: one
    indirect call per PMD, none per PTE);
  pte_hole(addr, next, depth, walk) for a none entry, depth = LEVEL_PGD / LEVEL_PUD /
    LEVEL_PMD of that entry (Linux counts depth 0 = PGD downwards).
An entry callback sets walk.action = ACTION_CONTINUE for "handled, do not descend"
(ACTION_SUBTREE, the default, descends). A non-zero return stops the walk and is
returned. The walk descends below an entry only if a lower level has a callback.
With ops.install, none upper entries get a new table on the way instead of pte_hole
(Linux's install_pte walks: pud_alloc / pmd_alloc / pte_alloc); the walk returns -1
if a table cannot be allocated.
walk_page_list walks the pages of an address list (the importer's installs) the same way;
walk_entry_path gives the entries the MMU reads for one address.
Leaves out: VMAs (callers walk one VMA's range at a time), ACTION_AGAIN, hugetlb,
locking, splitting of huge entries.
"""
from libc.stdint cimport int64_t, uint64_t

from mmemu._core.types cimport (
    pte_t, pfn_t, pte_pfn, pmd_leaf, pgd_index, pud_index, pmd_index, pte_index,
    pgd_addr_end, pud_addr_end, pmd_addr_end, PAGE_SIZE, PMD_SHIFT, PUD_SHIFT, PUD_SIZE,
    PGDIR_SIZE,
)
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport (
    mm_t, pgtable_alloc, LEVEL_PTE, LEVEL_PMD, LEVEL_PUD, LEVEL_PGD,
)
from mmemu._core.pgtable cimport pgd_populate, pud_populate, pmd_populate

cdef enum:
    ACTION_SUBTREE = 0      # descend into the table below the entry
    ACTION_CONTINUE = 1     # the entry is handled: go on with the next one at this level

cdef extern from *:
    """
    #define MM_WALK_ALL_END (1ULL << 48)
    """
    # end of a walk over the whole address space: the 512 PGD entries cover 2^48 bytes
    const uint64_t WALK_ALL_END "MM_WALK_ALL_END"

cdef struct mm_walk

ctypedef int (*mm_walk_entry_fn)(pte_t* entry, uint64_t addr, uint64_t next,
                                 mm_walk* walk) noexcept nogil
ctypedef int (*mm_walk_hole_fn)(uint64_t addr, uint64_t next, int depth,
                                mm_walk* walk) noexcept nogil

cdef struct mm_walk_ops:
    mm_walk_entry_fn pgd_entry
    mm_walk_entry_fn pud_entry
    mm_walk_entry_fn pmd_entry
    mm_walk_entry_fn pte_entry
    mm_walk_hole_fn pte_hole
    bint install            # allocate a table for every none entry on the way

cdef struct mm_walk:
    const mm_walk_ops* ops
    physmem_t* pm
    mm_t* mm
    void* private
    int action              # ACTION_*: set by an entry callback


cdef inline int walk_pte_range(pte_t* pmd, uint64_t addr, uint64_t end,
                               mm_walk* walk) noexcept nogil:
    """walk_pte_range: pte_entry for every PTE of [addr, end) under one PMD entry."""
    cdef pte_t* pte = &table_ptr(walk.pm, pte_pfn(pmd[0]))[pte_index(addr)]
    cdef int err
    while True:
        err = walk.ops.pte_entry(pte, addr, addr + PAGE_SIZE, walk)
        if err:
            return err
        addr += PAGE_SIZE
        if addr >= end:
            return 0
        pte += 1


cdef inline int walk_pmd_range(pte_t* pud, uint64_t addr, uint64_t end,
                               mm_walk* walk) noexcept nogil:
    """walk_pmd_range: the PMD entries of [addr, end) under one PUD entry. A pud_entry may
    call it itself (then set ACTION_CONTINUE) to act after the entries below it."""
    cdef const mm_walk_ops* ops = walk.ops
    cdef pte_t* tab = table_ptr(walk.pm, pte_pfn(pud[0]))
    cdef uint64_t span = addr & ~(PUD_SIZE - 1), a, next
    cdef int first = pmd_index(addr), last = pmd_index(end - 1), i = first
    cdef bint holes = ops.install or ops.pte_hole != NULL
    cdef pte_t* pmd
    cdef pfn_t t
    cdef int err
    while True:
        if not holes:
            while i < last and tab[i] == 0:     # nothing to call for a none entry
                i += 1
        pmd = &tab[i]
        a = addr if i == first else span + (<uint64_t>i << PMD_SHIFT)
        next = pmd_addr_end(a, end)
        err = 0
        if pmd[0] == 0 and ops.install:
            t = pgtable_alloc(walk.pm, walk.mm, LEVEL_PTE)
            if t < 0:
                return -1
            pmd_populate(walk.pm, pmd, t)
        if pmd[0] == 0:
            if ops.pte_hole != NULL:
                err = ops.pte_hole(a, next, LEVEL_PMD, walk)
        else:
            walk.action = ACTION_SUBTREE
            if ops.pmd_entry != NULL:
                err = ops.pmd_entry(pmd, a, next, walk)
            if (err == 0 and walk.action == ACTION_SUBTREE and ops.pte_entry != NULL
                    and pmd[0] != 0 and not pmd_leaf(pmd[0])):
                err = walk_pte_range(pmd, a, next, walk)
        if err:
            return err
        if i == last:
            return 0
        i += 1


cdef inline bint _below_pud(const mm_walk_ops* ops) noexcept nogil:
    return (ops.pmd_entry != NULL or ops.pte_entry != NULL or ops.pte_hole != NULL
            or ops.install)


cdef inline int walk_pud_range(pte_t* pgd, uint64_t addr, uint64_t end,
                               mm_walk* walk) noexcept nogil:
    """walk_pud_range: the PUD entries of [addr, end) under one PGD entry. A pgd_entry may
    call it itself (then set ACTION_CONTINUE) to act after the entries below it."""
    cdef const mm_walk_ops* ops = walk.ops
    cdef pte_t* tab = table_ptr(walk.pm, pte_pfn(pgd[0]))
    cdef uint64_t span = addr & ~(PGDIR_SIZE - 1), a, next
    cdef int first = pud_index(addr), last = pud_index(end - 1), i = first
    cdef bint holes = ops.install or ops.pte_hole != NULL
    cdef pte_t* pud
    cdef pfn_t t
    cdef int err
    while True:
        if not holes:
            while i < last and tab[i] == 0:     # nothing to call for a none entry
                i += 1
        pud = &tab[i]
        a = addr if i == first else span + (<uint64_t>i << PUD_SHIFT)
        next = pud_addr_end(a, end)
        err = 0
        if pud[0] == 0 and ops.install:
            t = pgtable_alloc(walk.pm, walk.mm, LEVEL_PMD)
            if t < 0:
                return -1
            pud_populate(walk.pm, pud, t)
        if pud[0] == 0:
            if ops.pte_hole != NULL:
                err = ops.pte_hole(a, next, LEVEL_PUD, walk)
        else:
            walk.action = ACTION_SUBTREE
            if ops.pud_entry != NULL:
                err = ops.pud_entry(pud, a, next, walk)
            if (err == 0 and walk.action == ACTION_SUBTREE and _below_pud(ops)
                    and pud[0] != 0 and not pmd_leaf(pud[0])):
                err = walk_pmd_range(pud, a, next, walk)
        if err:
            return err
        if i == last:
            return 0
        i += 1


cdef inline int walk_page_range(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end,
                                const mm_walk_ops* ops, void* private) noexcept nogil:
    """walk_page_range (walk_page_range_mm + walk_pgd_range) over [start, end) of mm's
    tables; 0, or the first non-zero value a callback returned (-1: an install walk
    could not allocate a table). Nothing happens for an empty range or an mm without a
    PGD."""
    cdef mm_walk walk
    cdef pte_t* pgdt
    cdef pte_t* pgd
    cdef uint64_t addr = start, next
    cdef pfn_t t
    cdef int err
    if start >= end or mm.pgd < 0:
        return 0
    walk.ops = ops
    walk.pm = pm
    walk.mm = mm
    walk.private = private
    walk.action = ACTION_SUBTREE
    pgdt = table_ptr(pm, mm.pgd)
    while True:
        # the index wraps as on the MMU: a range past 2^48 (unvalidated input, which the
        # callers then refuse) walks the PGD again from its first entry
        pgd = &pgdt[pgd_index(addr)]
        next = pgd_addr_end(addr, end)
        err = 0
        if pgd[0] == 0 and ops.install:
            t = pgtable_alloc(pm, mm, LEVEL_PUD)
            if t < 0:
                return -1
            pgd_populate(pm, pgd, t)
        if pgd[0] == 0:
            if ops.pte_hole != NULL:
                err = ops.pte_hole(addr, next, LEVEL_PGD, &walk)
        else:
            walk.action = ACTION_SUBTREE
            if ops.pgd_entry != NULL:
                err = ops.pgd_entry(pgd, addr, next, &walk)
            if (err == 0 and walk.action == ACTION_SUBTREE
                    and (ops.pud_entry != NULL or _below_pud(ops)) and pgd[0] != 0):
                err = walk_pud_range(pgd, addr, next, &walk)
        if err:
            return err
        addr = next
        if addr == end:
            return 0


cdef struct page_list:
    const uint64_t* addrs   # page addresses (a run inside one 2 MiB span is one walk)
    int64_t n
    int64_t i               # the pages of the current walk: [i, run_end), for its pmd_entry
    int64_t run_end


cdef inline int walk_page_list(physmem_t* pm, mm_t* mm, page_list* pl, const mm_walk_ops* ops,
                               void* private) noexcept nogil:
    """walk_page_range over the pages of a list: one walk per run of addresses inside one
    2 MiB span, over [lowest, highest + PAGE_SIZE) of the run, so that an install walk
    allocates tables only where a page goes. The pmd_entry handles pages [pl.i,
    pl.run_end). 0, or the first non-zero value a walk returned."""
    cdef uint64_t lo, hi, span
    cdef int err
    pl.i = 0
    while pl.i < pl.n:
        lo = hi = pl.addrs[pl.i]
        span = lo >> PMD_SHIFT
        pl.run_end = pl.i + 1
        while pl.run_end < pl.n and (pl.addrs[pl.run_end] >> PMD_SHIFT) == span:
            lo = min(lo, pl.addrs[pl.run_end])
            hi = max(hi, pl.addrs[pl.run_end])
            pl.run_end += 1
        err = walk_page_range(pm, mm, lo, hi + PAGE_SIZE, ops, private)
        if err:
            return err
        pl.i = pl.run_end
    return 0


cdef inline int walk_entry_path(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t** path) noexcept nogil:
    """The upper-level entries the MMU reads for addr (pgd_offset, pud_offset, pmd_offset):
    path[0] the PGD entry, path[1] the PUD entry, path[2] the PMD entry, each NULL below a
    none or leaf entry. Returns how many are set (0 for an mm without a PGD)."""
    cdef pte_t* e
    path[0] = path[1] = path[2] = NULL
    if mm.pgd < 0:
        return 0
    e = &table_ptr(pm, mm.pgd)[pgd_index(addr)]
    path[0] = e
    if e[0] == 0:
        return 1
    e = &table_ptr(pm, pte_pfn(e[0]))[pud_index(addr)]
    path[1] = e
    if e[0] == 0 or pmd_leaf(e[0]):
        return 2
    path[2] = &table_ptr(pm, pte_pfn(e[0]))[pmd_index(addr)]
    return 3
