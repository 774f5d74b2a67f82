# cython: language_level=3
"""The core's constants for Python. Each has one definition, a Cython enum or macro
(types.pxd, pagemap.pxd); the policy layer imports them from here instead of typing the
numbers again.

Exports the page geometry, the PTE bits vm_page_prot is built from (BIT_*), the frame flags
(PG_*), the rss counter indices (MM_*), the VM_* bits the core reads, the fault results
(FAULT_*), the pagemap bits (PM_*) and the vmstat event table: ``EVENTS[i]`` is the
(name, help) of event counter slot i (``PhysMem.events()[i]``) for every slot below
NR_EVENTS; ``EVENT_NAMES`` and ``EVENT_HELP`` are views of it.
"""
cimport mmemu._core.types as T
cimport mmemu._core.pagemap as C
cimport mmemu._core.cow_pte_profile as CP

# ---- geometry ----
PAGE_SHIFT = T.PAGE_SHIFT
PAGE_SIZE = T.PAGE_SIZE
PTRS_PER_TABLE = T.PTRS_PER_TABLE
PMD_SHIFT = T.PMD_SHIFT
PMD_SIZE = T.PMD_SIZE
PUD_SIZE = T.PUD_SIZE
PGDIR_SIZE = T.PGDIR_SIZE

# ---- PTE bit numbers (pgtable_types.h) ----
BIT_PRESENT = T.BIT_PRESENT
BIT_RW = T.BIT_RW
BIT_USER = T.BIT_USER
BIT_ACCESSED = T.BIT_ACCESSED
BIT_DIRTY = T.BIT_DIRTY
BIT_PROTNONE = T.BIT_PROTNONE
BIT_NX = T.BIT_NX

# ---- frame flags ----
PG_USED = T.PG_USED
PG_ANON = T.PG_ANON
PG_FILE = T.PG_FILE
PG_SWAPBACKED = T.PG_SWAPBACKED
PG_TABLE = T.PG_TABLE
PG_ZERO = T.PG_ZERO
PG_HASDATA = T.PG_HASDATA
PG_ANON_EXCLUSIVE = T.PG_ANON_EXCLUSIVE
PG_DIRTY = T.PG_DIRTY
PG_RESERVED = T.PG_RESERVED
PG_HEAD = T.PG_HEAD
PG_TAIL = T.PG_TAIL
PG_COMPOUND = T.PG_COMPOUND
PG_PARTIALLY_MAPPED = T.PG_PARTIALLY_MAPPED
HPAGE_PMD_NR = T.HPAGE_PMD_NR

# ---- rss counters: the order of MMCore.rss ----
MM_FILEPAGES = T.MM_FILEPAGES
MM_ANONPAGES = T.MM_ANONPAGES
MM_SWAPENTS = T.MM_SWAPENTS
MM_SHMEMPAGES = T.MM_SHMEMPAGES
NR_MM_COUNTERS = T.NR_MM_COUNTERS

# ---- the vm_flags bits the core reads (flags.VmFlags takes its values from these) ----
VM_READ = T.VM_READ
VM_WRITE = T.VM_WRITE
VM_EXEC = T.VM_EXEC
VM_SHARED = T.VM_SHARED
VM_MAYREAD = T.VM_MAYREAD
VM_MAYWRITE = T.VM_MAYWRITE
VM_MAYEXEC = T.VM_MAYEXEC
VM_MAYSHARE = T.VM_MAYSHARE
VM_GROWSDOWN = T.VM_GROWSDOWN

# ---- fault results (_core.fault.access) ----
FAULT_OK = T.FAULT_OK
FAULT_OOM = T.FAULT_OOM
FAULT_SIGBUS = T.FAULT_SIGBUS
FAULT_SIGSEGV = T.FAULT_SIGSEGV

# ---- the COW page-table series versions' rules (cow_pte_profile.pxd; mmemu.profiles) ----
COW_RULE_READ_FAULT_SHARED = CP.COW_RULE_READ_FAULT_SHARED
COW_RULE_MKOLD_AT_FORK = CP.COW_RULE_MKOLD_AT_FORK
COW_RULE_OWNER_NULL = CP.COW_RULE_OWNER_NULL
COW_RULE_FLUSH_EVERY_BREAK = CP.COW_RULE_FLUSH_EVERY_BREAK
COW_RULE_NO_BREAK_FLUSH = CP.COW_RULE_NO_BREAK_FLUSH
COW_RULE_V1_EXIT_FALLBACK = CP.COW_RULE_V1_EXIT_FALLBACK

# ---- pagemap bits ----
PM_PFN_MASK = C.PM_PFN_MASK
PM_SOFT_DIRTY = C.PM_SOFT_DIRTY
PM_MMAP_EXCLUSIVE = C.PM_MMAP_EXCLUSIVE
PM_GUARD_REGION = C.PM_GUARD_REGION
PM_FILE = C.PM_FILE
PM_SWAP = C.PM_SWAP
PM_PRESENT = C.PM_PRESENT
PM_GUARD_ENTRY = C.PM_GUARD_ENTRY

# ---- vmstat events: slot -> (name, help). A name is the /proc/vmstat one where Linux
# has the counter (pgfault, pgalloc, pgfree, pswpin, pswpout), else mmemu's own ----
NR_EVENTS = T.NR_EVENTS
_EVENTS = [
    (T.EV_PGFAULT, "pgfault", "faults handled (handle_mm_fault calls)"),
    (T.EV_FAULT_ZERO_PAGE, "fault_zero_page", "read faults that mapped the shared zero page"),
    (T.EV_FAULT_ANON, "fault_anon", "do_anonymous_page allocations of a zeroed page"),
    (T.EV_FAULT_SHMEM, "fault_file", "faults that mapped a page-cache (file or shmem) page"),
    (T.EV_FAULT_SHMEM_ALLOC, "fault_file_alloc",
     "page-cache pages created by a fault (shmem holes)"),
    (T.EV_COW_FAULT, "cow_fault", "wp_page_copy / do_cow_fault: a new private copy"),
    (T.EV_COW_ZERO, "cow_zero_fault",
     "wp_page_copy from the zero page (a zeroed page, nothing copied)"),
    (T.EV_WP_REUSE, "wp_reuse", "write faults that reused an exclusive anon page in place"),
    (T.EV_WP_SHARED, "wp_shared", "write faults that made a shared mapping's PTE writable"),
    (T.EV_SPURIOUS, "spurious_fault", "faults whose PTE already allowed the access"),
    (T.EV_PAGES_COPIED, "pages_copied", "4 KiB page copies"),
    (T.EV_PAGES_ZEROED, "pages_zeroed", "4 KiB frames zeroed for reuse"),
    (T.EV_PGALLOC, "pgalloc", "data frames allocated"),
    (T.EV_PGFREE, "pgfree", "data frames freed"),
    (T.EV_PT_ALLOC, "pgtable_alloc", "page-table pages allocated (all levels)"),
    (T.EV_PT_FREE, "pgtable_free", "page-table pages freed (all levels)"),
    (T.EV_FORK_PTES_COPIED, "fork_ptes_copied", "non-none PTEs copied by copy_pte_range"),
    (T.EV_FORK_PTE_TABLES_COPIED, "fork_pte_tables_copied",
     "PTE tables allocated by copy_pte_range"),
    (T.EV_FORK_PTES_WRPROTECTED, "fork_ptes_wrprotected",
     "PTEs write-protected at fork (both sides)"),
    (T.EV_PTES_ZAPPED, "ptes_zapped", "non-none PTEs cleared by zap_pte_range"),
    (T.EV_PTES_PROTECTED, "ptes_protected", "PTEs changed by change_protection"),
    (T.EV_PTE_TABLES_SHARED, "cow_pte_tables_shared", "PTE tables shared at fork (COW page table)"),
    (T.EV_PTE_TABLES_DUPLICATED, "cow_pte_tables_duplicated",
     "shared PTE tables copied by break_cow_pte"),
    (T.EV_PTE_TABLES_REUSED, "cow_pte_tables_reused",
     "break_cow_pte found the table no longer shared"),
    (T.EV_PTE_TABLE_ENTRIES_COPIED, "cow_pte_entries_copied", "entries copied by break_cow_pte"),
    (T.EV_TLB_LOCAL_FLUSH_ALL, "nr_tlb_local_flush_all",
     "full local TLB flushes (flush_tlb_mm_range over more than 33 pages, flush_tlb_mm)"),
    (T.EV_PTES_MOVED, "mremap_ptes_moved", "PTEs moved by move_ptes"),
    (T.EV_PMDS_MOVED, "mremap_pmds_moved", "whole PTE tables relinked by move_normal_pmd"),
    (T.EV_SWAPIN, "pswpin", "pages read back from the emulated swap device (do_swap_page)"),
    (T.EV_SWAPOUT, "pswpout", "pages written to the emulated swap device (Process.swap_out)"),
    (T.EV_TLB_LOCAL_FLUSH_ONE, "nr_tlb_local_flush_one",
     "pages flushed one by one from the local TLB (flush_tlb_page, short ranges)"),
    (T.EV_TLB_REMOTE_FLUSH, "nr_tlb_remote_flush",
     "TLB shootdowns sent to other CPUs (always 0: one CPU is modelled)"),
    (T.EV_TLB_REMOTE_FLUSH_RECEIVED, "nr_tlb_remote_flush_received",
     "TLB shootdowns received from other CPUs (always 0: one CPU is modelled)"),
    (T.EV_FORK_PTES_ACCOUNTED, "fork_ptes_accounted",
     "pages of shared PTE tables accounted to the child at fork (eager accounting, v3-v5: "
     "copy_present_pte's reference, mapcount and RSS per entry)"),
    (T.EV_THP_FAULT_ALLOC, "thp_fault_alloc", "faults that mapped a new transparent huge page"),
    (T.EV_THP_FAULT_FALLBACK, "thp_fault_fallback",
     "THP faults that found no free order-9 block (base pages instead)"),
    (T.EV_THP_ZERO_PAGE_ALLOC, "thp_zero_page_alloc", "huge zero page allocations"),
    (T.EV_THP_SPLIT_PMD, "thp_split_pmd", "huge PMDs split into PTE tables"),
    (T.EV_THP_DEFERRED_SPLIT_PAGE, "thp_deferred_split_page",
     "THPs that became partially mapped (queued for a deferred split)"),
    (T.EV_PMD_TABLES_SHARED, "cow_pmd_tables_shared", "PMD tables shared at fork (whole-table COW)"),
    (T.EV_PMD_TABLES_DUPLICATED, "cow_pmd_tables_duplicated",
     "shared PMD tables copied by break_cow_pgtable"),
    (T.EV_PMD_TABLES_REUSED, "cow_pmd_tables_reused",
     "break_cow_pgtable found the PMD table no longer shared"),
    (T.EV_PUD_TABLES_SHARED, "cow_pud_tables_shared", "PUD tables shared at fork (whole-table COW)"),
    (T.EV_PUD_TABLES_DUPLICATED, "cow_pud_tables_duplicated",
     "shared PUD tables copied by break_cow_pgtable"),
    (T.EV_PUD_TABLES_REUSED, "cow_pud_tables_reused",
     "break_cow_pgtable found the PUD table no longer shared"),
    (T.EV_THP_COLLAPSE_ALLOC, "thp_collapse_alloc",
     "order-9 folios allocated to collapse a PTE-mapped range (MADV_COLLAPSE)"),
    (T.EV_THP_COLLAPSE_ALLOC_FAILED, "thp_collapse_alloc_failed",
     "collapses that found no free order-9 block (MADV_COLLAPSE's ENOMEM)"),
    (T.EV_THP_FILE_MAPPED, "thp_file_mapped",
     "page-cache folios mapped by a huge PMD at a fault (do_set_pmd)"),
    (T.EV_THP_SPLIT_PAGE_FAILED, "thp_split_page_failed",
     "large folios a truncate could not split (a dirty page-cache folio stays whole)"),
    (T.EV_THP_SPLIT_PAGE, "thp_split_page",
     "large folios split into single pages (a shmem folio a truncate or hole cuts)"),
]
EVENT_SLOTS = tuple(slot for slot, _, _ in _EVENTS)
EVENTS = tuple((name, text) for _, name, text in sorted(_EVENTS))
EVENT_NAMES = tuple(name for name, _ in EVENTS)
EVENT_HELP = {name: text for name, text in EVENTS}
del _EVENTS
