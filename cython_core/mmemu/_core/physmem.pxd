from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from mmemu._core.types cimport pte_t, pfn_t, NR_EVENTS

cdef enum:
    MAX_PAGE_ORDER = 10     # blocks of 2^0 .. 2^10 frames (4 KiB .. 4 MiB)
    NR_PAGE_ORDERS = 11
    NR_FREE_LISTS = 22      # one list per (kind, order): index kind * NR_PAGE_ORDERS + order
    POOL_FROM_PCP = 1 << 5  # pool_tag: the block came off a pcp list (goes back there)

cdef struct physmem_t:
    uint8_t* mem            # frame contents: nframes * 4096 bytes (host MAP_NORESERVE)
    int64_t nframes
    int32_t* refcount       # page refcount (0 = free)
    int32_t* mapcount       # number of PTEs mapping the page (0 = unmapped; Linux stores -1)
    uint32_t* flags         # PG_* bits
    int32_t* pt_share       # PTE tables: number of PMD entries pointing at the table
    int32_t* pt_owner       # table frames: id of the mm that allocated / owns it
    # the page allocator (page_alloc.pxi, mm/page_alloc.c). A free frame is in exactly one
    # of: a per-cpu-pages list (order 0, hot first), a buddy free list (a block of 2^order
    # frames), or the gap. Data frames come from the bottom of memory, table frames from the
    # top; each list exists once per kind (0 data, 1 tables: frames at or above table_lwm).
    # The order-0 hot path's fields come first; the buddy lists' are at the end.
    int64_t* pcp[2]         # per kind: stack of order-0 free PFNs (per_cpu_pages), 2 * nframes
    int64_t pcp_count[2]    # entries [base, base + count), the hottest last
    int64_t pcp_base[2]     # index of the coldest entry (below it: drained), < nframes
    int64_t pcp_high        # a longer list gives its coldest frames to the buddy lists
    int64_t data_hwm        # data frames [0, data_hwm) have been handed out at least once
    int64_t table_lwm       # table frames [table_lwm, nframes) have been handed out at least once
    pfn_t zero_pfn
    # global counters (vmstat node counters), in pages
    int64_t nr_free         # NR_FREE_PAGES
    int64_t nr_anon_mapped  # NR_ANON_MAPPED
    int64_t nr_file_mapped  # NR_FILE_MAPPED (file and shmem)
    int64_t nr_shmem        # NR_SHMEM
    int64_t nr_file_pages   # page-cache pages (file + shmem)
    int64_t nr_pagetable    # NR_PAGETABLE (all levels, PGD included)
    int64_t ev[NR_EVENTS]   # event counters (EV_*)
    # COW page tables
    int cow_eager           # accounting mode: 0 deferred (RFC v1/v2), 1 eager (v3 on)
    int overwrite           # set by access_range around the fault of an anonymous page it then
                            # writes whole: alloc_frame(data) and copy_frame skip the bytes
                            # (the kernel's zeroing or copy is dead; counters unchanged)
    uint32_t cow_rules      # a series version's rules (COW_RULE_*, cow_pte_profile.pxd)
    void** mms              # mm_t* of every live mm (pagetable.pyx mm_register), in no order:
    int64_t mms_len         #   mms[0:mms_len]; host memory follows the live mms, not the ids
    int64_t mms_cap
    # reservations: blocks taken ahead so that a multi-table operation (fork, a syscall's
    # page-table breaks, mremap) cannot fail half way; an allocation of the same order and
    # kind takes them first
    int64_t* pool           # pool[pool_head:pool_len] are reserved blocks (-1: handed out)
    uint8_t* pool_tag       # each entry's order | kind << 4 | POOL_FROM_PCP
    int64_t pool_head
    int64_t pool_len
    int64_t pool_avail[NR_FREE_LISTS]  # entries not handed out yet, per (kind, order)
    int64_t pool_frames     # frames in them
    int pool_depth          # nested reservation scopes; the outermost returns leftovers
    # fault injection (like the kernel's fail_page_alloc)
    int64_t fail_countdown  # > 0: the allocation that brings it to 0 fails
    int64_t fail_times      # failures still to inject from then on (< 0: every one)
    int64_t alloc_calls     # allocation attempts outside the pool (injected failures too)
    int64_t alloc_failed    # allocations that failed (memory full or injected)
    # the emulated swap device (mmemu._core.swap): per-slot swap count and 4 KiB of data
    int32_t* swap_map
    uint8_t* swap_data
    int64_t swap_slots
    int64_t nr_swap_used    # slots with a count (pages on swap)
    # the buddy free lists and the gap (page_alloc.pxi)
    int64_t pcp_batch       # ... in batches of this many (free_pcppages_bulk)
    int64_t* buddy_next     # free block heads: the free lists' links (page->buddy_list)
    int64_t* buddy_prev
    int64_t free_head[NR_FREE_LISTS]  # first block of each list, -1 if none
    int64_t nr_blocks[NR_FREE_LISTS]  # free_area[order].nr_free, per kind
    uint32_t free_mask[2]   # per kind: bit `order` set while that list is not empty
    int64_t gap_lo          # [gap_lo, gap_hi): free frames on no list, handed out from both
    int64_t gap_hi          #   ends; holds every never-used frame, and freed blocks touching it
    int64_t swap_hwm        # slots [0, swap_hwm) have held a page (scans stop there)
    # transparent huge pages (huge_memory.pyx)
    int64_t nr_anon_thps    # NR_ANON_THPS: anonymous THP folios mapped by at least one PMD
    int64_t nr_file_thps    # NR_FILE_THPS: PMD-sized folios in disk files' caches (FileHugePages)
    int64_t nr_file_pmdmapped  # NR_FILE_PMDMAPPED: ... mapped by at least one PMD
    int64_t nr_shmem_thps   # NR_SHMEM_THPS: PMD-sized shmem folios (ShmemHugePages)
    int64_t nr_shmem_pmdmapped  # NR_SHMEM_PMDMAPPED: ... mapped by at least one PMD
    pfn_t huge_zero_pfn     # the huge zero folio (order 9), -1 until the first read fault
    int fail_min_order      # fail_page_alloc's min-order: smaller allocations never fail

cdef pfn_t alloc_pages(physmem_t* pm, int order, bint table, bint zero) noexcept nogil
cdef void free_pages(physmem_t* pm, pfn_t pfn, int order) noexcept nogil
cdef pfn_t alloc_frame(physmem_t* pm, bint table, bint zero) noexcept nogil
cdef void free_frame(physmem_t* pm, pfn_t pfn) noexcept nogil
cdef void put_page(physmem_t* pm, pfn_t pfn) noexcept nogil
cdef void copy_frame(physmem_t* pm, pfn_t dst, pfn_t src) noexcept nogil

cdef extern from "emmintrin.h" nogil:
    void wmb "_mm_sfence" ()   # wmb(): copy_page_nt's stores before any later store
    ctypedef struct __m128i:
        pass
    __m128i _mm_loadu_si128(const __m128i* p)
    void _mm_stream_si128(__m128i* p, __m128i a)


cdef inline void copy_page_nt(uint8_t* dst, const uint8_t* src) noexcept nogil:
    """copy_page with non-temporal stores, for a frame's COW copy (copy_frame) and a whole
    page of a caller's bytes (access_range): the copy is not read back soon, so writing
    around the cache saves the read-for-ownership of every destination line. dst is a
    frame (16-byte aligned), src need not be aligned. Not fenced: an sfence per page waits
    for the page's stores to reach memory (about a sixth of a warm COW fault's time,
    measured); the caller fences once after a batch (wmb)."""
    cdef const __m128i* s = <const __m128i*>src
    cdef __m128i* d = <__m128i*>dst
    cdef int i
    for i in range(0, 256, 4):
        _mm_stream_si128(d + i, _mm_loadu_si128(s + i))
        _mm_stream_si128(d + i + 1, _mm_loadu_si128(s + i + 1))
        _mm_stream_si128(d + i + 2, _mm_loadu_si128(s + i + 2))
        _mm_stream_si128(d + i + 3, _mm_loadu_si128(s + i + 3))

cdef int64_t frames_available(physmem_t* pm) noexcept nogil
cdef int reserve_pages(physmem_t* pm, int order, bint table, int64_t n, bint scope) noexcept nogil
cdef int reserve_frames(physmem_t* pm, int64_t n, bint scope=*) noexcept nogil
cdef void release_reserve(physmem_t* pm) noexcept nogil
cdef void drain_all_pages(physmem_t* pm) noexcept nogil

cdef inline void swap_dup(physmem_t* pm, int64_t slot) noexcept nogil:
    """swap_duplicate: one more PTE references the slot (fork)."""
    if 0 <= slot < pm.swap_slots:
        pm.swap_map[slot] += 1

cdef inline void swap_free(physmem_t* pm, int64_t slot) noexcept nogil:
    """free_swap_and_cache: one reference fewer; the slot is free at zero."""
    if 0 <= slot < pm.swap_slots and pm.swap_map[slot] > 0:
        pm.swap_map[slot] -= 1
        if pm.swap_map[slot] == 0:
            pm.nr_swap_used -= 1

cdef inline uint8_t* frame_ptr(physmem_t* pm, pfn_t pfn) noexcept nogil:
    return pm.mem + (<uint64_t>pfn << 12)

cdef inline pte_t* table_ptr(physmem_t* pm, pfn_t pfn) noexcept nogil:
    return <pte_t*>(pm.mem + (<uint64_t>pfn << 12))

cdef class PhysMem:
    cdef physmem_t pm
    cdef object _swap_arrays  # the swap device's arrays pm.swap_map/swap_data point into
    cdef void* _addr[16]    # host mappings, unmapped on dealloc
    cdef size_t _len[16]
    cdef int _nregions
    cdef int64_t _next_mm_id
    cdef void* _map(self, size_t length) except NULL
    cdef void _unmap_last(self) noexcept
