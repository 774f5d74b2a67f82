# cython: language_level=3
"""Walks that read page tables for statistics and for the invariant checker.

Models pagemap_pte_range/pte_to_pagemap_entry and smaps_pte_entry/smaps_account
(fs/proc/task_mmu.c). The recount walks are the checker's own: they rebuild from the
tables what the counters should say.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, table_ptr
from mmemu._core.pagetable cimport mm_t, MMCore, pmd_walk_next

cnp.import_array()

cdef uint64_t PM_PFN_MASK = ((<uint64_t>1) << 55) - 1
cdef uint64_t PM_SOFT_DIRTY = (<uint64_t>1) << 55
cdef uint64_t PM_MMAP_EXCLUSIVE = (<uint64_t>1) << 56
cdef uint64_t PM_FILE = (<uint64_t>1) << 61
cdef uint64_t PM_SWAP = (<uint64_t>1) << 62
cdef uint64_t PM_PRESENT = (<uint64_t>1) << 63
cdef uint64_t PM_GUARD_REGION = (<uint64_t>1) << 58
# a guard marker reads as a swap entry of the marker type (31) with PTE_MARKER_GUARD (4) as
# its offset, swp_type | offset << 5 -- 0x440000000000009f, verified on Linux 6.18
cdef uint64_t PM_GUARD_ENTRY = PM_SWAP | PM_GUARD_REGION | 31 | (4 << 5)


cdef inline pte_t* _pte_table(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t* pmd_out) noexcept nogil:
    """The PTE table covering addr (NULL if none) and its PMD entry."""
    cdef pte_t e
    pmd_out[0] = 0
    if mm.pgd < 0:
        return NULL
    e = table_ptr(pm, mm.pgd)[pgd_index(addr)]
    if e == 0:
        return NULL
    e = table_ptr(pm, pte_pfn(e))[pud_index(addr)]
    if e == 0:
        return NULL
    e = table_ptr(pm, pte_pfn(e))[pmd_index(addr)]
    if e == 0:
        return NULL
    pmd_out[0] = e
    return table_ptr(pm, pte_pfn(e))


def pagemap(MMCore mmc, uint64_t start, int64_t npages):
    """/proc/PID/pagemap entries for npages pages from start (kernel bit layout)."""
    out = np.zeros(npages, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef physmem_t* pm = &mmc.phys.pm
    cdef int64_t i
    cdef uint64_t addr, span = 1
    cdef pte_t* t = NULL
    cdef pte_t pmd, e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef uint64_t v
    with nogil:
        for i in range(npages):
            addr = start + (<uint64_t>i << PAGE_SHIFT)
            if (addr & ~(PMD_SIZE - 1)) != span:
                span = addr & ~(PMD_SIZE - 1)
                t = _pte_table(pm, &mmc.mm, span, &pmd)
            if t == NULL:
                continue
            e = t[pte_index(addr)]
            if is_guard_pte(e):
                o[i] = PM_GUARD_ENTRY
                continue
            if is_swap_pte(e):
                # swap type 0 in bits 0-4, the offset from bit 5 (MAX_SWAPFILES_SHIFT)
                o[i] = PM_SWAP | ((<uint64_t>swap_pte_slot(e) << 5) & PM_PFN_MASK)
                continue
            if e == 0 or not pte_present(e):
                continue
            pfn = pte_pfn(e)
            v = PM_PRESENT | (<uint64_t>pfn & PM_PFN_MASK)
            fl = pm.flags[pfn]
            if not pte_special(e) and not (fl & PG_ZERO):
                if not (fl & PG_ANON):
                    v |= PM_FILE
                if pm.mapcount[pfn] == 1:
                    v |= PM_MMAP_EXCLUSIVE
            o[i] = v
    return out


def smaps_range(MMCore mmc, uint64_t start, uint64_t end):
    """smaps_pte_range + smaps_account over [start, end): a dict of byte counts.

    'pss' is in bytes << 12 (PSS_SHIFT), as the kernel accumulates it.
    """
    cdef physmem_t* pm = &mmc.phys.pm
    cdef uint64_t addr, span = 1
    cdef pte_t* t = NULL
    cdef pte_t pmd, e
    cdef pfn_t pfn
    cdef uint32_t fl
    cdef int32_t mc
    cdef bint dirty, private
    cdef uint64_t pss
    cdef int64_t resident = 0, anonymous = 0, referenced = 0
    cdef int64_t shared_clean = 0, shared_dirty = 0, private_clean = 0, private_dirty = 0
    cdef uint64_t pss_total = 0, pss_anon = 0, pss_file = 0, pss_shmem = 0, pss_dirty = 0
    addr = start
    with nogil:
        while addr < end:
            if (addr & ~(PMD_SIZE - 1)) != span:
                span = addr & ~(PMD_SIZE - 1)
                t = _pte_table(pm, &mmc.mm, span, &pmd)
            if t == NULL:
                addr = pmd_addr_end(addr, end)
                continue
            e = t[pte_index(addr)]
            addr += PAGE_SIZE
            if e == 0 or not pte_present(e) or pte_special(e):
                continue
            pfn = pte_pfn(e)
            fl = pm.flags[pfn]
            if fl & PG_ZERO:
                continue
            resident += 4096
            if fl & PG_ANON:
                anonymous += 4096
            if pte_young(e):
                referenced += 4096
            dirty = pte_dirty(e) or (fl & PG_DIRTY) != 0
            if pm.refcount[pfn] == 1:
                pss = (<uint64_t>4096) << 12
                private = True
            else:
                mc = pm.mapcount[pfn]
                pss = (<uint64_t>4096) << 12
                if mc >= 2:
                    pss = pss // <uint64_t>mc
                private = mc < 2
            pss_total += pss
            if fl & PG_ANON:
                pss_anon += pss
            elif fl & PG_SWAPBACKED:
                pss_shmem += pss
            else:
                pss_file += pss
            if dirty:
                pss_dirty += pss
                if private:
                    private_dirty += 4096
                else:
                    shared_dirty += 4096
            else:
                if private:
                    private_clean += 4096
                else:
                    shared_clean += 4096
    return {
        "Rss": resident, "Pss": pss_total, "Pss_Dirty": pss_dirty, "Pss_Anon": pss_anon,
        "Pss_File": pss_file, "Pss_Shmem": pss_shmem,
        "Shared_Clean": shared_clean, "Shared_Dirty": shared_dirty,
        "Private_Clean": private_clean, "Private_Dirty": private_dirty,
        "Referenced": referenced, "Anonymous": anonymous,
    }


def recount_mm(MMCore mmc, int32_t[::1] mapcount, int32_t[::1] pt_share, uint8_t[::1] level,
               int32_t[::1] owners):
    """Walk every table of one mm; add each accounted PTE's page to mapcount, each PMD
    entry's PTE table to pt_share, mark table frames with their level (4=PGD .. 1=PTE) in
    this mm's `level` array, and count in `owners` the PTE tables this mm owns.

    A PTE table reached through a read-only PMD is COW-shared: in eager accounting every
    holder accounts its entries; in deferred accounting only its owner (pt_owner) does.
    Returns (rss[4] recomputed, PUD+PMD+PTE tables this mm accounts, list of problems).
    """
    cdef physmem_t* pm = &mmc.phys.pm
    cdef mm_t* mm = &mmc.mm
    cdef pte_t* pgdt
    cdef pte_t* pudt
    cdef pte_t* pmdt
    cdef pte_t* ptet
    cdef pte_t e
    cdef int i, j, k, l
    cdef pfn_t p, tp
    cdef uint32_t fl
    cdef int64_t rss[4]
    cdef int64_t ntables = 0
    cdef bint accounted
    problems = []
    rss[0] = rss[1] = rss[2] = rss[3] = 0
    if mm.pgd < 0:
        return (0, 0, 0, 0), 0, problems
    level[mm.pgd] = 4
    pgdt = table_ptr(pm, mm.pgd)
    for i in range(512):
        if pgdt[i] == 0:
            continue
        tp = pte_pfn(pgdt[i])
        if level[tp] != 0:
            problems.append(f"PUD table {tp} linked twice")
        level[tp] = 3
        ntables += 1
        pudt = table_ptr(pm, tp)
        for j in range(512):
            if pudt[j] == 0:
                continue
            tp = pte_pfn(pudt[j])
            if level[tp] != 0:
                problems.append(f"PMD table {tp} linked twice")
            level[tp] = 2
            ntables += 1
            pmdt = table_ptr(pm, tp)
            for k in range(512):
                if pmdt[k] == 0:
                    continue
                tp = pte_pfn(pmdt[k])
                if level[tp] != 0:
                    problems.append(f"PTE table {tp} linked twice in one mm")
                level[tp] = 1
                pt_share[tp] += 1
                if pm.pt_share[tp] > 1 and pte_write(pmdt[k]):
                    problems.append(f"PTE table {tp} is shared {pm.pt_share[tp]} ways "
                                    f"but its PMD is writable")
                if pm.pt_owner[tp] == mm.id:
                    owners[tp] += 1
                accounted = pm.cow_eager or pm.pt_owner[tp] == mm.id
                if not accounted:
                    continue
                ntables += 1
                ptet = table_ptr(pm, tp)
                for l in range(512):
                    e = ptet[l]
                    if e == 0 or is_guard_pte(e):
                        continue
                    if is_swap_pte(e):
                        rss[MM_SWAPENTS] += 1
                        continue
                    if not pte_present(e):
                        problems.append(f"unexpected non-present PTE {e:#x}")
                        continue
                    p = pte_pfn(e)
                    if p < 0 or p >= pm.nframes:
                        problems.append(f"PTE {e:#x} points outside memory")
                        continue
                    fl = pm.flags[p]
                    if fl & PG_ZERO:
                        if not pte_special(e) or pte_write(e):
                            problems.append(f"zero-page PTE {e:#x} not special read-only")
                        continue
                    if not (fl & PG_USED):
                        problems.append(f"PTE {e:#x} maps free frame {p}")
                        continue
                    if fl & PG_TABLE:
                        problems.append(f"PTE {e:#x} maps page-table frame {p}")
                        continue
                    mapcount[p] += 1
                    if fl & PG_ANON:
                        rss[MM_ANONPAGES] += 1
                    elif fl & PG_SWAPBACKED:
                        rss[MM_SHMEMPAGES] += 1
                    else:
                        rss[MM_FILEPAGES] += 1
    return (rss[0], rss[1], rss[2], rss[3]), ntables, problems


def audit_range(MMCore mmc, uint64_t start, uint64_t end, bint shared, bint writable_vma):
    """Entry rules inside one VMA: (non-none PTE count, first problem or None).

    A writable PTE in a private VMA must map an exclusive anon page; no PTE may be
    writable in a VMA without VM_WRITE; a shared VMA maps no anon page.
    """
    cdef physmem_t* pm = &mmc.phys.pm
    cdef uint64_t addr = start, span = 1
    cdef pte_t* t = NULL
    cdef pte_t pmd, e
    cdef pfn_t p
    cdef uint32_t fl
    cdef int64_t n = 0
    while addr < end:
        if (addr & ~(PMD_SIZE - 1)) != span:
            span = addr & ~(PMD_SIZE - 1)
            t = _pte_table(pm, &mmc.mm, span, &pmd)
        if t == NULL:
            addr = pmd_addr_end(addr, end)
            continue
        e = t[pte_index(addr)]
        if e != 0:
            n += 1
            if not pte_write(pmd):
                e = pte_wrprotect(e)        # a COW-shared table is read-only through its PMD
            p = pte_pfn(e)
            fl = pm.flags[p] if 0 <= p < pm.nframes else 0
            if pte_write(e) and not writable_vma:
                return n, f"{addr:#x}: writable PTE in a VMA without VM_WRITE"
            if shared and (fl & PG_ANON):
                return n, f"{addr:#x}: anon page in a shared VMA"
            if not shared and pte_write(e):
                if not (fl & PG_ANON):
                    return n, f"{addr:#x}: writable PTE to a non-anon page in a private VMA"
                if not (fl & PG_ANON_EXCLUSIVE) or pm.mapcount[p] != 1:
                    return n, f"{addr:#x}: writable PTE to a shared anon page (mapcount {pm.mapcount[p]})"
        addr += PAGE_SIZE
    return n, None


def count_present(MMCore mmc):
    """Non-none PTEs in the whole address space (each table once per mm)."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef pte_t* pgdt
    cdef pte_t* pudt
    cdef pte_t* pmdt
    cdef pte_t* ptet
    cdef int i, j, k, l
    cdef int64_t n = 0
    if mmc.mm.pgd < 0:
        return 0
    pgdt = table_ptr(pm, mmc.mm.pgd)
    for i in range(512):
        if pgdt[i] == 0:
            continue
        pudt = table_ptr(pm, pte_pfn(pgdt[i]))
        for j in range(512):
            if pudt[j] == 0:
                continue
            pmdt = table_ptr(pm, pte_pfn(pudt[j]))
            for k in range(512):
                if pmdt[k] == 0:
                    continue
                ptet = table_ptr(pm, pte_pfn(pmdt[k]))
                for l in range(512):
                    if ptet[l] != 0:
                        n += 1
    return n


def pte_tables(MMCore mmc, uint64_t start, uint64_t end):
    """The PMD spans (their 2 MiB-aligned addresses, int64) of [start, end) below 2**47
    that have a PTE table: where pagemap can have a non-zero entry (pagemap_pmd_range)."""
    cdef physmem_t* pm = &mmc.phys.pm
    cdef uint64_t addr = start
    cdef pte_t* pmd
    out = []
    if end > (<uint64_t>1) << 47:
        end = (<uint64_t>1) << 47
    if mmc.mm.pgd < 0:
        return np.empty(0, dtype=np.int64)
    while addr < end:
        pmd = pmd_walk_next(pm, &mmc.mm, &addr, end)
        if pmd == NULL:
            break
        if pmd[0] != 0:
            out.append(addr & ~(PMD_SIZE - 1))
        addr = pmd_addr_end(addr, end)
    return np.array(out, dtype=np.int64)
