# cython: language_level=3
"""Page faults: anonymous, zero page, file/shmem, and write-protect (COW) faults.

Models handle_mm_fault/handle_pte_fault, do_anonymous_page, do_fault (do_read_fault,
do_cow_fault, do_shared_fault), do_wp_page (wp_page_reuse, wp_page_copy, wp_page_shared)
and do_swap_page (without a swap cache) from mm/memory.c. Leaves out: THP, userfaultfd,
NUMA hinting.
A huge PMD (THP) is handled by huge_memory.pyx: __handle_mm_fault's PMD-level dispatch
(create_huge_pmd, wp_huge_pmd, huge_pmd_set_accessed) is its one hook here.
The access check (access_error, SIGSEGV) is policy and is done in Python per VMA.
"""
from libc.stdint cimport uint8_t, uint32_t, int64_t, uint64_t
from libc.string cimport memcpy

from mmemu._core.types cimport *
from mmemu._core.physmem cimport (
    physmem_t, alloc_frame, put_page, copy_frame, wmb, copy_page_nt, frame_ptr, table_ptr, swap_free,
)
from mmemu._core.pagetable cimport (
    mm_t, vma_t, MMCore, pte_offset, pte_offset_alloc, pmd_offset_alloc, vma_from_py,
    pgtable_free, LEVEL_PTE,
)
from mmemu._core.cow_pte cimport pmd_cow, break_cow_pte
from mmemu._core.cow_pgtable cimport pgtable_path_cow, break_cow_pgtable
from mmemu._core.pgtable cimport set_pte_at, ptep_set_access_flags, pmd_clear
from mmemu._core.rmap cimport (
    folio_add_new_anon_rmap, folio_remove_rmap_pte, SetPageAnonExclusive,
    shmem_alloc_and_add_folio, folio_mark_dirty,
)
from mmemu._core.filemap cimport xa_load
from mmemu._core.huge_memory cimport (
    FAULT_FALLBACK, thp_vma_suitable, do_huge_pmd_anonymous_page, huge_pmd_fault,
    huge_pmd_access, do_set_pmd,
)
from mmemu._core.cow_pte_profile cimport cow_read_fault_keeps_share, set_pte_at_shared_zero
from mmemu._core.tlb cimport flush_tlb_page


cdef int do_anonymous_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* ptep, bint write) noexcept nogil:
    """do_anonymous_page: zero page on read, a new zeroed exclusive page on write."""
    cdef pfn_t pfn
    if not write:
        # no anon_vma is prepared on this path
        set_pte_at(pm, ptep, mk_zero_pte(pm, vma))
        pm.ev[EV_FAULT_ZERO_PAGE] += 1
        return FAULT_OK
    pfn = alloc_frame(pm, False, True)
    if pfn < 0:
        return FAULT_OOM
    vma.anon_vma = 1
    folio_add_new_anon_rmap(pm, pfn, mm.rss, True)
    set_pte_at(pm, ptep, mk_anon_pte(pfn, vma))
    pm.ev[EV_FAULT_ANON] += 1
    return FAULT_OK


cdef int wp_page_copy(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* ptep, pte_t e) noexcept nogil:
    """wp_page_copy: a new exclusive anon page (zeroed if the old PTE was the zero page)."""
    cdef pfn_t old = pte_pfn(e)
    cdef uint32_t fl = pm.flags[old]
    cdef bint from_zero = (fl & PG_ZERO) != 0
    # copy_frame overwrites all 4096 bytes (or zeroes them): zero only for the zero page
    cdef pfn_t new = alloc_frame(pm, False, from_zero)
    if new < 0:
        return FAULT_OOM
    vma.anon_vma = 1
    if from_zero:
        pm.ev[EV_COW_ZERO] += 1
    else:
        copy_frame(pm, new, old)
    folio_add_new_anon_rmap(pm, new, mm.rss, True)
    set_pte_at(pm, ptep, mk_anon_pte(new, vma))
    flush_tlb_page(pm, mm, 0)       # ptep_clear_flush: one page (its address does not count)
    if not from_zero:
        folio_remove_rmap_pte(pm, old, fl, mm.rss)
        put_page(pm, old)
    pm.ev[EV_COW_FAULT] += 1
    return FAULT_OK


cdef int do_wp_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* ptep, pte_t e) noexcept nogil:
    """do_wp_page: shared -> make writable; private anon exclusive -> reuse; else copy."""
    cdef pfn_t pfn = pte_pfn(e)
    cdef uint32_t fl = pm.flags[pfn]
    if vma.flags & VM_SHARED:
        # wp_page_shared + fault_dirty_shared_page: the folio is dirtied too
        set_pte_at(pm, ptep, pte_mkwrite(pte_mkdirty(pte_mkyoung(e))))
        folio_mark_dirty(pm, pfn)
        pm.ev[EV_WP_SHARED] += 1
        return FAULT_OK
    if (fl & PG_ANON) and ((fl & PG_ANON_EXCLUSIVE) or pm.refcount[pfn] == 1):
        # wp_can_reuse_anon_folio + wp_page_reuse
        SetPageAnonExclusive(pm, pfn)
        set_pte_at(pm, ptep, pte_mkwrite(pte_mkdirty(pte_mkyoung(e))))
        pm.ev[EV_WP_REUSE] += 1
        return FAULT_OK
    return wp_page_copy(pm, mm, vma, ptep, e)


DEF FAULT_AROUND_PAGES = 16     # fault_around_bytes (64 KiB) / PAGE_SIZE


cdef inline pte_t* large_folio_table(vma_t* vma, uint64_t addr, int64_t idx,
                                     pte_t* ptep) noexcept nogil:
    """The PTE table slots of the whole PMD-sized folio holding page idx (mapped at addr),
    when the folio lies inside the VMA and inside one page table (filemap_map_pages'
    can_map_large, finish_fault's VMA and PMD limits); else NULL."""
    cdef uint64_t fa = addr - (<uint64_t>(idx & (HPAGE_PMD_NR - 1)) << PAGE_SHIFT)
    if fa & (PMD_SIZE - 1) or fa < vma.start or fa + PMD_SIZE > vma.end:
        return NULL
    return ptep - pte_index(addr)


cdef void map_large_folio(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* table, pfn_t head,
                          bint write) noexcept nogil:
    """set_pte_range over a whole PMD-sized folio: every none slot of its table maps its
    page (a reference and the file rmap each)."""
    cdef int i
    for i in range(HPAGE_PMD_NR):
        if table[i] == 0:
            set_pte_range(pm, mm, vma, &table[i], head + i, write)


cdef bint do_fault_around(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, pte_t* ptep,
                          bint new_table) noexcept nogil:
    """do_fault_around + filemap_map_pages: map every cached page in the 16-page aligned
    window around addr (clamped to the VMA, the PTE table and EOF) whose PTE is none.
    Returns whether the faulting page itself got mapped. Prefaulted PTEs are young (x86).

    On a file that is not shmem, 6.18 installs the preallocated PTE table only when the
    first cached folio of the window ends before EOF (filemap_map_pages skips
    filemap_map_pmd otherwise, then finds no table): if that folio (a single page, or a
    PMD-sized folio) holds the file's last page and the fault brought a new_table, nothing
    is mapped. A PMD-sized folio that ends before the file's last page and lies inside the
    VMA and the table is mapped whole (6.18's can_map_large), not just the window."""
    cdef int64_t pte_off = pte_index(addr)
    cdef int64_t vma_off = <int64_t>((addr - vma.start) >> PAGE_SHIFT)
    cdef int64_t vma_pages = <int64_t>((vma.end - vma.start) >> PAGE_SHIFT)
    cdef int64_t from_pte, to_pte, i, idx
    cdef pte_t* table = ptep - pte_off
    cdef pfn_t pfn
    cdef bint large
    from_pte = pte_off - (pte_off if pte_off < vma_off else vma_off)
    if (pte_off & ~(FAULT_AROUND_PAGES - 1)) > from_pte:
        from_pte = pte_off & ~(FAULT_AROUND_PAGES - 1)
    to_pte = from_pte + FAULT_AROUND_PAGES
    if to_pte > PTRS_PER_TABLE:
        to_pte = PTRS_PER_TABLE
    if to_pte > pte_off + vma_pages - vma_off:
        to_pte = pte_off + vma_pages - vma_off
    for i in range(from_pte, to_pte):
        idx = vma.pgoff + vma_off + (i - pte_off)
        if idx < 0 or idx >= vma.cache_pages:
            continue
        pfn = xa_load(vma.cache, idx)
        if pfn < 0:
            continue
        large = (pm.flags[pfn] & PG_COMPOUND) != 0
        if new_table and not vma.swapbacked and (
                idx | (HPAGE_PMD_NR - 1 if large else 0)) >= vma.cache_pages - 1:
            break       # the window's first folio reaches EOF: no table, nothing mapped
        new_table = False
        if large and (idx | (HPAGE_PMD_NR - 1)) < vma.cache_pages - 1 and large_folio_table(
                vma, addr + (<uint64_t>(i - pte_off) << PAGE_SHIFT), idx, &table[i]) != NULL:
            # can_map_large: the whole folio, not only the window (it fills this table)
            map_large_folio(pm, mm, vma, table, compound_head(pfn), False)
            break
        if table[i] != 0:
            continue
        set_pte_range(pm, mm, vma, &table[i], pfn, False)
    return ptep[0] != 0


cdef inline bint _table_none(pte_t* t) noexcept nogil:
    """pte_range_none over a whole table."""
    cdef int i
    for i in range(PTRS_PER_TABLE):
        if t[i] != 0:
            return False
    return True


cdef int do_fault(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, pte_t* ptep, bint write,
                  bint new_table) noexcept nogil:
    """do_read_fault (with fault-around) / do_cow_fault / do_shared_fault on a
    page-cache-backed VMA; new_table: the fault allocated the PTE table."""
    cdef int64_t idx = vma.pgoff + <int64_t>((addr - vma.start) >> PAGE_SHIFT)
    cdef pfn_t pfn, new
    cdef pte_t* t
    if vma.cache == NULL:
        return FAULT_SIGBUS
    # do_read_fault: fault-around first (it maps the cached pages of the window up to EOF
    # even when the faulting page lies past it), then __do_fault's SIGBUS
    if not write and do_fault_around(pm, mm, vma, addr, ptep, new_table):
        pm.ev[EV_FAULT_SHMEM] += 1
        return FAULT_OK
    if write and not (vma.flags & VM_SHARED):
        vma.anon_vma = 1        # do_cow_fault: vmf_anon_prepare comes before __do_fault
    if idx >= vma.cache_pages:
        return FAULT_SIGBUS
    pfn = xa_load(vma.cache, idx)
    if pfn < 0:
        # shmem_get_folio / filemap_fault: the page enters the cache (zero-filled hole)
        pfn = shmem_alloc_and_add_folio(pm, vma.cache, idx, vma.swapbacked)
        if pfn < 0:
            return FAULT_OOM
        pm.ev[EV_FAULT_SHMEM_ALLOC] += 1
        if not write and not vma.swapbacked and do_fault_around(pm, mm, vma, addr, ptep, new_table):
            # filemap_fault read a disk file's page in, dropping mmap_lock for the I/O: the
            # fault is retried (VM_FAULT_RETRY) and faults around again, finding it cached
            pm.ev[EV_FAULT_SHMEM] += 1
            return FAULT_OK
    if write and not (vma.flags & VM_SHARED):
        # do_cow_fault: a private anon copy; the cache page is not mapped
        new = alloc_frame(pm, False, False)     # copy_frame writes every byte
        if new < 0:
            return FAULT_OOM
        vma.anon_vma = 1
        copy_frame(pm, new, pfn)
        folio_add_new_anon_rmap(pm, new, mm.rss, True)
        set_pte_at(pm, ptep, mk_anon_pte(new, vma))
        pm.ev[EV_COW_FAULT] += 1
        return FAULT_OK
    # finish_fault: a PMD-sized folio inside EOF, the VMA and the table, whose slots are all
    # none, is mapped whole; otherwise the one page
    t = large_folio_table(vma, addr, idx, ptep) if (
        (pm.flags[pfn] & PG_COMPOUND) and (idx | (HPAGE_PMD_NR - 1)) < vma.cache_pages) else NULL
    if t != NULL and _table_none(t):
        map_large_folio(pm, mm, vma, t, compound_head(pfn), write)
    else:
        set_pte_range(pm, mm, vma, ptep, pfn, write)
    if write:
        # do_shared_fault: fault_dirty_shared_page marks the folio dirty
        folio_mark_dirty(pm, pfn)
    pm.ev[EV_FAULT_SHMEM] += 1
    return FAULT_OK


cdef int do_swap_page(physmem_t* pm, mm_t* mm, vma_t* vma, pte_t* ptep, pte_t e) noexcept nogil:
    """do_swap_page without a swap cache: a new anonymous page gets the slot's data. A slot
    only this entry references gives an exclusive page, writable if the VMA is (as Linux
    maps it on a read fault too); otherwise a read-only page another fork may also read
    in (Linux would share one swap-cache page between them)."""
    cdef int64_t slot = swap_pte_slot(e)
    cdef bint exclusive = 0 <= slot < pm.swap_slots and pm.swap_map[slot] == 1
    cdef pfn_t pfn = alloc_frame(pm, False, True)
    if pfn < 0:
        return FAULT_OOM
    if 0 <= slot < pm.swap_slots:
        memcpy(frame_ptr(pm, pfn), pm.swap_data + (<uint64_t>slot << PAGE_SHIFT), 4096)
        pm.flags[pfn] |= PG_HASDATA
        swap_free(pm, slot)
    vma.anon_vma = 1
    folio_add_new_anon_rmap(pm, pfn, mm.rss, exclusive)
    mm.rss[MM_SWAPENTS] -= 1
    if exclusive:
        set_pte_at(pm, ptep, mk_anon_pte(pfn, vma))
    else:
        set_pte_at(pm, ptep, mk_pte(pfn, vma.prot) | _bit(BIT_ACCESSED))
    pm.ev[EV_SWAPIN] += 1
    return FAULT_OK


cdef int handle_mm_fault(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, bint write) noexcept nogil:
    """handle_mm_fault after access_error passed: allocate tables, dispatch (handle_pte_fault).
    A caller that holds the PMD entry of an existing PTE table calls _handle_pte_fault
    directly: this walk would find the same entries and allocate nothing."""
    cdef pte_t* pmdp
    cdef pte_t* ptep
    cdef int rc, i
    cdef pte_t* t
    cdef pfn_t table
    cdef bint new_table = False
    cdef pte_t* pmd
    if break_cow_pgtable(pm, mm, addr, 2 if vma.has_vm_ops else 1) < 0:
        return FAULT_OOM        # whole-table COW: the PUD/PMD tables on the path go private first
    pmd = pmd_offset_alloc(pm, mm, addr)
    if pmd == NULL:
        return FAULT_OOM
    if pmd_leaf(pmd[0]):
        rc = huge_pmd_fault(pm, mm, vma, pmd, write)
        if rc != FAULT_FALLBACK:
            return rc
    if pmd[0] == 0 and thp_vma_suitable(vma, addr):
        if not vma.has_vm_ops:
            rc = do_huge_pmd_anonymous_page(pm, mm, vma, pmd, write)    # create_huge_pmd
        elif (write and not (vma.flags & VM_SHARED)) or vma.cache == NULL or \
                vma.pgoff + <int64_t>(((addr | (PMD_SIZE - 1)) - vma.start) >> PAGE_SHIFT) \
                >= vma.cache_pages:
            rc = FAULT_FALLBACK     # do_cow_fault maps a PTE; no PMD across EOF
        else:
            # do_read_fault (filemap_map_pmd) / do_shared_fault (finish_fault), or after a
            # file PMD's split on a shared write
            rc = do_set_pmd(pm, mm, vma, pmd, addr, write)
        if rc != FAULT_FALLBACK:
            return rc
    new_table = pmd[0] == 0
    ptep = pte_offset_alloc(pm, mm, addr, &pmdp)
    if ptep == NULL:
        return FAULT_OOM
    if new_table and vma.has_vm_ops:
        # do_fault preallocates the PTE table (vmf->prealloc_pte) and installs it only
        # when it maps a page: a fault that maps nothing (SIGBUS) leaves no table
        rc = _handle_pte_fault(pm, mm, vma, addr, write, ptep, pmdp, True)
        if rc != FAULT_OK:
            t = ptep - pte_index(addr)
            for i in range(512):
                if t[i] != 0:
                    return rc
            table = pte_pfn(pmdp[0])
            pmd_clear(pm, pmdp)
            pgtable_free(pm, mm, table, LEVEL_PTE)
        return rc
    return _handle_pte_fault(pm, mm, vma, addr, write, ptep, pmdp, False)


cdef int _handle_pte_fault(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, bint write,
                           pte_t* ptep, pte_t* pmdp, bint new_table) noexcept nogil:
    """handle_pte_fault: the fault on the PTE ptep (in the table pmdp links, new_table if
    this fault allocated it), after handle_cow_pte_fault made a COW-shared table private."""
    cdef pte_t e
    cdef int rc
    if is_guard_pte(ptep[0]):
        return FAULT_SIGSEGV        # handle_pte_marker: a guard region, before any COW break
    if pmd_cow(pmdp[0]) and pm.pt_share[pte_pfn(pmdp[0])] > 1 and cow_read_fault_keeps_share(
            pm, write, vma.has_vm_ops, ptep[0]):
        # v3-v5 handle_cow_pte_fault is not called: the zero page goes into the shared table
        pm.ev[EV_PGFAULT] += 1
        set_pte_at_shared_zero(pm, ptep, mk_zero_pte(pm, vma))
        pm.ev[EV_FAULT_ZERO_PAGE] += 1
        return FAULT_OK
    if pmd_cow(pmdp[0]):
        # handle_cow_pte_fault: the fault will change this table, so it must be private.
        # A copy plus the pages the fault may allocate must fit, or nothing changes.
        if pm.pt_share[pte_pfn(pmdp[0])] > 1 and pm.nr_free < 1 + (2 if vma.has_vm_ops else 1):
            return FAULT_OOM
        if break_cow_pte(pm, mm, pmdp, addr) < 0:
            return FAULT_OOM
        ptep = &table_ptr(pm, pte_pfn(pmdp[0]))[pte_index(addr)]
    pm.ev[EV_PGFAULT] += 1
    e = ptep[0]
    if is_swap_pte(e):
        rc = do_swap_page(pm, mm, vma, ptep, e)
        if rc != FAULT_OK or not write or pte_write(ptep[0]):
            return rc
        return do_wp_page(pm, mm, vma, ptep, ptep[0])
    if e == 0:
        if not vma.has_vm_ops:
            return do_anonymous_page(pm, mm, vma, ptep, write)
        return do_fault(pm, mm, vma, addr, ptep, write, new_table)
    if write and not pte_write(e):
        return do_wp_page(pm, mm, vma, ptep, e)
    # spurious: the access is already allowed; only the A/D bits change
    ptep_set_access_flags(pm, ptep, e | _bit(BIT_ACCESSED) | (_bit(BIT_DIRTY) if write else 0))
    pm.ev[EV_SPURIOUS] += 1
    return FAULT_OK


# writes of at least this many bytes store whole pages around the cache (the bytes are not
# read back soon; smaller writes stay in the cache for the reads that follow them)
cdef enum:
    NT_WRITE_MIN = 4 << 20

cdef int access_range(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t start, uint64_t end,
                      bint write, uint8_t* buf, int mode, uint64_t* fail_addr) noexcept nogil:
    """The MMU over [start, end) of one VMA: fault where needed, then move bytes.

    mode 0: access only (touch); 1: copy frame bytes out to buf; 2: copy buf into frames.
    start/end need not be page aligned. Returns FAULT_* and the failing address.

    The PTE table of the current 2 MiB span is looked up once: a fault on one of its
    entries goes straight to _handle_pte_fault, and afterwards the table is read back from
    the PMD entry (break_cow_pte may have replaced it). Before returning it orders the
    non-temporal stores of the COW copies it made (wmb, once per call, not per page).
    """
    cdef uint64_t addr = start, page, nxt, off, n
    cdef pte_t* table = NULL
    cdef pte_t* pmdp = NULL
    cdef uint64_t table_span = 1  # PMD span of `table` (1 = none cached)
    cdef bint path_rw = True    # no read-only PGD/PUD entry above `table` (whole-table COW)
    cdef pte_t e, want
    cdef int rc
    cdef bint ok
    cdef pfn_t pfn
    want = _bit(BIT_ACCESSED) | (_bit(BIT_DIRTY) if write else 0)
    while addr < end:
        page = addr & ~(<uint64_t>PAGE_SIZE - 1)
        nxt = page + PAGE_SIZE
        if nxt > end:
            nxt = end
        if (page & ~(PMD_SIZE - 1)) != table_span:
            table_span = page & ~(PMD_SIZE - 1)
            table = pte_offset(pm, mm, table_span, &pmdp)
            path_rw = not pgtable_path_cow(pm, mm, table_span)
        if not path_rw and table != NULL and pmd_leaf(pmdp[0]):
            # whole-table COW never shares a table holding a huge PMD; should one be under
            # a read-only path, make the path private before huge_pmd_access changes it
            if break_cow_pgtable(pm, mm, page, 1) < 0:
                fail_addr[0] = page
                wmb()
                return FAULT_OOM
            table = pte_offset(pm, mm, table_span, &pmdp)
            path_rw = True
        if table != NULL and pmd_leaf(pmdp[0]):
            # a huge PMD: the access, or its fault (a split leaves the PTE table behind)
            rc = huge_pmd_access(pm, mm, vma, pmdp, write)
            if rc != FAULT_OK and rc != FAULT_FALLBACK:
                fail_addr[0] = page
                wmb()
                return rc
            # a file PMD's split leaves the entry none (the fault below maps it again)
            table = table_ptr(pm, pte_pfn(pmdp[0])) if pmdp[0] != 0 else NULL
        if table != NULL and pmd_leaf(pmdp[0]):
            pfn = pte_pfn(pmdp[0]) + pte_index(page)
        else:
            e = table[pte_index(page)] if table != NULL else 0
            ok = (e & _bit(BIT_PRESENT)) != 0
            if ok and write:
                ok = pte_write(e) and pte_write(pmdp[0]) and path_rw
            if ok:
                if (e & want) != want and pte_write(pmdp[0]) and path_rw:
                    ptep_set_access_flags(pm, &table[pte_index(page)], e | want)
            else:
                if not path_rw:     # whole-table COW: make the path private, then fault there
                    if break_cow_pgtable(pm, mm, page, 2 if vma.has_vm_ops else 1) < 0:
                        fail_addr[0] = page
                        wmb()
                        return FAULT_OOM
                    table = pte_offset(pm, mm, table_span, &pmdp)
                    path_rw = True
                # an anonymous page this call writes whole: the fault's zeroing or COW copy
                # of its bytes is dead (the counters still say the kernel did it)
                pm.overwrite = mode == 2 and addr == page and nxt == page + PAGE_SIZE \
                    and not vma.has_vm_ops
                if table != NULL:
                    rc = _handle_pte_fault(pm, mm, vma, page, write, &table[pte_index(page)], pmdp, False)
                else:
                    rc = handle_mm_fault(pm, mm, vma, page, write)
                pm.overwrite = False
                if rc != FAULT_OK:
                    fail_addr[0] = page
                    wmb()
                    return rc
                if pmdp == NULL:        # the fault allocated the PMD table too
                    pte_offset(pm, mm, table_span, &pmdp)
                table = table_ptr(pm, pte_pfn(pmdp[0]))
            if pmd_leaf(pmdp[0]):       # the fault mapped a THP
                pfn = pte_pfn(pmdp[0]) + pte_index(page)
            else:
                pfn = pte_pfn(table[pte_index(page)])
        if mode != 0:
            off = addr - page
            n = nxt - addr
            if mode == 1:
                memcpy(buf, frame_ptr(pm, pfn) + off, n)
            elif n == PAGE_SIZE and end - start >= NT_WRITE_MIN:
                copy_page_nt(frame_ptr(pm, pfn), buf)
                pm.flags[pfn] |= PG_HASDATA
            else:
                memcpy(frame_ptr(pm, pfn) + off, buf, n)
                pm.flags[pfn] |= PG_HASDATA
            buf += n
        addr = nxt
    wmb()
    return FAULT_OK


def access(MMCore mmc, object vma, uint64_t start, uint64_t end, bint write, object buf=None,
           int mode=0, bint thp=False):
    """Access [start, end) inside one VMA. Returns (FAULT_*, failing address, anon_vma created).
    thp: the policy allows PMD-sized THPs in the VMA (thp_vma_allowable_order).

    `buf` is a writable uint8 buffer for mode 1 (read) or a readable one for mode 2 (write),
    of exactly end - start bytes. The caller has done the access check.
    """
    cdef vma_t v
    cdef uint64_t fail = 0
    cdef uint8_t[::1] wbuf
    cdef const uint8_t[::1] rbuf
    cdef uint8_t* p = NULL
    cdef int rc
    vma_from_py(&v, vma)
    v.thp = thp
    if start < v.start or end > v.end or start > end:
        raise ValueError("range outside the VMA")
    if mode == 1:
        wbuf = buf
        if <uint64_t>wbuf.shape[0] != end - start:
            raise ValueError("buffer size mismatch")
        if wbuf.shape[0]:
            p = &wbuf[0]
    elif mode == 2:
        rbuf = buf
        if <uint64_t>rbuf.shape[0] != end - start:
            raise ValueError("buffer size mismatch")
        if rbuf.shape[0]:
            p = <uint8_t*>&rbuf[0]
    with nogil:
        rc = access_range(&mmc.phys.pm, &mmc.mm, &v, start, end, write, p, mode, &fail)
    return rc, fail, bool(v.anon_vma)
