# cython: language_level=3
"""Copy-on-write of whole page-table levels: PMD and PUD tables shared at fork.

mmemu's own design (the COW page table series' TODO "COW to the entire page table"; no
kernel has it). At fork the child's PUD entry (PMD-level sharing) or PGD entry (PUD-level
sharing) points read-only at the parent's table, the parent's entry loses RW and the
table's share count rises (pt_share; 0 on a table never shared means 1). Effective write
permission is the AND of the RW bits along the walk, so nothing under a read-only upper
entry is writable; the entries below are left as they are at fork.

break_cow_table makes such a table private before anything under it changes, top down:
share count 1 reuses it (its entries turn read-only, so the tables below become COW-shared
in turn), otherwise mm gets a copy whose entries link the same lower tables read-only (their
share counts rise); break_cow_pte then does the same for the PTE table. cow_table_drop is
munmap/exit of a whole shared range: mm's link goes, the table stays for the others.

Accounting (physmem_t.cow_eager), per table as cow_pte.pyx does for PTE tables:
  eager: every mm reaching a table counts it (pgtables_bytes) and, for a PTE table, its
    pages (rss, mapcount, refcount): a fork sharing an upper table accounts its whole
    subtree to the child and write-protects the PTEs below while they are still private;
  deferred: each table is counted by its owner (pt_owner) alone: a fork changes no count,
    and an owner that stops reaching a table hands its counts to another holder.
Leaves out: huge (leaf) PMD and PUD entries under a shared table (not write-protected or
copied with their pages), TLB batching (one flush counted per break or drop).
"""
from libc.stdint cimport int64_t, uint64_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport mm_t, pgtable_alloc, LEVEL_PMD, LEVEL_PUD
from mmemu._core.pgtable cimport (
    ptep_set_wrprotect, set_pmd_at, pmdp_set_wrprotect, set_pud, pud_populate, pud_clear,
    pudp_set_wrprotect, set_pgd, pgd_populate, pgd_clear, pgdp_set_wrprotect,
)
from mmemu._core.cow_pte cimport (
    account_table_pages, table_rss, cow_walk, BELOW_PRIVATE, BELOW_COW, BELOW_COPY,
)
from mmemu._core.pagewalk cimport mm_walk, walk_entry_path, ACTION_CONTINUE
from mmemu._core.tlb cimport flush_tlb_mm_range


cdef int _skip_break_level = 0     # negative controls only: _debug_skip_break


def _debug_skip_break(int level):
    """Negative controls of the fuzzers only: break_cow_table leaves tables of this level
    (LEVEL_PMD 2, LEVEL_PUD 3) shared and says it broke them; 0 restores the break."""
    global _skip_break_level
    if level not in (0, LEVEL_PMD, LEVEL_PUD):
        raise ValueError("level must be 0, 2 (PMD tables) or 3 (PUD tables)")
    _skip_break_level = level


cdef inline bint upper_cow(pte_t e) noexcept nogil:
    """A PGD or PUD entry with RW clear links a COW-shared (or not yet reused) table."""
    return e != 0 and not pmd_leaf(e) and not pte_write(e)


cdef inline int _slot(int level) noexcept nogil:
    """Where walk_entry_path finds the entry linking a table of this level."""
    return 0 if level == LEVEL_PUD else 1


cdef inline void _link(physmem_t* pm, pte_t* entryp, pte_t e, int level) noexcept nogil:
    """Store the entry linking a table of this level (set_pgd / set_pud)."""
    if level == LEVEL_PUD:
        set_pgd(pm, entryp, e)
    else:
        set_pud(pm, entryp, e)


cdef inline void _count(physmem_t* pm, int level, int pmd_event) noexcept nogil:
    """One vmstat event of a level: the PUD event sits 3 slots after its PMD twin."""
    pm.ev[pmd_event + (3 if level == LEVEL_PUD else 0)] += 1


cdef bint pgtable_path_cow(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil:
    """Is a table on addr's path shared above the PMD level (a read-only PGD or PUD entry)?"""
    cdef pte_t* path[3]
    cdef int n = walk_entry_path(pm, mm, addr, path)
    return (n >= 1 and upper_cow(path[0][0])) or (n >= 2 and upper_cow(path[1][0]))


cdef void wrprotect_ptes(physmem_t* pm, pfn_t table) noexcept nogil:
    """Eager accounting shares a PTE table with its entries read-only (copy_cow_pte_range's
    write-protect while the table is still private)."""
    cdef pte_t* t = table_ptr(pm, table)
    cdef int i
    cdef int64_t wp = 0
    for i in range(512):
        if pte_write(t[i]):
            ptep_set_wrprotect(pm, &t[i])
            wp += 1
    pm.ev[EV_FORK_PTES_WRPROTECTED] += wp


cdef void account_subtree(physmem_t* pm, mm_t* mm, pfn_t t, int level, int sign,
                          bint wrprotect) noexcept nogil:
    """Eager accounting: add (+1) or drop (-1) mm's use of an upper table and of everything
    under it (each table in pgtables_bytes, each PTE table's pages as account_table_pages).
    wrprotect: also write-protect the PTEs of tables only this subtree links (fork)."""
    cdef pte_t* tab = table_ptr(pm, t)
    cdef int i
    cdef pfn_t c
    cdef int64_t n
    mm.pgtables_bytes += sign * 4096
    for i in range(512):
        if tab[i] == 0 or pmd_leaf(tab[i]):
            continue
        c = pte_pfn(tab[i])
        if level == LEVEL_PUD:
            account_subtree(pm, mm, c, LEVEL_PMD, sign, wrprotect and table_share(pm, c) == 1)
        else:
            mm.pgtables_bytes += sign * 4096
            n = account_table_pages(pm, mm, c, sign)
            if sign > 0:                # fork: copy_present_pte's accounting per entry
                pm.ev[EV_FORK_PTES_ACCOUNTED] += n
            if wrprotect and pm.pt_share[c] <= 1:
                wrprotect_ptes(pm, c)


cdef mm_t* find_table_holder(physmem_t* pm, mm_t* mm, pfn_t t, uint64_t addr, int level) noexcept nogil:
    """The live mm of the lowest id, other than mm, whose path for addr links table t (of
    this level); abort if none (a shared table always has another holder)."""
    cdef int64_t i
    cdef mm_t* o
    cdef mm_t* best = NULL
    cdef pte_t* path[3]
    cdef int s = _slot(level)
    for i in range(pm.mms_len):
        o = <mm_t*>pm.mms[i]
        if o == mm or o.pgd < 0 or (best != NULL and o.id > best.id):
            continue
        if (walk_entry_path(pm, o, addr, path) > s and path[s][0] != 0
                and pte_pfn(path[s][0]) == t):
            best = o
    if best == NULL:
        fprintf(stderr, b"mmemu: shared table %lld (level %d) has no other holder\n",
                <long long>t, level)
        abort()
    return best


cdef void hand_over_tables(physmem_t* pm, mm_t* mm, mm_t* o, pfn_t t, int level,
                           bint deep) noexcept nogil:
    """Deferred accounting: the counts mm holds as owner of table t (deep: and of the
    tables under it) pass to o, which reaches them all."""
    cdef pte_t* tab
    cdef int64_t rss[4]
    cdef int i, k
    cdef pfn_t c
    if pm.pt_owner[t] == mm.id:
        mm.pgtables_bytes -= 4096
        o.pgtables_bytes += 4096
        pm.pt_owner[t] = o.id
    if not deep:
        return
    tab = table_ptr(pm, t)
    for i in range(512):
        if tab[i] == 0 or pmd_leaf(tab[i]):
            continue
        c = pte_pfn(tab[i])
        if level == LEVEL_PUD:
            hand_over_tables(pm, mm, o, c, LEVEL_PMD, True)
        elif pm.pt_owner[c] == mm.id:
            table_rss(pm, c, rss)
            for k in range(4):
                mm.rss[k] -= rss[k]
                o.rss[k] += rss[k]
            hand_over_tables(pm, mm, o, c, LEVEL_PMD - 1, False)


cdef inline void flush_table_span(physmem_t* pm, mm_t* mm, uint64_t addr, int level) noexcept nogil:
    """The flush after a shared upper table is broken or dropped: flush_tlb_mm_range over
    the span the table maps (1 GiB under a PMD table, 512 GiB under a PUD table), as v3-v5
    flush a PTE table's 2 MiB (one full flush: the span is above the ceiling)."""
    cdef uint64_t size = PGDIR_SIZE if level == LEVEL_PUD else PUD_SIZE
    cdef uint64_t start = addr & ~(size - 1)
    flush_tlb_mm_range(pm, mm, start, start + size)


cdef int break_cow_table(physmem_t* pm, mm_t* mm, pte_t* entryp, uint64_t addr,
                         int level) noexcept nogil:
    """break_cow_pte one or two levels up: make the table (of level LEVEL_PUD or LEVEL_PMD)
    under the read-only entry *entryp private to mm. 0, or -1 with nothing changed if no
    frame is free for the copy."""
    cdef pfn_t old = pte_pfn(entryp[0]), new, c
    cdef pte_t* src = table_ptr(pm, old)
    cdef pte_t* dst
    cdef pte_t e
    cdef int i
    if level == _skip_break_level:
        return 0
    if table_share(pm, old) <= 1:
        for i in range(512):
            if src[i] != 0 and not pmd_leaf(src[i]) and pte_write(src[i]):
                if level == LEVEL_PUD:
                    pudp_set_wrprotect(pm, &src[i])
                else:
                    pmdp_set_wrprotect(pm, &src[i])
        _link(pm, entryp, pte_mkwrite(entryp[0]), level)
        if pm.cow_eager:
            pm.pt_owner[old] = mm.id    # an owner that left kept its id on the table
        flush_table_span(pm, mm, addr, level)
        _count(pm, level, EV_PMD_TABLES_REUSED)
        return 0
    new = pgtable_alloc(pm, mm, level)
    if new < 0:
        return -1
    dst = table_ptr(pm, new)
    for i in range(512):
        e = src[i]
        if e == 0:
            continue
        if not pmd_leaf(e):
            c = pte_pfn(e)
            pm.pt_share[c] = table_share(pm, c) + 1
            e = pte_wrprotect(e)
        if level == LEVEL_PUD:
            set_pud(pm, &dst[i], e)
        else:
            set_pmd_at(pm, &dst[i], e)
    if pm.cow_eager:
        mm.pgtables_bytes -= 4096           # it stops using `old`; `new` is counted
    elif pm.pt_owner[old] == mm.id:
        hand_over_tables(pm, mm, find_table_holder(pm, mm, old, addr, level), old, level, False)
    pm.pt_share[old] -= 1
    if level == LEVEL_PUD:
        pgd_populate(pm, entryp, new)
    else:
        pud_populate(pm, entryp, new)
    flush_table_span(pm, mm, addr, level)
    _count(pm, level, EV_PMD_TABLES_DUPLICATED)
    return 0


cdef void cow_table_drop(physmem_t* pm, mm_t* mm, pte_t* entryp, uint64_t addr,
                         int level) noexcept nogil:
    """mm stops using an upper table shared with others (exit or munmap of its whole
    range): mm's accounting of the subtree goes, the entries stay for the other holders."""
    cdef pfn_t t = pte_pfn(entryp[0])
    if pm.cow_eager:
        account_subtree(pm, mm, t, level, -1, False)
    else:
        hand_over_tables(pm, mm, find_table_holder(pm, mm, t, addr, level), t, level, True)
    pm.pt_share[t] -= 1
    if level == LEVEL_PUD:
        pgd_clear(pm, entryp)
    else:
        pud_clear(pm, entryp)


cdef int break_cow_pgtable(physmem_t* pm, mm_t* mm, uint64_t addr, int64_t extra) noexcept nogil:
    """Before a fault changes anything for addr: break the shared PUD and PMD tables on its
    path, top down, so that only break_cow_pte is left to do. extra: the frames the fault
    may allocate afterwards. 0 if nothing above the PMD level was shared, 1 after breaking,
    -1 with nothing changed if the copies (this level's, and the PTE table's that follows)
    and extra do not all fit in free memory, or -1 after a copy failed to allocate."""
    cdef pte_t* path[3]
    cdef int n = walk_entry_path(pm, mm, addr, path)
    cdef bint pgd_cow = n >= 1 and upper_cow(path[0][0])
    cdef bint pud_cow = n >= 2 and path[1][0] != 0 and not pmd_leaf(path[1][0]) and (
        pgd_cow or not pte_write(path[1][0]))
    cdef bint copy = False
    cdef int64_t need = extra
    if not (pgd_cow or pud_cow):
        return 0
    if pgd_cow and table_share(pm, pte_pfn(path[0][0])) > 1:
        copy = True
        need += 1
    if pud_cow and (copy or table_share(pm, pte_pfn(path[1][0])) > 1):
        copy = True
        need += 1
    if n == 3 and path[2][0] != 0 and not pmd_leaf(path[2][0]) and (
            copy or pm.pt_share[pte_pfn(path[2][0])] > 1):
        need += 1       # break_cow_pte's copy
    if pm.nr_free < need:
        return -1
    if pgd_cow:
        if break_cow_table(pm, mm, path[0], addr, LEVEL_PUD) < 0:
            return -1
        walk_entry_path(pm, mm, addr, path)
    if pud_cow and break_cow_table(pm, mm, path[1], addr, LEVEL_PMD) < 0:
        return -1       # (an injected failure) the PUD table's copy stays, as a fault's tables do
    return 1


cdef void share_cow_table(physmem_t* pm, mm_t* dst_mm, pte_t* sentry, pte_t* dentry, int level,
                          bint src_private) noexcept nogil:
    """copy_cow_pte_range one or two levels up, for one PGD entry (level LEVEL_PUD) or PUD
    entry (LEVEL_PMD): the child's entry links the parent's table read-only, the parent's
    loses RW (src_private: the parent's entry lies in a table of its own) and the share
    count rises once. Eager accounting counts the whole subtree for the child now."""
    cdef pfn_t t = pte_pfn(sentry[0])
    if pm.cow_eager:
        account_subtree(pm, dst_mm, t, level, 1, src_private and table_share(pm, t) == 1)
    pm.pt_share[t] = table_share(pm, t) + 1
    if src_private:
        if level == LEVEL_PUD:
            pgdp_set_wrprotect(pm, sentry)
        else:
            pudp_set_wrprotect(pm, sentry)
    _link(pm, dentry, pte_wrprotect(mk_table_entry(t)), level)
    _count(pm, level, EV_PMD_TABLES_SHARED)


cdef int cow_upper_entry(pte_t* entry, uint64_t addr, mm_walk* walk, int level,
                         int below, int* out) noexcept nogil:
    """cow_range one or two levels up (its modes, see cow_pte.cow_range) for one PGD or PUD
    entry; *out: what this does to the entries below (BELOW_*), for the counting modes."""
    cdef cow_walk* c = <cow_walk*>walk.private
    cdef physmem_t* pm = walk.pm
    cdef uint64_t size = PGDIR_SIZE if level == LEVEL_PUD else PUD_SIZE
    cdef uint64_t span = addr & ~(size - 1)
    cdef bint whole, shared
    out[0] = BELOW_PRIVATE
    if pmd_leaf(entry[0]) or not (upper_cow(entry[0]) or below != BELOW_PRIVATE):
        return 0
    whole = span >= c.start and span + size <= c.end
    shared = table_share(pm, pte_pfn(entry[0])) > 1 or below == BELOW_COPY
    out[0] = BELOW_COPY if shared else BELOW_COW
    if c.mode == 0:
        if shared:
            c.n += 1
    elif c.mode == 3:
        if shared and whole:
            walk.action = ACTION_CONTINUE
        elif shared:
            c.n += 1
    elif (c.mode == 2 or c.mode == 4) and whole and shared:
        cow_table_drop(pm, walk.mm, entry, addr, level)
        if c.mode == 2:     # munmap; at exit (mode 4) exit_mmap's fullmm flush covers it
            flush_table_span(pm, walk.mm, addr, level)
        walk.action = ACTION_CONTINUE
        c.n += 1
    else:
        if break_cow_table(pm, walk.mm, entry, addr, level) < 0:
            return -1
        c.n += 1
    return 0


cdef int cow_pgd_entry(pte_t* pgd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """cow_range's pgd_entry: count, break or drop a shared PUD table."""
    cdef cow_walk* c = <cow_walk*>walk.private
    return cow_upper_entry(pgd, addr, walk, LEVEL_PUD, BELOW_PRIVATE, &c.below_pgd)


cdef int cow_pud_entry(pte_t* pud, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """cow_range's pud_entry: count, break or drop a shared PMD table."""
    cdef cow_walk* c = <cow_walk*>walk.private
    return cow_upper_entry(pud, addr, walk, LEVEL_PMD, c.below_pgd, &c.below_pud)
