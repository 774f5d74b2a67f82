# cython: language_level=3
"""Classic fork: copy_page_range.

Models copy_page_range / copy_p4d_range / copy_pud_range / copy_pmd_range / copy_pte_range /
copy_present_ptes (mm/memory.c) for small folios. Leaves out: pinned pages
(copy_present_page), uffd-wp, device-private and migration entries.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport mm_t, MMCore, pmd_offset_alloc, pgtable_alloc, LEVEL_PTE


cdef void copy_pte_range(physmem_t* pm, mm_t* dst_mm, pte_t* dst, pte_t* src,
                         int i0, int i1, uint64_t vm_flags) noexcept nogil:
    """copy_pte_range/copy_present_ptes over entries [i0, i1) of one PTE table."""
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
            dst[i] = e          # swap entries: not modelled yet
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


cdef int copy_page_range(physmem_t* pm, mm_t* dst_mm, mm_t* src_mm, uint64_t start, uint64_t end,
                         uint64_t vm_flags) noexcept nogil:
    """copy_page_range for one VMA span: a destination table wherever the source has one."""
    cdef uint64_t addr = start, nxt
    cdef pte_t* pgdt = table_ptr(pm, src_mm.pgd)
    cdef pte_t g, u, d
    cdef pte_t* dpmd
    cdef pfn_t t
    while addr < end:
        g = pgdt[pgd_index(addr)]
        if g == 0:
            addr = pgd_addr_end(addr, end)
            continue
        u = table_ptr(pm, pte_pfn(g))[pud_index(addr)]
        if u == 0:
            addr = pud_addr_end(addr, end)
            continue
        d = table_ptr(pm, pte_pfn(u))[pmd_index(addr)]
        nxt = pmd_addr_end(addr, end)
        if d != 0:
            # copy_pte_range allocates the destination table before looking at entries
            dpmd = pmd_offset_alloc(pm, dst_mm, addr)
            if dpmd == NULL:
                return -1
            if dpmd[0] == 0:
                t = pgtable_alloc(pm, dst_mm, LEVEL_PTE)
                if t < 0:
                    return -1
                dpmd[0] = mk_table_entry(t)
                pm.ev[EV_FORK_PTE_TABLES_COPIED] += 1
            copy_pte_range(pm, dst_mm, table_ptr(pm, pte_pfn(dpmd[0])), table_ptr(pm, pte_pfn(d)),
                           pte_index(addr), pte_index(nxt - 1) + 1, vm_flags)
        addr = nxt
    return 0


cdef int64_t count_range_tables(physmem_t* pm, mm_t* src_mm, uint64_t start, uint64_t end,
                                int64_t* last) noexcept nogil:
    """Tables a copy of [start, end) allocates, skipping slots already counted (last[0..2])."""
    cdef uint64_t addr = start
    cdef pte_t* pgdt = table_ptr(pm, src_mm.pgd)
    cdef pte_t g, u, d
    cdef int64_t n = 0, key
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
        if d != 0:
            key = <int64_t>(addr >> PMD_SHIFT)
            if key != last[2]:
                last[2] = key
                n += 1
        addr = pmd_addr_end(addr, end)
    return n


def count_fork_tables(MMCore src, list ranges):
    """Page tables a classic fork allocates for the given sorted (start, end) spans (PGD excluded)."""
    cdef int64_t last[3]
    cdef int64_t n = 0
    cdef uint64_t s, e
    last[0] = last[1] = last[2] = -1
    for s, e in ranges:
        n += count_range_tables(&src.phys.pm, &src.mm, s, e, last)
    return n


def fork_copy_ranges(MMCore dst, MMCore src, list spans):
    """copy_page_range for each (start, end, vm_flags) span; 0 or -1 (ENOMEM)."""
    cdef uint64_t s, e, f
    cdef int rc = 0
    cdef physmem_t* pm = &src.phys.pm
    for s, e, f in spans:
        with nogil:
            rc = copy_page_range(pm, &dst.mm, &src.mm, s, e, f)
        if rc:
            return rc
    return 0
