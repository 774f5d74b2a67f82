# cython: language_level=3
"""fork's page-table work: copy_page_range (classic) and copy_cow_pte_range (COW page table).

Models copy_page_range / copy_p4d_range / copy_pud_range / copy_pmd_range / copy_pte_range /
copy_present_ptes (mm/memory.c) for small folios, and the COW page table series'
copy_cow_pte_range (patch 02), which shares a PTE table instead of copying it. Leaves out:
pinned pages (copy_present_page), uffd-wp, device-private and migration entries.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr, swap_dup
from mmemu._core.pagetable cimport (
    mm_t, MMCore, pmd_offset_alloc, pmd_walk_next, pgtable_alloc, LEVEL_PTE,
)
from mmemu._core.cow_pte cimport account_table_pages, assert_table_private

cimport numpy as cnp
import numpy as np


cdef void copy_pte_range(physmem_t* pm, mm_t* dst_mm, pte_t* dst, pte_t* src,
                         int i0, int i1, uint64_t vm_flags, bint src_private) noexcept nogil:
    """copy_pte_range/copy_present_ptes over entries [i0, i1) of one PTE table.

    A COW-shared source table (src_private false) is read-only through its PMD already and
    must not be written: its entries are write-protected when it is next reused."""
    cdef int i
    cdef pte_t e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef bint cow = is_cow_mapping(vm_flags)
    cdef bint shared = (vm_flags & VM_SHARED) != 0
    cdef int64_t copied = 0, wrprotected = 0
    cdef int64_t anon = 0, file = 0, shmem = 0
    cdef int32_t* refcount = pm.refcount
    cdef int32_t* mapcount = pm.mapcount
    cdef uint32_t* flags = pm.flags
    cdef pte_t RW = _bit(BIT_RW)
    cdef pte_t A = _bit(BIT_ACCESSED)
    cdef pte_t D = _bit(BIT_DIRTY)
    for i in range(i0, i1):
        e = src[i]
        if e == 0:
            continue
        copied += 1
        if not pte_present(e):
            if is_swap_pte(e):  # copy_nonpresent_pte: swap_duplicate + MM_SWAPENTS
                swap_dup(pm, swap_pte_slot(e))
                dst_mm.rss[MM_SWAPENTS] += 1
            dst[i] = e
            continue
        if not (e & _bit(BIT_SPECIAL)):
            pfn = pte_pfn(e)
            fl = flags[pfn]
            refcount[pfn] += 1          # folio_get
            mapcount[pfn] += 1          # folio_try_dup_anon_rmap_pte / folio_dup_file_rmap_pte
            if fl & PG_ANON:
                flags[pfn] = fl & ~PG_ANON_EXCLUSIVE
                anon += 1
            elif fl & PG_SWAPBACKED:
                shmem += 1
            else:
                file += 1
        if cow and (e & RW):
            e = e & ~RW
            if src_private:
                assert_table_private(pm, &src[i])
                src[i] = e
                wrprotected += 1
        if shared:
            e = e & ~D
        dst[i] = e & ~A
    dst_mm.rss[MM_ANONPAGES] += anon
    dst_mm.rss[MM_FILEPAGES] += file
    dst_mm.rss[MM_SHMEMPAGES] += shmem
    pm.ev[EV_FORK_PTES_COPIED] += copied
    pm.ev[EV_FORK_PTES_WRPROTECTED] += wrprotected


cdef inline bint _blocked(int64_t span, const int64_t* blocked, int64_t nblocked, int64_t* pos) noexcept nogil:
    """Is this PMD span in the sorted list of spans that may not be shared? (a moving cursor:
    spans are visited in increasing order within one call)"""
    while pos[0] < nblocked and blocked[pos[0]] < span:
        pos[0] += 1
    return pos[0] < nblocked and blocked[pos[0]] == span


cdef void share_pte_table(physmem_t* pm, mm_t* dst_mm, pte_t* spmd, pte_t* dpmd) noexcept nogil:
    """copy_cow_pte_range for one PMD slot: the child's PMD points at the parent's table,
    both PMDs lose RW. Eager accounting takes the child's per-page references and rss now
    (and write-protects the entries while the table is still private); deferred takes none."""
    cdef pfn_t t = pte_pfn(spmd[0])
    cdef pte_t* e
    cdef int i
    cdef int64_t wp = 0
    if pm.cow_eager:
        account_table_pages(pm, dst_mm, t, 1)
        dst_mm.pgtables_bytes += 4096       # pmd_install: mm_inc_nr_ptes(child)
        if pm.pt_share[t] == 1:
            e = table_ptr(pm, t)
            for i in range(512):
                if e[i] & _bit(BIT_RW):
                    e[i] = e[i] & ~_bit(BIT_RW)
                    wp += 1
            pm.ev[EV_FORK_PTES_WRPROTECTED] += wp
    pm.pt_share[t] += 1
    spmd[0] = spmd[0] & ~_bit(BIT_RW)
    dpmd[0] = mk_table_entry(t) & ~_bit(BIT_RW)
    pm.ev[EV_PTE_TABLES_SHARED] += 1


cdef int copy_page_range(physmem_t* pm, mm_t* dst_mm, mm_t* src_mm, uint64_t start, uint64_t end,
                         uint64_t vm_flags, bint cow, const int64_t* blocked, int64_t nblocked) noexcept nogil:
    """copy_page_range for one VMA span: a destination table wherever the source has one.

    With cow, PMD spans not listed in `blocked` share the source table instead."""
    cdef uint64_t addr = start, nxt
    cdef pte_t* spmd
    cdef pte_t* dpmd
    cdef pfn_t t
    cdef int64_t pos = 0
    while True:
        spmd = pmd_walk_next(pm, src_mm, &addr, end)
        if spmd == NULL:
            break
        nxt = pmd_addr_end(addr, end)
        # copy_pud_range / copy_pmd_range: pud_alloc and pmd_alloc for every source PUD
        # entry present, even where no PTE table hangs below (found by mmemu.oracle)
        dpmd = pmd_offset_alloc(pm, dst_mm, addr)
        if dpmd == NULL:
            return -1
        if spmd[0] != 0:
            if cow and not _blocked(<int64_t>(addr >> PMD_SHIFT), blocked, nblocked, &pos):
                if dpmd[0] == 0:        # shared once, however many VMAs cover the span
                    share_pte_table(pm, dst_mm, spmd, dpmd)
                addr = nxt
                continue
            # copy_pte_range allocates the destination table before looking at entries
            if dpmd[0] == 0:
                t = pgtable_alloc(pm, dst_mm, LEVEL_PTE)
                if t < 0:
                    return -1
                dpmd[0] = mk_table_entry(t)
                pm.ev[EV_FORK_PTE_TABLES_COPIED] += 1
            copy_pte_range(pm, dst_mm, table_ptr(pm, pte_pfn(dpmd[0])), table_ptr(pm, pte_pfn(spmd[0])),
                           pte_index(addr), pte_index(nxt - 1) + 1, vm_flags,
                           (spmd[0] & _bit(BIT_RW)) != 0)
        addr = nxt
    return 0


cdef int64_t count_range_tables(physmem_t* pm, mm_t* src_mm, uint64_t start, uint64_t end,
                                int64_t* last, bint cow, const int64_t* blocked,
                                int64_t nblocked) noexcept nogil:
    """Tables a copy of [start, end) allocates, skipping slots already counted (last[0..2]).
    With cow, only blocked spans need a PTE table of their own."""
    cdef uint64_t addr = start
    cdef pte_t* pgdt = table_ptr(pm, src_mm.pgd)
    cdef pte_t g, u, d
    cdef int64_t n = 0, key, pos = 0
    while addr < end:
        g = pgdt[pgd_index(addr)]
        if g == 0:
            addr = pgd_addr_end(addr, end)
            continue
        key = <int64_t>(addr >> PGDIR_SHIFT)
        if key != last[0]:
            last[0] = key
            n += 1
        u = table_ptr(pm, pte_pfn(g))[pud_index(addr)]
        if u == 0:
            addr = pud_addr_end(addr, end)
            continue
        key = <int64_t>(addr >> PUD_SHIFT)
        if key != last[1]:
            last[1] = key
            n += 1
        d = table_ptr(pm, pte_pfn(u))[pmd_index(addr)]
        if d != 0 and (not cow or _blocked(<int64_t>(addr >> PMD_SHIFT), blocked, nblocked, &pos)):
            key = <int64_t>(addr >> PMD_SHIFT)
            if key != last[2]:
                last[2] = key
                n += 1
        addr = pmd_addr_end(addr, end)
    return n


cdef const int64_t* _blocked_ptr(object blocked, int64_t* n) except? NULL:
    cdef const int64_t[::1] b
    n[0] = 0
    if blocked is None or len(blocked) == 0:
        return NULL
    b = blocked
    n[0] = b.shape[0]
    return &b[0]


def count_fork_tables(MMCore src, list ranges, bint cow=False, object blocked=None):
    """Page tables a fork allocates for the sorted (start, end) spans (PGD excluded).

    With cow, PTE tables are needed only in the PMD spans listed in `blocked` (a sorted
    int64 array of addr >> 21), which fall back to a classic copy."""
    cdef int64_t last[3]
    cdef int64_t n = 0, nb
    cdef uint64_t s, e
    cdef const int64_t* bp
    blocked = None if blocked is None else np.ascontiguousarray(blocked, dtype=np.int64)
    bp = _blocked_ptr(blocked, &nb)
    last[0] = last[1] = last[2] = -1
    for s, e in ranges:
        n += count_range_tables(&src.phys.pm, &src.mm, s, e, last, cow, bp, nb)
    return n


def fork_copy_ranges(MMCore dst, MMCore src, list spans, bint cow=False, object blocked=None):
    """copy_page_range for each (start, end, vm_flags) span; 0 or -1 (ENOMEM).

    With cow, PMD spans not in `blocked` share the parent's PTE table."""
    cdef uint64_t s, e, f
    cdef int rc = 0
    cdef int64_t nb
    cdef const int64_t* bp
    cdef physmem_t* pm = &src.phys.pm
    blocked = None if blocked is None else np.ascontiguousarray(blocked, dtype=np.int64)
    bp = _blocked_ptr(blocked, &nb)
    for s, e, f in spans:
        with nogil:
            rc = copy_page_range(pm, &dst.mm, &src.mm, s, e, f, cow, bp, nb)
        if rc:
            return rc
    return 0
