# cython: language_level=3
"""x86-64 4-level page tables held in emulated frames: walk, allocate, free.

Models pgd_offset/pud_alloc/pmd_alloc/pte_alloc (include/linux/mm.h, mm/memory.c) and
free_pgd_range/free_pud_range/free_pmd_range/free_pte_range (mm/memory.c). The P4D level is
folded, as on 4-level x86-64.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memset

import numpy as np

from mmemu._core.types cimport *
from mmemu._core.physmem cimport (
    physmem_t, PhysMem, alloc_frame, free_frame, put_page, table_ptr, swap_free,
)
from mmemu._core.filemap cimport PageCache



cdef pfn_t pgtable_alloc(physmem_t* pm, mm_t* mm, int level) noexcept nogil:
    """pte_alloc_one / pmd_alloc_one / pud_alloc_one / pgd_alloc with mm_inc_nr_*.

    Every level counts in NR_PAGETABLE; all but the PGD count in mm->pgtables_bytes.
    """
    cdef pfn_t pfn = alloc_frame(pm, True, True)
    if pfn < 0:
        return -1
    pm.flags[pfn] |= PG_TABLE | PG_HASDATA
    pm.pt_owner[pfn] = mm.id
    if level == LEVEL_PTE:
        pm.pt_share[pfn] = 1
    pm.nr_pagetable += 1
    pm.ev[EV_PT_ALLOC] += 1
    if level != LEVEL_PGD:
        mm.pgtables_bytes += 4096
    return pfn


cdef void pgtable_free(physmem_t* pm, mm_t* mm, pfn_t pfn, int level) noexcept nogil:
    """pte_free / pmd_free / pud_free / pgd_free with mm_dec_nr_*."""
    pm.nr_pagetable -= 1
    pm.ev[EV_PT_FREE] += 1
    if level != LEVEL_PGD:
        mm.pgtables_bytes -= 4096
    memset(table_ptr(pm, pfn), 0, 4096)
    pm.flags[pfn] &= ~PG_HASDATA
    free_frame(pm, pfn)


cdef inline pte_t* _next_table(physmem_t* pm, pte_t* entry) noexcept nogil:
    return table_ptr(pm, pte_pfn(entry[0]))


cdef pte_t* pmd_offset(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil:
    """Pointer to the PMD entry covering addr, or NULL if the PGD or PUD entry is none."""
    cdef pte_t* pgd = table_ptr(pm, mm.pgd)
    cdef pte_t* e = &pgd[pgd_index(addr)]
    if e[0] == 0:
        return NULL
    e = &_next_table(pm, e)[pud_index(addr)]
    if e[0] == 0:
        return NULL
    return &_next_table(pm, e)[pmd_index(addr)]


cdef pte_t* pmd_offset_alloc(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil:
    """pud_alloc + pmd_alloc: pointer to the PMD entry, allocating tables; NULL on ENOMEM."""
    cdef pte_t* pgd = table_ptr(pm, mm.pgd)
    cdef pte_t* e = &pgd[pgd_index(addr)]
    cdef pfn_t t
    if e[0] == 0:
        t = pgtable_alloc(pm, mm, LEVEL_PUD)
        if t < 0:
            return NULL
        e[0] = mk_table_entry(t)
    e = &_next_table(pm, e)[pud_index(addr)]
    if e[0] == 0:
        t = pgtable_alloc(pm, mm, LEVEL_PMD)
        if t < 0:
            return NULL
        e[0] = mk_table_entry(t)
    return &_next_table(pm, e)[pmd_index(addr)]


cdef pte_t* pmd_walk_next(physmem_t* pm, mm_t* mm, uint64_t* addr, uint64_t end) noexcept nogil:
    """The range walks' descent (walk_pgd_range/walk_pud_range): advance *addr past
    absent PGD and PUD entries to the next PMD slot below end whose upper tables exist, and
    return a pointer to that PMD entry (which may itself be none); NULL once end is reached."""
    cdef pte_t* pgdt = table_ptr(pm, mm.pgd)
    cdef pte_t g, u
    while addr[0] < end:
        g = pgdt[pgd_index(addr[0])]
        if g == 0:
            addr[0] = pgd_addr_end(addr[0], end)
            continue
        u = table_ptr(pm, pte_pfn(g))[pud_index(addr[0])]
        if u == 0:
            addr[0] = pud_addr_end(addr[0], end)
            continue
        return &table_ptr(pm, pte_pfn(u))[pmd_index(addr[0])]
    return NULL


cdef pte_t* pte_offset(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t** pmdp) noexcept nogil:
    """Pointer to the PTE for addr, or NULL if a level above is none; *pmdp gets the PMD entry."""
    cdef pte_t* pmd = pmd_offset(pm, mm, addr)
    if pmdp != NULL:
        pmdp[0] = pmd
    if pmd == NULL or pmd[0] == 0:
        return NULL
    return &_next_table(pm, pmd)[pte_index(addr)]


cdef pte_t* pte_offset_alloc(physmem_t* pm, mm_t* mm, uint64_t addr, pte_t** pmdp) noexcept nogil:
    """__handle_mm_fault's pud_alloc/pmd_alloc plus pte_alloc; NULL on ENOMEM."""
    cdef pte_t* pmd = pmd_offset_alloc(pm, mm, addr)
    cdef pfn_t t
    if pmd == NULL:
        return NULL
    if pmd[0] == 0:
        t = pgtable_alloc(pm, mm, LEVEL_PTE)
        if t < 0:
            return NULL
        pmd[0] = mk_table_entry(t)
    if pmdp != NULL:
        pmdp[0] = pmd
    return &_next_table(pm, pmd)[pte_index(addr)]


cdef int tables_needed(physmem_t* pm, mm_t* mm, uint64_t addr) noexcept nogil:
    """How many tables pte_offset_alloc(addr) would allocate (0..3)."""
    cdef pte_t* pgd = table_ptr(pm, mm.pgd)
    cdef pte_t* e = &pgd[pgd_index(addr)]
    if e[0] == 0:
        return 3
    e = &_next_table(pm, e)[pud_index(addr)]
    if e[0] == 0:
        return 2
    e = &_next_table(pm, e)[pmd_index(addr)]
    if e[0] == 0:
        return 1
    return 0


cdef void zap_pte_entry(physmem_t* pm, mm_t* mm, pte_t e) noexcept nogil:
    """The per-entry part of zap_present_folio_ptes: rss, rmap and reference of one PTE."""
    cdef pfn_t pfn
    cdef uint32_t fl
    if is_swap_pte(e):
        swap_free(pm, swap_pte_slot(e))        # zap_nonpresent_ptes: free_swap_and_cache
        mm.rss[MM_SWAPENTS] -= 1
        return
    if e == 0 or not pte_present(e):
        return
    pfn = pte_pfn(e)
    fl = pm.flags[pfn]
    if pte_special(e) or (fl & PG_ZERO):
        return
    if fl & PG_ANON:
        mm.rss[MM_ANONPAGES] -= 1
        pm.mapcount[pfn] -= 1
        if pm.mapcount[pfn] == 0:
            pm.nr_anon_mapped -= 1
    else:
        if fl & PG_SWAPBACKED:
            mm.rss[MM_SHMEMPAGES] -= 1
        else:
            mm.rss[MM_FILEPAGES] -= 1
        if pte_dirty(e):
            pm.flags[pfn] |= PG_DIRTY
        pm.mapcount[pfn] -= 1
        if pm.mapcount[pfn] == 0:
            pm.nr_file_mapped -= 1
    put_page(pm, pfn)


# ---- free_pgd_range (mm/memory.c), P4D folded ----

cdef void free_pte_range(physmem_t* pm, mm_t* mm, pte_t* pmd) noexcept nogil:
    cdef pfn_t t = pte_pfn(pmd[0])
    pmd[0] = 0
    pm.pt_share[t] -= 1
    pgtable_free(pm, mm, t, LEVEL_PTE)


cdef void free_pmd_range(physmem_t* pm, mm_t* mm, pte_t* pud, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil:
    cdef uint64_t start = addr, nxt
    cdef pte_t* pmdt = _next_table(pm, pud)
    cdef pte_t* pmd
    while True:
        nxt = pmd_addr_end(addr, end)
        pmd = &pmdt[pmd_index(addr)]
        if pmd[0] != 0:
            free_pte_range(pm, mm, pmd)
        addr = nxt
        if addr == end:
            break
    start &= ~(PUD_SIZE - 1)
    if start < floor:
        return
    if ceiling:
        ceiling &= ~(PUD_SIZE - 1)
        if not ceiling:
            return
    if end - 1 > ceiling - 1:
        return
    cdef pfn_t t = pte_pfn(pud[0])
    pud[0] = 0
    pgtable_free(pm, mm, t, LEVEL_PMD)


cdef void free_pud_range(physmem_t* pm, mm_t* mm, pte_t* pgd, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil:
    cdef uint64_t start = addr, nxt
    cdef pte_t* pudt = _next_table(pm, pgd)
    cdef pte_t* pud
    while True:
        nxt = pud_addr_end(addr, end)
        pud = &pudt[pud_index(addr)]
        if pud[0] != 0:
            free_pmd_range(pm, mm, pud, addr, nxt, floor, ceiling)
        addr = nxt
        if addr == end:
            break
    start &= ~(PGDIR_SIZE - 1)
    if start < floor:
        return
    if ceiling:
        ceiling &= ~(PGDIR_SIZE - 1)
        if not ceiling:
            return
    if end - 1 > ceiling - 1:
        return
    cdef pfn_t t = pte_pfn(pgd[0])
    pgd[0] = 0
    pgtable_free(pm, mm, t, LEVEL_PUD)


cdef void free_pgd_range(physmem_t* pm, mm_t* mm, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil:
    """free_pgd_range: free the tables of [addr, end) that no address in [floor, ceiling) needs.

    ceiling == 0 means the top of the address space (USER_PGTABLES_CEILING).
    """
    cdef uint64_t nxt
    cdef pte_t* pgdt
    cdef pte_t* pgd
    addr &= ~(PMD_SIZE - 1)
    if addr < floor:
        addr += PMD_SIZE
        if not addr:
            return
    if ceiling:
        ceiling &= ~(PMD_SIZE - 1)
        if not ceiling:
            return
    if end - 1 > ceiling - 1:
        end -= PMD_SIZE
    if addr > end - 1:
        return
    pgdt = table_ptr(pm, mm.pgd)
    while True:
        nxt = pgd_addr_end(addr, end)
        pgd = &pgdt[pgd_index(addr)]
        if pgd[0] != 0:
            free_pud_range(pm, mm, pgd, addr, nxt, floor, ceiling)
        addr = nxt
        if addr == end:
            break


cdef void free_all_tables(physmem_t* pm, mm_t* mm) noexcept nogil:
    """exit_mmap's free_pgtables(0, USER_PGTABLES_CEILING) followed by pgd_free.

    The PTE tables must already be empty of accounted entries (zapped).
    """
    cdef pte_t* pgdt = table_ptr(pm, mm.pgd)
    cdef pte_t* pudt
    cdef pte_t* pmdt
    cdef int i, j, k
    cdef pfn_t t
    for i in range(512):
        if pgdt[i] == 0:
            continue
        pudt = _next_table(pm, &pgdt[i])
        for j in range(512):
            if pudt[j] == 0:
                continue
            pmdt = _next_table(pm, &pudt[j])
            for k in range(512):
                if pmdt[k] != 0:
                    free_pte_range(pm, mm, &pmdt[k])
            t = pte_pfn(pudt[j])
            pudt[j] = 0
            pgtable_free(pm, mm, t, LEVEL_PMD)
        t = pte_pfn(pgdt[i])
        pgdt[i] = 0
        pgtable_free(pm, mm, t, LEVEL_PUD)
    pgtable_free(pm, mm, mm.pgd, LEVEL_PGD)
    mm.pgd = -1


cdef class MMCore:
    """The mechanism half of an mm_struct: PGD, rss counters, pgtables_bytes.

    Parameters
    ----------
    phys : PhysMem
    mm_id : int
        A positive id (stored as the owner of the tables this mm allocates).
    """

    def __cinit__(self, PhysMem phys):
        self.phys = phys
        memset(&self.mm, 0, sizeof(mm_t))
        self.mm.id = phys.new_mm_id()
        self.mm.pgd = -1

    def __dealloc__(self):
        self._unregister()

    cdef void _unregister(self):
        if self.phys is not None and self.mm.id < self.phys.pm.mms_len:
            if self.phys.pm.mms[self.mm.id] == <void*>&self.mm:
                self.phys.pm.mms[self.mm.id] = NULL

    def pgd_alloc(self):
        """pgd_alloc: returns False (ENOMEM) if no frame is free. Registers the mm."""
        cdef pfn_t p = pgtable_alloc(&self.phys.pm, &self.mm, LEVEL_PGD)
        if p < 0:
            return False
        self.mm.pgd = p
        self.phys.pm.mms[self.mm.id] = <void*>&self.mm
        return True

    def release(self):
        """Leave the registry (after exit_mmap freed every table)."""
        self._unregister()

    @property
    def id(self):
        return self.mm.id

    @property
    def pgd(self):
        return self.mm.pgd

    @property
    def rss(self):
        """(file, anon, swapents, shmem) pages."""
        return (self.mm.rss[MM_FILEPAGES], self.mm.rss[MM_ANONPAGES],
                self.mm.rss[MM_SWAPENTS], self.mm.rss[MM_SHMEMPAGES])

    @property
    def pgtables_bytes(self):
        return self.mm.pgtables_bytes

    def walk(self, uint64_t addr):
        """(pgd_e, pud_e, pmd_e, pte_e) as seen by the MMU for addr; 0 where a level is none."""
        cdef physmem_t* pm = &self.phys.pm
        if self.mm.pgd < 0:
            return (0, 0, 0, 0)
        cdef pte_t* pgdt = table_ptr(pm, self.mm.pgd)
        cdef pte_t g = pgdt[pgd_index(addr)], u = 0, d = 0, t = 0
        if g:
            u = table_ptr(pm, pte_pfn(g))[pud_index(addr)]
            if u:
                d = table_ptr(pm, pte_pfn(u))[pmd_index(addr)]
                if d:
                    t = table_ptr(pm, pte_pfn(d))[pte_index(addr)]
        return (int(g), int(u), int(d), int(t))

    def free_pgd_range(self, uint64_t addr, uint64_t end, uint64_t floor, uint64_t ceiling):
        with nogil:
            free_pgd_range(&self.phys.pm, &self.mm, addr, end, floor, ceiling)

    def tables_needed(self, uint64_t addr):
        return tables_needed(&self.phys.pm, &self.mm, addr)

    def _debug_poke(self, str field, int64_t value, int index=0):
        """Overwrite a counter or a raw entry. For tests of the invariant checker only."""
        if field == "rss":
            self.mm.rss[index] = value
        elif field == "pgtables_bytes":
            self.mm.pgtables_bytes = value
        else:
            raise KeyError(field)

    def _debug_set_pmd(self, uint64_t addr, pte_t value):
        """Overwrite the PMD entry covering addr. For checker tests only."""
        cdef pte_t* p = pmd_offset(&self.phys.pm, &self.mm, addr)
        if p == NULL:
            raise KeyError("no PMD table for that address")
        p[0] = value

    def _debug_set_pte(self, uint64_t addr, pte_t value):
        """Overwrite the PTE mapping addr (the table must exist). For checker tests only."""
        cdef pte_t* p = pte_offset(&self.phys.pm, &self.mm, addr, NULL)
        if p == NULL:
            raise KeyError("no PTE table for that address")
        p[0] = value


    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self):
        """The mm_t fields as a JSON-able dict (id, pgd, rss, pgtables_bytes)."""
        return {"id": self.mm.id, "pgd": self.mm.pgd,
                "rss": [self.mm.rss[i] for i in range(NR_MM_COUNTERS)],
                "pgtables_bytes": self.mm.pgtables_bytes}

    def restore_state(self, dict s):
        """Take the fields dump_state gave (on a fresh MMCore of a restored PhysMem) and,
        if the mm has a PGD, register it under its saved id. ValueError if they are bad."""
        cdef int64_t mm_id = s["id"], pgd = s["pgd"]
        cdef int i
        rss = s["rss"]
        if not 1 <= mm_id < (1 << 31) - 1:
            raise ValueError(f"bad mm id {mm_id}")
        if not -1 <= pgd < self.phys.pm.nframes:
            raise ValueError(f"mm {mm_id}: PGD {pgd} outside memory")
        if len(rss) != NR_MM_COUNTERS:
            raise ValueError(f"mm {mm_id}: {len(rss)} rss counters")
        self.phys._mm_slot(mm_id)
        if pgd >= 0 and self.phys.pm.mms[mm_id] != NULL:
            raise ValueError(f"two address spaces with mm id {mm_id}")
        self._unregister()
        self.mm.id = <int32_t>mm_id
        self.mm.pgd = pgd
        for i in range(NR_MM_COUNTERS):
            self.mm.rss[i] = rss[i]
        self.mm.pgtables_bytes = s["pgtables_bytes"]
        if pgd >= 0:
            self.phys.pm.mms[mm_id] = <void*>&self.mm

    def validate_tables(self):
        """A loaded snapshot's page tables are safe to walk: every upper-level entry points
        at a table frame inside memory (no huge entries), every present PTE at a non-table
        frame inside memory. Raises ValueError naming the first bad entry."""
        cdef physmem_t* pm = &self.phys.pm
        if self.mm.pgd < 0:
            return
        if not (pm.flags[self.mm.pgd] & PG_TABLE):
            raise ValueError(f"mm {self.mm.id}: PGD frame {self.mm.pgd} is not a page table")
        bad = _first_bad_entry(pm, self.mm.pgd, 0, ())
        if bad is not None:
            where, e = bad
            raise ValueError(f"mm {self.mm.id}: bad {_ENTRY_NAMES[len(where) - 1]} "
                             f"{'/'.join(map(str, where))}: {e:#x}")


_ENTRY_NAMES = ("PGD entry", "PUD entry", "PMD entry", "PTE")


cdef object _first_bad_entry(physmem_t* pm, pfn_t table, int level, tuple path):
    """validate_tables' walk of one table (level 0 = PGD ... 3 = PTE table) and the tables
    below it: (indexes, entry) of the first bad entry, or None."""
    cdef pte_t* tab = table_ptr(pm, table)
    cdef pte_t e
    cdef pfn_t t
    cdef int i
    for i in range(512):
        e = tab[i]
        if e == 0:
            continue
        t = pte_pfn(e)
        if level == 3:
            if pte_present(e) and (t >= pm.nframes or pm.flags[t] & PG_TABLE):
                return path + (i,), e
            continue
        if t >= pm.nframes or not (pm.flags[t] & PG_TABLE) or e & _bit(BIT_PSE):
            return path + (i,), e
        bad = _first_bad_entry(pm, t, level + 1, path + (i,))
        if bad is not None:
            return bad
    return None


cdef int vma_from_py(vma_t* v, object vma) except -1:
    """Flatten a Python VMA (mmemu.vma.VMA) into the struct the kernels read."""
    memset(v, 0, sizeof(vma_t))
    v.start = vma.start
    v.end = vma.end
    v.flags = vma.flags
    v.prot = vma.page_prot
    v.pgoff = vma.pgoff
    v.anon_vma = 1 if vma.anon_vma is not None else 0
    obj = vma.backing
    if obj is not None:
        v.has_vm_ops = 1
        v.cache = &(<PageCache?>obj.cache).xa
        v.cache_pages = obj.npages
        v.swapbacked = 1 if obj.swapbacked else 0
    return 0

