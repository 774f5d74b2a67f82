# Shared types, x86-64 entry bits and frame flags (arch/x86/include/asm/pgtable_types.h).
from libc.stdint cimport int64_t, uint64_t

ctypedef uint64_t pte_t
ctypedef int64_t pfn_t

cdef extern from *:
    """
    #ifdef MMEMU_DEBUG
    #define MMEMU_DEBUG_BUILD 1
    #else
    #define MMEMU_DEBUG_BUILD 0
    #endif
    #define MM_PMD_SIZE (1ULL << 21)
    #define MM_PUD_SIZE (1ULL << 30)
    #define MM_PGDIR_SIZE (1ULL << 39)
    """
    const int MMEMU_DEBUG_BUILD
    const uint64_t PMD_SIZE "MM_PMD_SIZE"
    const uint64_t PUD_SIZE "MM_PUD_SIZE"
    const uint64_t PGDIR_SIZE "MM_PGDIR_SIZE"

# ---- geometry: 4 KiB pages, 4 levels (P4D folded) ----
cdef enum:
    PAGE_SHIFT = 12
    PAGE_SIZE = 4096
    PTRS_PER_TABLE = 512
    PMD_SHIFT = 21
    PUD_SHIFT = 30
    PGDIR_SHIFT = 39

# ---- entry bits (pgtable_types.h) ----
cdef enum:
    BIT_PRESENT = 0
    BIT_RW = 1
    BIT_USER = 2
    BIT_ACCESSED = 5
    BIT_DIRTY = 6
    BIT_PSE = 7
    BIT_PROTNONE = 8      # same bit as _PAGE_GLOBAL; means PROTNONE when P is clear
    BIT_SPECIAL = 9       # _PAGE_SOFTW1
    BIT_SOFT_DIRTY = 11   # _PAGE_SOFTW3
    BIT_NX = 63

cdef inline pte_t _bit(int b) noexcept nogil:
    return (<pte_t>1) << b

# PFN field: bits 12..51
cdef inline pte_t PTE_PFN_MASK() noexcept nogil:
    return (((<pte_t>1) << 52) - 1) & ~(<pte_t>(PAGE_SIZE - 1))

cdef inline pfn_t pte_pfn(pte_t e) noexcept nogil:
    return <pfn_t>((e & PTE_PFN_MASK()) >> PAGE_SHIFT)

cdef inline pte_t mk_pte(pfn_t pfn, pte_t prot) noexcept nogil:
    return ((<pte_t>pfn) << PAGE_SHIFT) | (prot & ~PTE_PFN_MASK())

cdef inline bint pte_present(pte_t e) noexcept nogil:
    # pte_present(): P or PROTNONE
    return (e & (_bit(BIT_PRESENT) | _bit(BIT_PROTNONE))) != 0

# A guard-region PTE marker (PTE_MARKER_GUARD): not present, not PROTNONE, no RW bit, so
# pte_present() is false and write-protecting it changes nothing. mmemu's own encoding.
cdef enum:
    GUARD_PTE = 0x400

cdef inline bint is_guard_pte(pte_t e) noexcept nogil:
    return e == GUARD_PTE

# A swap entry (x86-64 __swp_entry, type 0): the inverted offset in bits 9..58, type in
# 59..63, P and PROTNONE clear. Any other non-present non-zero PTE but the guard marker.
cdef inline bint is_swap_pte(pte_t e) noexcept nogil:
    return e != 0 and (e & ((<pte_t>1) | ((<pte_t>1) << 8))) == 0 and e != GUARD_PTE

cdef inline pte_t mk_swap_pte(int64_t slot) noexcept nogil:
    return ((~(<uint64_t>slot)) << 14) >> 5

cdef inline int64_t swap_pte_slot(pte_t e) noexcept nogil:
    return <int64_t>((~(e << 5)) >> 14)

cdef inline bint pte_write(pte_t e) noexcept nogil:
    return (e & _bit(BIT_RW)) != 0

cdef inline bint pte_dirty(pte_t e) noexcept nogil:
    return (e & _bit(BIT_DIRTY)) != 0

cdef inline bint pte_young(pte_t e) noexcept nogil:
    return (e & _bit(BIT_ACCESSED)) != 0

cdef inline bint pte_special(pte_t e) noexcept nogil:
    return (e & _bit(BIT_SPECIAL)) != 0

cdef inline pte_t pte_wrprotect(pte_t e) noexcept nogil:
    return e & ~_bit(BIT_RW)

cdef inline pte_t pte_mkwrite(pte_t e) noexcept nogil:
    return e | _bit(BIT_RW)

cdef inline pte_t pte_mkdirty(pte_t e) noexcept nogil:
    return e | _bit(BIT_DIRTY)

cdef inline pte_t pte_mkyoung(pte_t e) noexcept nogil:
    return e | _bit(BIT_ACCESSED)

# Bits that pte_modify() keeps from the old entry (_PAGE_CHG_MASK): PFN, A, D, special, soft-dirty.
cdef inline pte_t pte_modify(pte_t e, pte_t newprot) noexcept nogil:
    cdef pte_t keep = PTE_PFN_MASK() | _bit(BIT_ACCESSED) | _bit(BIT_DIRTY) | _bit(BIT_SPECIAL) | _bit(BIT_SOFT_DIRTY)
    return (e & keep) | (newprot & ~keep)

# A leaf (huge) upper-level entry: PSE set (pmd_leaf / pud_leaf); it maps memory, no table.
cdef inline bint pmd_leaf(pte_t e) noexcept nogil:
    return (e & _bit(BIT_PSE)) != 0

# Upper-level entry pointing at a table: _PAGE_TABLE = P|RW|USER|ACCESSED|DIRTY
cdef inline pte_t mk_table_entry(pfn_t pfn) noexcept nogil:
    return ((<pte_t>pfn) << PAGE_SHIFT) | _bit(BIT_PRESENT) | _bit(BIT_RW) | _bit(BIT_USER) | _bit(BIT_ACCESSED) | _bit(BIT_DIRTY)

cdef inline uint64_t pmd_addr_end(uint64_t addr, uint64_t end) noexcept nogil:
    cdef uint64_t b = (addr + PMD_SIZE) & ~(PMD_SIZE - 1)
    return b if b - 1 < end - 1 else end

cdef inline uint64_t pud_addr_end(uint64_t addr, uint64_t end) noexcept nogil:
    cdef uint64_t b = (addr + PUD_SIZE) & ~(PUD_SIZE - 1)
    return b if b - 1 < end - 1 else end

cdef inline uint64_t pgd_addr_end(uint64_t addr, uint64_t end) noexcept nogil:
    cdef uint64_t b = (addr + PGDIR_SIZE) & ~(PGDIR_SIZE - 1)
    return b if b - 1 < end - 1 else end

cdef inline int pgd_index(uint64_t addr) noexcept nogil:
    return <int>((addr >> PGDIR_SHIFT) & 511)

cdef inline int pud_index(uint64_t addr) noexcept nogil:
    return <int>((addr >> PUD_SHIFT) & 511)

cdef inline int pmd_index(uint64_t addr) noexcept nogil:
    return <int>((addr >> PMD_SHIFT) & 511)

cdef inline int pte_index(uint64_t addr) noexcept nogil:
    return <int>((addr >> PAGE_SHIFT) & 511)

# ---- frame flags ("struct page" flags) ----
cdef enum:
    PG_USED = 1 << 0          # allocated (not on a free list, not never-used)
    PG_ANON = 1 << 1          # anonymous page (PageAnon)
    PG_FILE = 1 << 2          # page-cache page (file or shmem)
    PG_SWAPBACKED = 1 << 3    # shmem page (counts in RssShmem / Shmem)
    PG_TABLE = 1 << 4         # page-table page (PageTable)
    PG_ZERO = 1 << 5          # the shared zero page
    PG_HASDATA = 1 << 6       # frame bytes may be non-zero: zero before reuse
    PG_ANON_EXCLUSIVE = 1 << 7  # PageAnonExclusive
    PG_DIRTY = 1 << 8         # folio dirty (page cache)
    PG_RESERVED = 1 << 9      # never freed (zero page)
    PG_BUDDY = 1 << 10        # head of a free block on a buddy free list (PageBuddy)
    PG_ORDER_SHIFT = 16       # ... its order in flag bits 16..19 (page->private)
    PG_HEAD = 1 << 11         # head of an order-9 folio, anonymous or page cache (PageHead)
    PG_TAIL = 1 << 12         # one of its 511 tail pages (PageTail)
    PG_PARTIALLY_MAPPED = 1 << 13  # the folio is on the deferred split queue (folio_test_partially_mapped)
    PG_COMPOUND = PG_HEAD | PG_TAIL

# ---- transparent huge pages (include/linux/huge_mm.h) ----
cdef enum:
    HPAGE_PMD_ORDER = 9
    HPAGE_PMD_NR = 512

cdef inline pfn_t compound_head(pfn_t pfn) noexcept nogil:
    """compound_head of a page of an order-9 folio (blocks are aligned to their size)."""
    return pfn & ~(<pfn_t>(HPAGE_PMD_NR - 1))

# ---- rss counters (mm_types.h) ----
cdef enum:
    MM_FILEPAGES = 0
    MM_ANONPAGES = 1
    MM_SWAPENTS = 2
    MM_SHMEMPAGES = 3
    NR_MM_COUNTERS = 4

# ---- vm_flags (include/linux/mm.h values) ----
cdef enum:
    VM_READ = 0x1
    VM_WRITE = 0x2
    VM_EXEC = 0x4
    VM_SHARED = 0x8
    VM_MAYREAD = 0x10
    VM_MAYWRITE = 0x20
    VM_MAYEXEC = 0x40
    VM_MAYSHARE = 0x80
    VM_GROWSDOWN = 0x100

cdef inline bint is_cow_mapping(uint64_t vm_flags) noexcept nogil:
    return (vm_flags & (VM_SHARED | VM_MAYWRITE)) == VM_MAYWRITE

# ---- vmstat event counters (indices into physmem_t.ev) ----
cdef enum:
    EV_PGFAULT = 0             # every handled fault
    EV_FAULT_ZERO_PAGE = 1     # read fault mapped the zero page
    EV_FAULT_ANON = 2          # do_anonymous_page allocated a zeroed page
    EV_FAULT_SHMEM = 3         # fault mapped a shmem/file page-cache page
    EV_FAULT_SHMEM_ALLOC = 4   # ... and allocated it in the cache
    EV_COW_FAULT = 5           # wp_page_copy
    EV_COW_ZERO = 6            # wp_page_copy from the zero page (new zeroed page, no copy)
    EV_WP_REUSE = 7            # do_wp_page reused the page in place
    EV_WP_SHARED = 8           # write fault made a shared PTE writable
    EV_SPURIOUS = 9            # fault on an already sufficient PTE (A/D update only)
    EV_PAGES_COPIED = 10       # 4 KiB page copies (COW)
    EV_PAGES_ZEROED = 11       # frames zeroed for reuse
    EV_PGALLOC = 12            # data frames allocated
    EV_PGFREE = 13             # data frames freed
    EV_PT_ALLOC = 14           # page-table pages allocated (all levels incl. PGD)
    EV_PT_FREE = 15            # page-table pages freed
    EV_FORK_PTES_COPIED = 16   # present/non-none PTEs copied by copy_pte_range
    EV_FORK_PTE_TABLES_COPIED = 17  # PTE tables allocated by copy_pte_range
    EV_FORK_PTES_WRPROTECTED = 18   # PTEs write-protected at fork
    EV_PTES_ZAPPED = 19        # non-none PTEs cleared by zap
    EV_PTES_PROTECTED = 20     # PTEs changed by change_protection
    EV_PTE_TABLES_SHARED = 21  # COW page table: tables shared at fork
    EV_PTE_TABLES_DUPLICATED = 22  # COW page table: tables copied at break
    EV_PTE_TABLES_REUSED = 23  # COW page table: break found share count 1
    EV_PTE_TABLE_ENTRIES_COPIED = 24  # COW page table: entries copied by breaks
    EV_TLB_LOCAL_FLUSH_ALL = 25    # NR_TLB_LOCAL_FLUSH_ALL (CONFIG_DEBUG_TLBFLUSH; tlb.pxd)
    EV_PTES_MOVED = 26         # mremap: PTEs moved
    EV_PMDS_MOVED = 27         # mremap: whole PTE tables relinked
    EV_SWAPIN = 28             # do_swap_page: a page read back from the emulated swap device
    EV_SWAPOUT = 29            # swap_out: a page written to the emulated swap device
    EV_TLB_LOCAL_FLUSH_ONE = 30    # NR_TLB_LOCAL_FLUSH_ONE: pages flushed one by one (tlb.pxd)
    EV_TLB_REMOTE_FLUSH = 31       # NR_TLB_REMOTE_FLUSH: shootdowns sent (0 with one CPU)
    EV_TLB_REMOTE_FLUSH_RECEIVED = 32  # NR_TLB_REMOTE_FLUSH_RECEIVED (0 with one CPU)
    EV_FORK_PTES_ACCOUNTED = 33  # eager COW page table: entries accounted at fork
    EV_THP_FAULT_ALLOC = 34    # do_huge_pmd_anonymous_page mapped a new THP
    EV_THP_FAULT_FALLBACK = 35  # ... found no order-9 block: base pages instead
    EV_THP_ZERO_PAGE_ALLOC = 36  # the huge zero page was allocated
    EV_THP_SPLIT_PMD = 37      # __split_huge_pmd: a huge PMD became a PTE table
    EV_THP_DEFERRED_SPLIT_PAGE = 38  # a THP became partially mapped (deferred_split_folio)
    EV_PMD_TABLES_SHARED = 39      # whole-table COW: PMD tables shared at fork
    EV_PMD_TABLES_DUPLICATED = 40  # whole-table COW: shared PMD tables copied at break
    EV_PMD_TABLES_REUSED = 41      # whole-table COW: a PMD-table break found share count 1
    EV_PUD_TABLES_SHARED = 42      # whole-table COW: PUD tables shared at fork
    EV_PUD_TABLES_DUPLICATED = 43  # whole-table COW: shared PUD tables copied at break
    EV_PUD_TABLES_REUSED = 44      # whole-table COW: a PUD-table break found share count 1
    EV_THP_COLLAPSE_ALLOC = 45     # MADV_COLLAPSE allocated an order-9 folio (alloc_charge_folio)
    EV_THP_COLLAPSE_ALLOC_FAILED = 46  # ... found no order-9 block (ENOMEM)
    EV_THP_FILE_MAPPED = 47    # do_set_pmd mapped a page-cache folio with a huge PMD
    EV_THP_SPLIT_PAGE_FAILED = 48  # a truncate could not split a (dirty) large page-cache folio
    EV_THP_SPLIT_PAGE = 49     # a large folio was split into single pages (split_folio)
    NR_EVENTS = 50             # every slot has a name and a help text (_core/constants.pyx)

# ---- fault results ----
cdef enum:
    FAULT_OK = 0
    FAULT_OOM = 1       # VM_FAULT_OOM: no frame for a page or a table
    FAULT_SIGBUS = 2    # VM_FAULT_SIGBUS: file page beyond EOF
    FAULT_SIGSEGV = 3   # VM_FAULT_SIGSEGV: a guard-region marker (handle_pte_marker)
