"""The decision points where the published versions of the COW page-table series differ.

mmemu.profiles turns a version name into these bits (physmem_t.cow_rules); 0 is mmemu's
own behaviour. The core asks the inline functions below, never the bits directly. Sources
per rule: docs/series-versions.md (the lore message ids and functions).
"""
from libc.stdint cimport uint64_t
from mmemu._core.types cimport (
    pte_t, pfn_t, _bit, BIT_ACCESSED, BIT_DIRTY, VM_SHARED, pte_present, pte_pfn,
)
from mmemu._core.physmem cimport physmem_t
from mmemu._core.pagetable cimport mm_t
from mmemu._core.pgtable cimport set_pte_at_cow_rule
from mmemu._core.tlb cimport flush_tlb_mm_range

cdef enum:
    # v3-v5 handle_cow_pte_fault: only a write/unshare fault, a VMA with vm_ops or a swap
    # entry breaks; an anonymous read fault maps the zero page into the still-shared table
    COW_RULE_READ_FAULT_SHARED = 1 << 0
    # v5 copy_cow_pte_range: the shared entries are made old (and clean for VM_SHARED)
    COW_RULE_MKOLD_AT_FORK = 1 << 1
    # v1/v2 (owner = the PMD that counts the table): an owner that breaks or leaves while
    # the table is still shared drops its counts and sets the owner to NULL; the next
    # holder that reuses the table (refcount 1) or forks it counts it again
    COW_RULE_OWNER_NULL = 1 << 2
    # v3-v5 handle_cow_pte_fault: flush_tlb_range over the 2 MiB span on every break, a
    # reuse too (v4 20230207035139.272707-4, "goto flush_tlb")
    COW_RULE_FLUSH_EVERY_BREAK = 1 << 3
    # v1/v2: no flush when a shared PMD is cleared, repointed or made writable (v1 TODO)
    COW_RULE_NO_BREAK_FLUSH = 1 << 4
    # v1 zap_pmd_range at exit on a COW-ed PMD only this mm holds: the entries are skipped,
    # cow_pte_fallback re-adds the rss, free_pte_range frees the table with its entries
    # (v1's TODO "Bad RSS counter in multiple times COW PTE table forking")
    COW_RULE_V1_EXIT_FALLBACK = 1 << 5


cdef inline bint cow_read_fault_keeps_share(physmem_t* pm, bint write, bint has_vm_ops, pte_t e) noexcept nogil:
    """Does this fault on a COW-shared table leave the table shared (v3-v5: an anonymous
    read fault on a none entry, which do_anonymous_page then fills with the zero page)?"""
    return (pm.cow_rules & COW_RULE_READ_FAULT_SHARED) != 0 and not write and not has_vm_ops and e == 0


cdef inline void set_pte_at_shared_zero(physmem_t* pm, pte_t* ptep, pte_t e) noexcept nogil:
    """set_pte_at of do_anonymous_page's zero-page entry into a still-shared table (v3-v5):
    the one write into a shared table a profile makes at fault time; the debug build
    checks it is that rule and that entry."""
    set_pte_at_cow_rule(pm, ptep, e, (pm.cow_rules & COW_RULE_READ_FAULT_SHARED) != 0
                        and pte_pfn(e) == pm.zero_pfn)


cdef inline bint cow_mkold_at_fork(physmem_t* pm) noexcept nogil:
    return (pm.cow_rules & COW_RULE_MKOLD_AT_FORK) != 0


cdef inline void cow_pte_mkold_range(physmem_t* pm, pte_t* table, int i0, int i1, uint64_t vm_flags) noexcept nogil:
    """v5 copy_cow_pte_range -> copy_present_pte with dst == src: pte_mkold, and
    pte_mkclean in a VM_SHARED VMA, on the shared entries [i0, i1) of one VMA."""
    cdef pte_t clear = _bit(BIT_ACCESSED) | (_bit(BIT_DIRTY) if vm_flags & VM_SHARED else 0)
    cdef int i
    for i in range(i0, i1):
        if pte_present(table[i]) and table[i] & clear:
            set_pte_at_cow_rule(pm, &table[i], table[i] & ~clear, cow_mkold_at_fork(pm))


cdef inline bint cow_owner_null(physmem_t* pm) noexcept nogil:
    return (pm.cow_rules & COW_RULE_OWNER_NULL) != 0


cdef inline void cow_pte_flush(physmem_t* pm, mm_t* mm, uint64_t addr, bint repointed) noexcept nogil:
    """The flush after break_cow_pte of the span of addr: v3-v5 flush the 2 MiB span every
    time; v1/v2 never (v1 -7 break_cow_pte and -5 cow_pte_fallback flush nothing: the
    cover letter's TODO); mmemu's own modes when the PMD points at a new table
    (repointed), not when a table is only made writable again."""
    cdef uint64_t span = addr & ~((<uint64_t>1 << 21) - 1)
    if pm.cow_rules & COW_RULE_NO_BREAK_FLUSH:
        return
    if repointed or (pm.cow_rules & COW_RULE_FLUSH_EVERY_BREAK):
        flush_tlb_mm_range(pm, mm, span, span + (<uint64_t>1 << 21))


cdef inline bint cow_v1_exit_fallback(physmem_t* pm) noexcept nogil:
    return (pm.cow_rules & COW_RULE_V1_EXIT_FALLBACK) != 0
