# cython: language_level=3
"""Copy-on-write page tables (the "Introduce Copy-On-Write to Page Table" series).

break_cow_pte models handle_cow_pte_fault/break_cow_pte (patch 03): share count 1 reuses
the table (PMD writable again), otherwise the caller gets a private copy and drops one
share. cow_pte_drop models zap_pte_range/free_pmd_range on a COW-ed PMD covering a whole
span (patch 04): this mm stops using the table without touching its entries.

Accounting, per machine (physmem_t.cow_eager):
  eager (v3 on): every mm using a table counts its pages (rss, mapcount, refcount) and the
    table (pgtables_bytes); a break copies entries verbatim.
  deferred (RFC v1/v2): the table's owner (pt_owner) alone counts its pages and the table;
    a break by another mm takes per-page references for the copy, as a classic fork would.
    When the owner leaves a table others still use, its accounting passes to one of them.
"""
from libc.stdint cimport uint32_t, int64_t, uint64_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort

from mmemu._core.types cimport *
from mmemu._core.physmem cimport (
    physmem_t, table_ptr, put_page, reserve_frames, release_reserve, swap_dup, swap_free,
)
from mmemu._core.pagetable cimport mm_t, MMCore, pgtable_alloc, pgtable_free, pmd_offset, LEVEL_PTE
from mmemu._core.pgtable cimport (
    set_pte_at_break_copy, ptep_set_wrprotect, set_pmd_at, pmd_populate, pmd_clear,
)
from mmemu._core.rmap cimport mm_counter, folio_dup_rmap_pte, folio_remove_rmap_pte
from mmemu._core.pagewalk cimport mm_walk, mm_walk_ops, walk_page_range
from mmemu._core.cow_pgtable cimport cow_pgd_entry, cow_pud_entry
from mmemu._core.tlb cimport flush_tlb_mm_range
from mmemu._core.cow_pte_profile cimport (
    cow_owner_null, cow_pte_flush, cow_mkold_at_fork, cow_pte_mkold_range, cow_v1_exit_fallback,
)


cdef void table_rss(physmem_t* pm, pfn_t table, int64_t* out) noexcept nogil:
    """rss counts (by MM_* class) of the normal pages a PTE table maps."""
    cdef pte_t* t = table_ptr(pm, table)
    cdef int i
    cdef pte_t e
    cdef pfn_t p
    out[0] = out[1] = out[2] = out[3] = 0
    for i in range(512):
        e = t[i]
        if e == 0 or not pte_present(e) or pte_special(e):
            continue
        p = pte_pfn(e)
        if pm.flags[p] & PG_ZERO:
            continue
        out[mm_counter(pm.flags[p])] += 1


cdef int64_t account_table_pages(physmem_t* pm, mm_t* mm, pfn_t table, int sign) noexcept nogil:
    """Add (+1) or drop (-1) one mm's use of every normal page and swap entry in a table:
    as a fork's copy of each entry would (folio_dup_rmap_pte; copy_nonpresent_pte's
    swap_duplicate and MM_SWAPENTS, v3-v5 sharing a table that holds swap entries), or as
    a zap of it (folio_remove_rmap_pte + put_page; free_swap_and_cache). Returns the
    number of entries."""
    cdef pte_t* t = table_ptr(pm, table)
    cdef int i
    cdef int64_t n = 0
    cdef pte_t e
    cdef pfn_t p
    cdef uint32_t fl
    for i in range(512):
        e = t[i]
        if e == 0:
            continue
        if not pte_present(e):
            if is_swap_pte(e):
                n += 1
                if sign > 0:
                    swap_dup(pm, swap_pte_slot(e))
                else:
                    swap_free(pm, swap_pte_slot(e))
                mm.rss[MM_SWAPENTS] += sign
            continue
        if pte_special(e):
            continue
        p = pte_pfn(e)
        fl = pm.flags[p]
        if fl & PG_ZERO:
            continue
        n += 1
        if sign > 0:
            folio_dup_rmap_pte(pm, p, fl, mm.rss)
        else:
            folio_remove_rmap_pte(pm, p, fl, mm.rss)
            put_page(pm, p)
    return n


cdef mm_t* find_other_holder(physmem_t* pm, mm_t* mm, pfn_t table, uint64_t addr) noexcept nogil:
    """The live mm of the lowest id, other than mm, whose PMD for addr points at this table
    (sharers map it at the same address: fork keeps addresses, and mremap breaks before it
    moves)."""
    cdef int64_t i
    cdef mm_t* o
    cdef mm_t* best = NULL
    cdef pte_t* pmd
    for i in range(pm.mms_len):
        o = <mm_t*>pm.mms[i]
        if o == mm or o.pgd < 0 or (best != NULL and o.id > best.id):
            continue
        pmd = pmd_offset(pm, o, addr)
        if pmd != NULL and pmd[0] != 0 and pte_pfn(pmd[0]) == table:
            best = o
    return best


cdef void hand_over(physmem_t* pm, mm_t* mm, pfn_t table, uint64_t addr) noexcept nogil:
    """Deferred mode: the owner stops using a shared table; another holder takes over its
    rss and pgtables_bytes."""
    cdef int64_t rss[4]
    cdef int k
    cdef mm_t* o = find_other_holder(pm, mm, table, addr)
    if o == NULL:
        fprintf(stderr, b"mmemu: shared PTE table %lld has no other holder\n", <long long>table)
        abort()
    table_rss(pm, table, rss)
    for k in range(4):
        mm.rss[k] -= rss[k]
        o.rss[k] += rss[k]
    mm.pgtables_bytes -= 4096
    o.pgtables_bytes += 4096
    pm.pt_owner[table] = o.id


cdef void owner_counts(physmem_t* pm, mm_t* mm, pfn_t table, int sign) noexcept nogil:
    """Add (+1) or drop (-1) the counts an owner holds for a table: its rss and the table's
    pgtables_bytes."""
    cdef int64_t rss[4]
    cdef int k
    table_rss(pm, table, rss)
    for k in range(4):
        mm.rss[k] += sign * rss[k]
    mm.pgtables_bytes += sign * 4096


cdef void owner_leaves(physmem_t* pm, mm_t* mm, pfn_t table, uint64_t addr) noexcept nogil:
    """Deferred accounting: the owner stops using a table others still use. v1/v2
    (COW_RULE_OWNER_NULL; v1 20220519183127.3909598, break_cow_pte/cow_pte_fallback):
    it drops its counts and the owner becomes NULL, so nobody counts the table; mmemu's
    deferred mode hands the counts over to a remaining holder at once."""
    if cow_owner_null(pm):
        owner_counts(pm, mm, table, -1)
        pm.pt_owner[table] = 0
    else:
        hand_over(pm, mm, table, addr)


cdef void cow_pte_adopt(physmem_t* pm, mm_t* mm, pfn_t table) noexcept nogil:
    """v1/v2: a holder that reuses (refcount 1) or forks a table nobody owns becomes its
    owner and counts it again."""
    if cow_owner_null(pm) and not pm.cow_eager and pm.pt_owner[table] == 0:
        owner_counts(pm, mm, table, 1)
        pm.pt_owner[table] = mm.id


cdef void cow_pte_fixup(physmem_t* pm, pfn_t table) noexcept nogil:
    """Before a table is writable through its PMD again: an entry may stay writable only if
    it maps an exclusive anon page (classic fork's write-protect, applied late)."""
    cdef pte_t* t = table_ptr(pm, table)
    cdef int i
    cdef pte_t e
    cdef uint32_t fl
    for i in range(512):
        e = t[i]
        if e == 0 or not pte_write(e):
            continue
        fl = pm.flags[pte_pfn(e)]
        if pte_special(e) or not ((fl & PG_ANON) and (fl & PG_ANON_EXCLUSIVE)):
            ptep_set_wrprotect(pm, &t[i])


cdef int break_cow_pte(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil:
    """break_cow_pte: make the PTE table under *pmdp private to mm. 0, or -1 with nothing
    changed if no frame is free for the copy."""
    cdef pfn_t old = pte_pfn(pmdp[0])
    cdef pfn_t new
    cdef pte_t* src
    cdef pte_t* dst
    cdef pte_t e
    cdef int i
    cdef int64_t n = 0
    if pm.pt_share[old] <= 1:
        cow_pte_adopt(pm, mm, old)
        cow_pte_fixup(pm, old)
        set_pmd_at(pm, pmdp, pte_mkwrite(pmdp[0]))
        pm.ev[EV_PTE_TABLES_REUSED] += 1
        cow_pte_flush(pm, mm, addr, False)
        return 0
    new = pgtable_alloc(pm, mm, LEVEL_PTE)
    if new < 0:
        return -1
    src = table_ptr(pm, old)
    dst = table_ptr(pm, new)
    if pm.cow_eager:
        for i in range(512):
            e = src[i]
            if e != 0:
                set_pte_at_break_copy(pm, &dst[i], e)
                n += 1
        mm.pgtables_bytes -= 4096          # mm_dec_nr_ptes for the table it leaves
    else:
        # the copy is a classic fork of this table: per-page references and rss now
        account_table_pages(pm, mm, old, 1)
        for i in range(512):
            e = src[i]
            if e != 0:
                set_pte_at_break_copy(pm, &dst[i], pte_wrprotect(e))
                n += 1
        if pm.pt_owner[old] == mm.id:
            # the owner leaves: its counts for `old` go to a remaining holder (or nobody,
            # v1/v2), and it keeps exactly the counts the copy just added
            owner_leaves(pm, mm, old, addr)
    pm.pt_share[old] -= 1
    pmd_populate(pm, pmdp, new)
    cow_pte_flush(pm, mm, addr, True)
    pm.ev[EV_PTE_TABLES_DUPLICATED] += 1
    pm.ev[EV_PTE_TABLE_ENTRIES_COPIED] += n
    return 0


cdef void cow_pte_drop(physmem_t* pm, mm_t* mm, pte_t* pmdp, uint64_t addr) noexcept nogil:
    """mm stops using a table shared with others (exit or unmap of the whole span): this
    mm's accounting goes, the entries stay for the other holders."""
    cdef pfn_t t = pte_pfn(pmdp[0])
    if pm.cow_eager:
        account_table_pages(pm, mm, t, -1)
        mm.pgtables_bytes -= 4096
    elif pm.pt_owner[t] == mm.id:
        owner_leaves(pm, mm, t, addr)
    pm.pt_share[t] -= 1
    pmd_clear(pm, pmdp)


cdef void v1_zap_cow_pte_fallback(physmem_t* pm, mm_t* mm, pte_t* pmdp) noexcept nogil:
    """v1 (20220519183127.3909598-7 zap_pmd_range, zap_cow_pte, pmd_put_pte; -5
    cow_pte_fallback) at exit on a COW-ed PMD whose table only this mm holds:
    zap_pte_range(details->cow_pte) skips every entry, cow_pte_fallback re-adds the rss and
    the table's bytes unless this mm owns it, and free_pte_range frees the table with its
    entries: their pages stay mapped by nobody, the rss stays counted (check_mm prints it)."""
    cdef pfn_t t = pte_pfn(pmdp[0])
    cow_pte_adopt(pm, mm, t)
    pm.pt_owner[t] = 0
    pm.pt_share[t] -= 1
    pmd_clear(pm, pmdp)
    pgtable_free(pm, mm, t, LEVEL_PTE)


cdef int cow_pmd_entry(pte_t* pmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """cow_range's pmd_entry: count, break or drop one COW-ed PMD."""
    cdef cow_walk* c = <cow_walk*>walk.private
    cdef physmem_t* pm = walk.pm
    cdef uint64_t span
    cdef bint whole, shared
    if not (pmd_cow(pmd[0]) or c.below_pud != BELOW_PRIVATE):
        return 0
    span = addr & ~(PMD_SIZE - 1)
    whole = span >= c.start and span + PMD_SIZE <= c.end
    shared = pm.pt_share[pte_pfn(pmd[0])] > 1 or c.below_pud == BELOW_COPY
    if c.mode == 0:
        if shared:
            c.n += 1
    elif c.mode == 3:
        if shared and not whole:
            c.n += 1
    elif c.mode >= 2 and whole and shared:
        cow_pte_drop(pm, walk.mm, pmd, addr)
        if c.mode == 2:
            # munmap: zap_pte_range still gathers the shared entries (tlb_remove_tlb_entry,
            # v1 -7 and v4 -4 alike); exit's fullmm flush covers them (mode 4)
            flush_tlb_mm_range(pm, walk.mm, span, span + PMD_SIZE)
        c.n += 1
    elif c.mode == 4 and whole and cow_v1_exit_fallback(pm):
        v1_zap_cow_pte_fallback(pm, walk.mm, pmd)
    else:
        if break_cow_pte(pm, walk.mm, pmd, addr) < 0:
            return -1
        c.n += 1
    return 0


cdef mm_walk_ops cow_walk_ops
cow_walk_ops.pgd_entry = cow_pgd_entry      # whole-table COW: shared PUD tables
cow_walk_ops.pud_entry = cow_pud_entry      # whole-table COW: shared PMD tables
cow_walk_ops.pmd_entry = cow_pmd_entry


cdef int64_t cow_range(physmem_t* pm, mm_t* mm, uint64_t start, uint64_t end, int mode) noexcept nogil:
    """Walk the COW-ed PMDs of [start, end), after the COW-ed PGD and PUD entries
    (cow_pgtable.pyx: the same modes one and two levels up).

    mode 0: count the tables a break would copy (share > 1) in spans partly in the range,
            and in whole spans too unless mode 2 would drop them (see below);
    mode 1: break every COW-ed table overlapping the range;
    mode 2: drop the share of tables whose whole span lies in the range (share > 1) and
            break the others (munmap / exit);
    mode 3: count for mode 2 (tables it would copy);
    mode 4: mode 2 at exit (the v1 profile detaches unshared COW-ed tables unzapped).
    Returns the count, or -1 if a break ran out of memory.
    """
    cdef cow_walk c
    c.start = start
    c.end = end
    c.mode = mode
    c.n = 0
    c.below_pgd = c.below_pud = BELOW_PRIVATE
    if walk_page_range(pm, mm, start, end, &cow_walk_ops, &c) < 0:
        return -1
    return c.n


cdef bint _prepare(MMCore mmc, uint64_t start, uint64_t end, int count_mode, int mode) except -1:
    """Count the frames a cow_range pass needs and reserve them, then run it: the pass
    cannot fail half way. False, with nothing changed, if they cannot be had."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef int64_t need, rc
    if mmc.mm.pgd < 0:
        return True
    with nogil:
        need = cow_range(pm, &mmc.mm, start, end, count_mode)
        if need > 0 and reserve_frames(pm, need) < 0:
            need = -1
        else:
            rc = cow_range(pm, &mmc.mm, start, end, mode)
            if need > 0:
                release_reserve(pm)
    if need < 0:
        return False
    if rc < 0:
        raise RuntimeError("break_cow_pte ran out of reserved frames (count and break disagree)")
    return True


def unshare_range(MMCore mmc, uint64_t start, uint64_t end):
    """break_cow_pte for every COW-ed table overlapping [start, end). Checks first that
    frames for every copy are free: returns False (ENOMEM, nothing changed) if not."""
    return _prepare(mmc, start, end, 0, 1)


def unmap_range(MMCore mmc, uint64_t start, uint64_t end, bint exiting=False):
    """Before zapping [start, end) for munmap/exit: whole shared spans are dropped without
    touching their entries, partly covered ones are broken. False (ENOMEM) if the breaks
    would need more frames than are free; nothing is changed then. exiting: exit_mmap
    (the v1 profile's exit path differs: v1_zap_cow_pte_fallback)."""
    return _prepare(mmc, start, end, 3, 4 if exiting else 2)


def break_count(MMCore mmc, uint64_t start, uint64_t end, bint unmap=False):
    """Frames unshare_range (or unmap_range) of [start, end) would allocate."""
    cdef int64_t n
    with nogil:
        n = cow_range(&mmc.phys.pm, &mmc.mm, start, end, 3 if unmap else 0)
    return n


cdef int mkold_pmd_entry(pte_t* pmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """cow_pte_mkold's pmd_entry: the entries of one VMA in a COW-ed table."""
    if pmd_cow(pmd[0]):
        cow_pte_mkold_range(walk.pm, table_ptr(walk.pm, pte_pfn(pmd[0])), pte_index(addr),
                            pte_index(next - 1) + 1, (<uint64_t*>walk.private)[0])
    return 0


cdef mm_walk_ops mkold_walk_ops
mkold_walk_ops.pmd_entry = mkold_pmd_entry


def cow_pte_mkold(MMCore mmc, list spans):
    """v5 copy_cow_pte_range's per-VMA copy_present_pte with dst == src, for every VMA
    (start, end, vm_flags) of the forked mm: pte_mkold, and pte_mkclean in a VM_SHARED VMA,
    on the entries of its COW-ed tables. Nothing unless the profile has the rule."""
    cdef uint64_t s, e, f
    if not cow_mkold_at_fork(&mmc.phys.pm):
        return
    for s, e, f in spans:
        with nogil:
            walk_page_range(&mmc.phys.pm, &mmc.mm, s, e, &mkold_walk_ops, &f)
