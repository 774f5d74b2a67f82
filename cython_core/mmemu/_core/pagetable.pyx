# cython: language_level=3
"""x86-64 4-level page tables held in emulated frames: look up, allocate, free.

Models pgd_offset/pud_alloc/pmd_alloc/pte_alloc (include/linux/mm.h, mm/memory.c) and
free_pgd_range/free_pud_range/free_pmd_range/free_pte_range (mm/memory.c) as a
walk_page_range (pagewalk.pxd). The P4D level is folded, as on 4-level x86-64.
"""
cimport cython
from libc.stdint cimport int32_t, uint32_t, int64_t, uint64_t
from libc.stdlib cimport realloc
from libc.string cimport memset
import reprlib

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, alloc_frame, free_frame, table_ptr
from mmemu._core.pgtable cimport (
    set_pte_at, set_pmd_at, pmd_populate, pmd_clear, pud_populate, pud_clear, pgd_populate,
    pgd_clear, set_pgd,
)
from mmemu._core.pagewalk cimport (
    mm_walk, mm_walk_ops, walk_page_range, walk_pud_range, walk_pmd_range, ACTION_CONTINUE,
    WALK_ALL_END, walk_entry_path,
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
        pgd_populate(pm, e, t)
    e = &_next_table(pm, e)[pud_index(addr)]
    if e[0] == 0:
        t = pgtable_alloc(pm, mm, LEVEL_PMD)
        if t < 0:
            return NULL
        pud_populate(pm, e, t)
    return &_next_table(pm, e)[pmd_index(addr)]


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
        pmd_populate(pm, pmd, t)
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


# ---- free_pgd_range (mm/memory.c), P4D folded, as a walk_page_range ----

cdef struct free_pgtables_range:
    uint64_t floor
    uint64_t ceiling


cdef inline bint _table_may_go(uint64_t start, uint64_t end, uint64_t floor, uint64_t ceiling,
                               uint64_t size) noexcept nogil:
    """free_pmd_range / free_pud_range's test: after freeing the tables below [start, end),
    may the table covering start's `size` span go too (nothing in [floor, ceiling) needs it)?"""
    start &= ~(size - 1)
    if start < floor:
        return False
    if ceiling:
        ceiling &= ~(size - 1)
        if not ceiling:
            return False
    return not (end - 1 > ceiling - 1)


cdef int free_pte_range(pte_t* pmd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """free_pte_range (pmd_entry): unlink and free the PTE table under a PMD entry."""
    cdef pfn_t t = pte_pfn(pmd[0])
    pmd_clear(walk.pm, pmd)
    walk.pm.pt_share[t] -= 1
    pgtable_free(walk.pm, walk.mm, t, LEVEL_PTE)
    return 0


cdef int free_pmd_range(pte_t* pud, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """free_pmd_range (pud_entry): the PTE tables of [addr, next), then the PMD table."""
    cdef free_pgtables_range* r = <free_pgtables_range*>walk.private
    cdef pfn_t t
    walk_pmd_range(pud, addr, next, walk)
    walk.action = ACTION_CONTINUE
    if _table_may_go(addr, next, r.floor, r.ceiling, PUD_SIZE):
        t = pte_pfn(pud[0])
        pud_clear(walk.pm, pud)
        pgtable_free(walk.pm, walk.mm, t, LEVEL_PMD)
    return 0


cdef int free_pud_range(pte_t* pgd, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """free_pud_range (pgd_entry): the PMD tables of [addr, next), then the PUD table."""
    cdef free_pgtables_range* r = <free_pgtables_range*>walk.private
    cdef pfn_t t
    walk_pud_range(pgd, addr, next, walk)
    walk.action = ACTION_CONTINUE
    if _table_may_go(addr, next, r.floor, r.ceiling, PGDIR_SIZE):
        t = pte_pfn(pgd[0])
        pgd_clear(walk.pm, pgd)
        pgtable_free(walk.pm, walk.mm, t, LEVEL_PUD)
    return 0


cdef mm_walk_ops free_pgtables_ops
free_pgtables_ops.pgd_entry = free_pud_range
free_pgtables_ops.pud_entry = free_pmd_range
free_pgtables_ops.pmd_entry = free_pte_range


cdef void free_pgd_range(physmem_t* pm, mm_t* mm, uint64_t addr, uint64_t end,
                         uint64_t floor, uint64_t ceiling) noexcept nogil:
    """free_pgd_range: free the tables of [addr, end) that no address in [floor, ceiling) needs.

    ceiling == 0 means the top of the address space (USER_PGTABLES_CEILING).
    """
    cdef free_pgtables_range r
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
    r.floor = floor
    r.ceiling = ceiling
    walk_page_range(pm, mm, addr, end, &free_pgtables_ops, &r)


cdef void free_all_tables(physmem_t* pm, mm_t* mm) noexcept nogil:
    """exit_mmap's free_pgtables(0, USER_PGTABLES_CEILING) followed by pgd_free.

    The PTE tables must already be empty of accounted entries (zapped).
    """
    cdef free_pgtables_range r
    r.floor = r.ceiling = 0
    walk_page_range(pm, mm, 0, WALK_ALL_END, &free_pgtables_ops, &r)
    pgtable_free(pm, mm, mm.pgd, LEVEL_PGD)
    mm.pgd = -1


# ---- validate_tables' walk: every entry checked before the walk follows it ----

cdef struct bad_entry:
    int level           # 0 PGD entry .. 3 PTE of the first bad entry; -1: none
    uint64_t addr
    pte_t entry


cdef inline int _bad(mm_walk* walk, int level, uint64_t addr, pte_t e) noexcept nogil:
    cdef bad_entry* b = <bad_entry*>walk.private
    b.level = level
    b.addr = addr
    b.entry = e
    return 1


cdef inline bint _bad_link(physmem_t* pm, pte_t e, bint cow) noexcept nogil:
    """An upper-level entry that is not _PAGE_TABLE (cow: also _PAGE_TABLE without RW, a
    COW-shared table) pointing at a page-table frame in use inside memory (a snapshot holds
    no huge entries)."""
    cdef pfn_t t = pte_pfn(e)
    cdef pte_t bits = e & ~PTE_PFN_MASK(), table = mk_table_entry(0)
    if bits != table and not (cow and bits == pte_wrprotect(table)):
        return True
    return t >= pm.nframes or (pm.flags[t] & (PG_USED | PG_TABLE)) != PG_USED | PG_TABLE


cdef int _validate_pgd(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    return _bad(walk, 0, addr, e[0]) if _bad_link(walk.pm, e[0], True) else 0


cdef int _validate_pud(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    return _bad(walk, 1, addr, e[0]) if _bad_link(walk.pm, e[0], True) else 0


cdef inline bint _bad_huge(physmem_t* pm, pte_t e) noexcept nogil:
    """A huge PMD (huge_memory.pyx) that does not map, with only the bits mmemu sets, the
    head of a THP folio, of a PMD-sized page-cache folio or the huge zero folio."""
    cdef pfn_t t = pte_pfn(e)
    cdef uint32_t f
    if e & ~(PTE_PFN_MASK() | _PTE_BITS | _bit(BIT_PSE)) or t >= pm.nframes or t & 511:
        return True
    f = pm.flags[t] & (PG_USED | PG_HEAD | PG_ANON | PG_FILE | PG_TABLE)
    return t != pm.huge_zero_pfn and f != PG_USED | PG_HEAD | PG_ANON and \
        f != PG_USED | PG_HEAD | PG_FILE


cdef int _validate_pmd(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    if pmd_leaf(e[0]):
        return _bad(walk, 2, addr, e[0]) if _bad_huge(walk.pm, e[0]) else 0
    return _bad(walk, 2, addr, e[0]) if _bad_link(walk.pm, e[0], True) else 0


cdef enum:
    _SWP_LOW = 0x1FF        # a swap entry's bits 0-8 (P, PROTNONE and the flags) are clear

cdef pte_t _SWP_HIGH = (<pte_t>0x1F) << 59      # ... and so is its type (bits 59-63: type 0)
# the bits a present PTE can have (PROTNONE: P clear, pte_present all the same)
cdef pte_t _PTE_BITS = (_bit(BIT_PRESENT) | _bit(BIT_RW) | _bit(BIT_USER) | _bit(BIT_ACCESSED)
                        | _bit(BIT_DIRTY) | _bit(BIT_PROTNONE) | _bit(BIT_SPECIAL)
                        | _bit(BIT_SOFT_DIRTY) | _bit(BIT_NX))


cdef int _validate_pte(pte_t* e, uint64_t addr, uint64_t next, mm_walk* walk) noexcept nogil:
    """A present PTE must carry only the bits mmemu sets and map a frame inside memory that
    is not a page table; a non-present one is none, the guard marker or a swap entry of
    type 0 (x86-64 encoding: bits 0-8 and 59-63 clear). The one per-PTE callback of the
    core: loading a snapshot and the checker are not hot paths."""
    cdef pte_t v = e[0]
    cdef pfn_t t
    if v == 0 or is_guard_pte(v):
        return 0
    if not pte_present(v):
        return _bad(walk, 3, addr, v) if v & (_SWP_LOW | _SWP_HIGH) else 0
    t = pte_pfn(v)
    if v & ~(PTE_PFN_MASK() | _PTE_BITS) or t >= walk.pm.nframes or walk.pm.flags[t] & PG_TABLE:
        return _bad(walk, 3, addr, v)
    return 0


cdef mm_walk_ops validate_ops
validate_ops.pgd_entry = _validate_pgd
validate_ops.pud_entry = _validate_pud
validate_ops.pmd_entry = _validate_pmd
validate_ops.pte_entry = _validate_pte


# ---- the registry of live mms (physmem_t.mms): who else holds a shared table ----

cdef int mm_register(physmem_t* pm, mm_t* mm) noexcept nogil:
    """Add mm to the registry (0), or -1 if the host has no memory for it."""
    cdef int64_t cap
    cdef void** p
    if pm.mms_len == pm.mms_cap:
        cap = max(64, 2 * pm.mms_cap)
        p = <void**>realloc(pm.mms, cap * sizeof(void*))
        if p == NULL:
            return -1
        pm.mms = p
        pm.mms_cap = cap
    mm.slot = pm.mms_len
    pm.mms[pm.mms_len] = <void*>mm
    pm.mms_len += 1
    return 0


cdef void mm_unregister(physmem_t* pm, mm_t* mm) noexcept nogil:
    """Take mm out of the registry (the last entry moves into its slot)."""
    cdef mm_t* last
    if mm.slot < 0:
        return
    pm.mms_len -= 1
    last = <mm_t*>pm.mms[pm.mms_len]
    pm.mms[mm.slot] = <void*>last
    last.slot = mm.slot
    mm.slot = -1


@cython.no_gc_clear     # __dealloc__ needs phys to leave the registry
cdef class MMCore:
    """The mechanism half of an mm_struct: PGD, rss counters, pgtables_bytes.

    Parameters
    ----------
    phys : PhysMem
    state : dict, optional
        What dump_state gave, for a machine being restored (mmemu.snapshot): the mm takes
        its saved id, PGD, rss and pgtables_bytes and joins the registry of live mms.
        Without it the mm gets a new id (PhysMem.new_mm_id, stored as the owner of the
        tables it allocates) and no PGD until pgd_alloc.
    """

    def __cinit__(self, PhysMem phys, dict state=None):
        self.phys = phys
        memset(&self.mm, 0, sizeof(mm_t))
        self.mm.pgd = -1
        self.mm.slot = -1
        if state is None:
            self.mm.id = phys.new_mm_id()
        else:
            self._restore_state(state)

    def __dealloc__(self):
        self._unregister()

    cdef void _unregister(self):
        if self.phys is not None:
            mm_unregister(&self.phys.pm, &self.mm)

    def pgd_alloc(self):
        """pgd_alloc: returns False (ENOMEM) if no frame is free (or no host memory for the
        registry). Registers the mm."""
        cdef pfn_t p = pgtable_alloc(&self.phys.pm, &self.mm, LEVEL_PGD)
        if p < 0:
            return False
        if mm_register(&self.phys.pm, &self.mm) < 0:
            pgtable_free(&self.phys.pm, &self.mm, p, LEVEL_PGD)
            return False
        self.mm.pgd = p
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

    @property
    def nr_deposited(self):
        """PTE tables deposited for huge PMDs (pgtable_trans_huge_deposit)."""
        return self.mm.nr_deposited

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
                if d and not pmd_leaf(d):
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
        set_pmd_at(&self.phys.pm, p, value)

    def _debug_set_pgd(self, uint64_t addr, pte_t value):
        """Overwrite the PGD entry covering addr. For checker tests only."""
        cdef pte_t* path[3]
        if walk_entry_path(&self.phys.pm, &self.mm, addr, path) == 0:
            raise KeyError("no PGD")
        set_pgd(&self.phys.pm, path[0], value)

    def _debug_set_pte(self, uint64_t addr, pte_t value):
        """Overwrite the PTE mapping addr (the table must exist). For checker tests only."""
        cdef pte_t* p = pte_offset(&self.phys.pm, &self.mm, addr, NULL)
        if p == NULL:
            raise KeyError("no PTE table for that address")
        set_pte_at(&self.phys.pm, p, value)

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self):
        """The mm_t fields as a JSON-able dict (id, pgd, rss, pgtables_bytes)."""
        return {"id": self.mm.id, "pgd": self.mm.pgd,
                "rss": [self.mm.rss[i] for i in range(NR_MM_COUNTERS)],
                "pgtables_bytes": self.mm.pgtables_bytes}

    cdef _restore_state(self, dict s):
        """The fields dump_state gave, validated against the restored PhysMem: an id in
        [1, next_mm_id] no live mm has, a PGD (a page-table frame in use) no live mm has,
        rss counters and pgtables_bytes that are not negative and no more than the tables
        of this memory could hold, page tables safe to walk (validate_tables). Then the mm
        joins the registry. ValueError otherwise."""
        cdef physmem_t* pm = &self.phys.pm
        cdef int64_t i, limit = 512 * pm.nframes
        cdef mm_t* o
        mm_id = _state_int(s, "id", 1, self.phys._next_mm_id)
        pgd = _state_int(s, "pgd", -(1 << 62), 1 << 62)
        if not 0 <= pgd < pm.nframes:
            raise ValueError(f"mm {mm_id}: PGD {pgd} outside memory")
        rss = s.get("rss")
        if not isinstance(rss, list) or len(rss) != NR_MM_COUNTERS:
            raise ValueError(f"mm {mm_id}: {len(rss) if isinstance(rss, list) else 'no'} rss "
                             f"counters, not {NR_MM_COUNTERS}")
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= limit for x in rss):
            raise ValueError(f"mm {mm_id}: rss counters must be integers in [0, {limit}], "
                             f"not {reprlib.repr(rss)}")
        ptb = _state_int(s, "pgtables_bytes", 0, 4096 * pm.nframes)
        if ptb % 4096:
            raise ValueError(f"mm {mm_id}: pgtables_bytes {ptb} is not a number of tables")
        if (pm.flags[pgd] & (PG_USED | PG_TABLE)) != PG_USED | PG_TABLE:
            raise ValueError(f"mm {mm_id}: PGD frame {pgd} is not a page table in use")
        for i in range(pm.mms_len):
            o = <mm_t*>pm.mms[i]
            if o.id == mm_id:
                raise ValueError(f"two address spaces with mm id {mm_id}")
            if o.pgd == pgd:
                raise ValueError(f"mm {o.id} and mm {mm_id} share the PGD frame {pgd}")
        self.mm.id = <int32_t>mm_id
        self.mm.pgd = pgd
        for i in range(NR_MM_COUNTERS):
            self.mm.rss[i] = rss[i]
        self.mm.pgtables_bytes = ptb
        try:
            self.validate_tables()
        except ValueError:
            self.mm.pgd = -1
            raise
        if mm_register(pm, &self.mm) < 0:
            raise MemoryError("no host memory for the registry of mms")

    def validate_tables(self):
        """The page tables are safe to walk: the PGD is a page-table frame in use, every
        upper-level entry points at one with the encoding mmemu gives it (no huge entries),
        every present PTE maps a non-table frame inside memory with the bits mmemu sets,
        every other PTE is none, the guard marker or a swap entry. Raises ValueError naming
        the first bad entry (loading a snapshot and the checker walk nothing before this)."""
        cdef physmem_t* pm = &self.phys.pm
        if self.mm.pgd < 0:
            return
        if self.mm.pgd >= pm.nframes or \
                (pm.flags[self.mm.pgd] & (PG_USED | PG_TABLE)) != PG_USED | PG_TABLE:
            raise ValueError(f"mm {self.mm.id}: PGD frame {self.mm.pgd} is not a page table")
        cdef bad_entry bad
        bad.level = -1
        walk_page_range(pm, &self.mm, 0, WALK_ALL_END, &validate_ops, &bad)
        if bad.level >= 0:
            where = (pgd_index(bad.addr), pud_index(bad.addr), pmd_index(bad.addr),
                     pte_index(bad.addr))[:bad.level + 1]
            raise ValueError(f"mm {self.mm.id}: bad {_ENTRY_NAMES[bad.level]} "
                             f"{'/'.join(map(str, where))}: {bad.entry:#x}")


_ENTRY_NAMES = ("PGD entry", "PUD entry", "PMD entry", "PTE")


def _state_int(dict d, str key, lo, hi):
    """d[key], an int in [lo, hi] (ValueError otherwise)."""
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"mm {key!r} must be an integer in [{lo}, {hi}], not {reprlib.repr(v)}")
    return v


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

