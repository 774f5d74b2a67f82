"""The entry writers: the only code that stores into a live page table.

Models the setters of arch/x86/include/asm/pgtable.h and include/linux/pgtable.h:
set_pte_at, ptep_get_and_clear, pte_clear, ptep_set_wrprotect, ptep_set_access_flags,
set_pmd_at, pmd_populate, pmd_clear, pmdp_set_access_flags, pmdp_set_wrprotect, set_pud,
pud_populate, pud_clear, pudp_set_wrprotect, set_pgd, pgd_populate, pgd_clear,
pgdp_set_wrprotect (P4D folded). Leaves out: TLB flushes (a TLB model hooks in here),
paravirt, the batched and _full variants.

In a debug build (MMEMU_DEBUG=1) every writer checks that the entry lies in a page-table
frame, that this table is not a COW-shared table of any level (pt_share > 1; break_cow_pte's copy
writes through set_pte_at_break_copy, the one writer exempt), and that a present entry
points inside physical memory; a failed check prints what was written where and aborts.
Release builds compile the checks out.
"""
from libc.stdint cimport uint8_t
from libc.stdio cimport fprintf, stderr
from libc.stdlib cimport abort

from mmemu._core.types cimport (
    pte_t, pfn_t, MMEMU_DEBUG_BUILD, PAGE_SHIFT, PG_TABLE, pte_pfn, pte_present, pte_wrprotect,
    mk_table_entry,
)
from mmemu._core.physmem cimport physmem_t


cdef inline void _check_write(physmem_t* pm, pte_t* entry, pte_t e, bint present,
                              bint may_share, const char* who) noexcept nogil:
    """Debug builds: the checks of every entry writer (see the top of this file)."""
    cdef pfn_t t
    if MMEMU_DEBUG_BUILD:
        t = <pfn_t>((<uint8_t*>entry - pm.mem) >> PAGE_SHIFT)
        if t < 0 or t >= pm.nframes or not (pm.flags[t] & PG_TABLE):
            fprintf(stderr, b"mmemu: %s: write into frame %lld, which is not a page table\n",
                    who, <long long>t)
            abort()
        if not may_share and pm.pt_share[t] > 1:
            fprintf(stderr, b"mmemu: %s: write to an entry of page table %lld shared %d ways\n",
                    who, <long long>t, pm.pt_share[t])
            abort()
        if present and pte_pfn(e) >= pm.nframes:
            fprintf(stderr, b"mmemu: %s: entry %#llx in table %lld points at frame %lld, "
                    b"outside memory (%lld frames)\n", who, <unsigned long long>e,
                    <long long>t, <long long>pte_pfn(e), <long long>pm.nframes)
            abort()


# ---- PTEs ----

cdef inline void set_pte_at(physmem_t* pm, pte_t* ptep, pte_t e) noexcept nogil:
    """set_pte_at: store a PTE (a page, the zero page, a swap entry or a marker)."""
    _check_write(pm, ptep, e, pte_present(e), False, b"set_pte_at")
    ptep[0] = e


cdef inline void set_pte_at_break_copy(physmem_t* pm, pte_t* ptep, pte_t e) noexcept nogil:
    """set_pte_at for break_cow_pte's copy of a COW-shared table into the caller's private
    table: the one writer exempt from the shared-table check."""
    _check_write(pm, ptep, e, pte_present(e), True, b"set_pte_at_break_copy")
    ptep[0] = e


cdef inline void set_pte_at_cow_rule(physmem_t* pm, pte_t* ptep, pte_t e, bint rule_allows) noexcept nogil:
    """set_pte_at into a table that may be COW-shared, where a series version's rule writes
    one (cow_pte_profile.pxd: v3-v5's zero page on a read fault, v5's pte_mkold at fork):
    exempt from the shared-table check only when rule_allows."""
    _check_write(pm, ptep, e, pte_present(e), rule_allows, b"set_pte_at_cow_rule")
    ptep[0] = e


cdef inline void ptep_set_access_flags(physmem_t* pm, pte_t* ptep, pte_t e) noexcept nogil:
    """ptep_set_access_flags: the same entry with more of the accessed and dirty bits (the
    MMU's update on an access, a spurious fault)."""
    _check_write(pm, ptep, e, pte_present(e), False, b"ptep_set_access_flags")
    ptep[0] = e


cdef inline pte_t ptep_get_and_clear(physmem_t* pm, pte_t* ptep) noexcept nogil:
    """ptep_get_and_clear: clear a PTE, returning what it held."""
    cdef pte_t e = ptep[0]
    _check_write(pm, ptep, 0, False, False, b"ptep_get_and_clear")
    ptep[0] = 0
    return e


cdef inline void pte_clear(physmem_t* pm, pte_t* ptep) noexcept nogil:
    """pte_clear: the PTE becomes none."""
    _check_write(pm, ptep, 0, False, False, b"pte_clear")
    ptep[0] = 0


cdef inline void ptep_set_wrprotect(physmem_t* pm, pte_t* ptep) noexcept nogil:
    """ptep_set_wrprotect: the PTE loses RW (fork, a COW table made writable again)."""
    _check_write(pm, ptep, 0, False, False, b"ptep_set_wrprotect")
    ptep[0] = pte_wrprotect(ptep[0])


# ---- PMD entries ----

cdef inline void set_pmd_at(physmem_t* pm, pte_t* pmdp, pte_t e) noexcept nogil:
    """set_pmd_at / set_pmd: store a PMD entry (a COW table's read-only link, a relinked
    table)."""
    _check_write(pm, pmdp, e, e != 0, False, b"set_pmd_at")
    pmdp[0] = e


cdef inline void pmd_populate(physmem_t* pm, pte_t* pmdp, pfn_t table) noexcept nogil:
    """pmd_populate: link a PTE table."""
    set_pmd_at(pm, pmdp, mk_table_entry(table))


cdef inline void pmd_clear(physmem_t* pm, pte_t* pmdp) noexcept nogil:
    """pmd_clear: the PMD entry becomes none."""
    _check_write(pm, pmdp, 0, False, False, b"pmd_clear")
    pmdp[0] = 0


cdef inline void pmdp_set_access_flags(physmem_t* pm, pte_t* pmdp, pte_t e) noexcept nogil:
    """pmdp_set_access_flags: the same huge PMD with more of the accessed, dirty and RW
    bits (touch_pmd, do_huge_pmd_wp_page's reuse)."""
    _check_write(pm, pmdp, e, True, False, b"pmdp_set_access_flags")
    pmdp[0] = e


cdef inline void pmdp_set_wrprotect(physmem_t* pm, pte_t* pmdp) noexcept nogil:
    """pmdp_set_wrprotect: the PMD entry loses RW (its PTE table becomes COW-shared)."""
    _check_write(pm, pmdp, 0, False, False, b"pmdp_set_wrprotect")
    pmdp[0] = pte_wrprotect(pmdp[0])


# ---- PUD and PGD entries ----

cdef inline void set_pud(physmem_t* pm, pte_t* pudp, pte_t e) noexcept nogil:
    """set_pud: store a PUD entry (a relinked PMD table)."""
    _check_write(pm, pudp, e, e != 0, False, b"set_pud")
    pudp[0] = e


cdef inline void pud_populate(physmem_t* pm, pte_t* pudp, pfn_t table) noexcept nogil:
    """pud_populate: link a PMD table."""
    set_pud(pm, pudp, mk_table_entry(table))


cdef inline void pud_clear(physmem_t* pm, pte_t* pudp) noexcept nogil:
    """pud_clear: the PUD entry becomes none."""
    _check_write(pm, pudp, 0, False, False, b"pud_clear")
    pudp[0] = 0


cdef inline void pgd_populate(physmem_t* pm, pte_t* pgdp, pfn_t table) noexcept nogil:
    """pgd_populate (p4d_populate, P4D folded): link a PUD table."""
    cdef pte_t e = mk_table_entry(table)
    _check_write(pm, pgdp, e, True, False, b"pgd_populate")
    pgdp[0] = e


cdef inline void pgd_clear(physmem_t* pm, pte_t* pgdp) noexcept nogil:
    """pgd_clear (p4d_clear, P4D folded): the PGD entry becomes none."""
    _check_write(pm, pgdp, 0, False, False, b"pgd_clear")
    pgdp[0] = 0


# ---- whole-table COW (cow_pgtable.pyx): read-only links to shared PMD and PUD tables ----

cdef inline void pudp_set_wrprotect(physmem_t* pm, pte_t* pudp) noexcept nogil:
    """pudp_set_wrprotect: the PUD entry loses RW (its PMD table becomes COW-shared)."""
    _check_write(pm, pudp, 0, False, False, b"pudp_set_wrprotect")
    pudp[0] = pte_wrprotect(pudp[0])


cdef inline void set_pgd(physmem_t* pm, pte_t* pgdp, pte_t e) noexcept nogil:
    """set_pgd (set_p4d, P4D folded): store a PGD entry (a COW-shared PUD table's
    read-only link, or the link made writable again)."""
    _check_write(pm, pgdp, e, e != 0, False, b"set_pgd")
    pgdp[0] = e


cdef inline void pgdp_set_wrprotect(physmem_t* pm, pte_t* pgdp) noexcept nogil:
    """pgdp_set_wrprotect: the PGD entry loses RW (its PUD table becomes COW-shared)."""
    _check_write(pm, pgdp, 0, False, False, b"pgdp_set_wrprotect")
    pgdp[0] = pte_wrprotect(pgdp[0])
