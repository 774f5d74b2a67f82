# cython: language_level=3
"""Emulated physical memory: host backing, per-frame metadata ("struct page"), allocator.

Models the order-0 page allocator (mm/page_alloc.c) with a LIFO of freed frames, and the
zero page (mm/memory.c ZERO_PAGE). Everything is one host mapping reserved with
MAP_NORESERVE, so creating a machine costs O(1) in its size and the host pays only for
frames that hold data.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memset, memcpy
from libc.stdlib cimport realloc, free
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport (
    pfn_t, pte_t, PG_USED, PG_HASDATA, PG_ZERO, PG_RESERVED, PG_TABLE,
    EV_PGALLOC, EV_PGFREE, EV_PAGES_ZEROED, EV_PAGES_COPIED, NR_EVENTS,
)
from mmemu._core.types cimport PG_FILE, PG_SWAPBACKED, PG_DIRTY

cnp.import_array()

from mmemu._core.types cimport MMEMU_DEBUG_BUILD

DEBUG_BUILD = bool(MMEMU_DEBUG_BUILD)   # built with MMEMU_DEBUG=1: bounds checks and asserts on

cdef extern from "emmintrin.h" nogil:
    ctypedef struct __m128i:
        pass
    __m128i _mm_load_si128(const __m128i* p)
    void _mm_stream_si128(__m128i* p, __m128i a)
    void _mm_sfence()


cdef inline void copy_page_nt(uint8_t* dst, const uint8_t* src) noexcept nogil:
    """copy_page with non-temporal stores: the copy is not read back soon, so writing
    around the cache saves the read-for-ownership of every destination line."""
    cdef const __m128i* s = <const __m128i*>src
    cdef __m128i* d = <__m128i*>dst
    cdef int i
    for i in range(0, 256, 4):
        _mm_stream_si128(d + i, _mm_load_si128(s + i))
        _mm_stream_si128(d + i + 1, _mm_load_si128(s + i + 1))
        _mm_stream_si128(d + i + 2, _mm_load_si128(s + i + 2))
        _mm_stream_si128(d + i + 3, _mm_load_si128(s + i + 3))
    _mm_sfence()


cdef extern from "sys/mman.h":
    int MAP_NORESERVE
    int MADV_HUGEPAGE
    int madvise(void* addr, size_t length, int advice) nogil


cdef pfn_t alloc_frame(physmem_t* pm, bint table, bint zero) noexcept nogil:
    """__alloc_pages(order 0): freed frames LIFO first, then never-used ones; -1 if none.

    Data frames come from the bottom of memory, table frames from the top, so tables pack
    densely in host huge pages. A frame that held data is zeroed when `zero` is asked for.
    """
    cdef pfn_t pfn = -1
    if table:
        if pm.nfree_table > 0:
            pm.nfree_table -= 1
            pfn = pm.free_table[pm.nfree_table]
        elif pm.table_lwm > pm.data_hwm:
            pm.table_lwm -= 1
            pfn = pm.table_lwm
        elif pm.nfree_data > 0:
            pm.nfree_data -= 1
            pfn = pm.free_data[pm.nfree_data]
    else:
        if pm.nfree_data > 0:
            pm.nfree_data -= 1
            pfn = pm.free_data[pm.nfree_data]
        elif pm.data_hwm < pm.table_lwm:
            pfn = pm.data_hwm
            pm.data_hwm += 1
        elif pm.nfree_table > 0:
            pm.nfree_table -= 1
            pfn = pm.free_table[pm.nfree_table]
    if pfn < 0:
        return -1
    if zero and (pm.flags[pfn] & PG_HASDATA):
        memset(frame_ptr(pm, pfn), 0, 4096)
        pm.ev[EV_PAGES_ZEROED] += 1
        pm.flags[pfn] = PG_USED
    else:
        pm.flags[pfn] = PG_USED | (pm.flags[pfn] & PG_HASDATA)
    pm.refcount[pfn] = 1
    pm.mapcount[pfn] = 0
    pm.pt_share[pfn] = 0
    pm.pt_owner[pfn] = 0
    pm.nr_free -= 1
    if not table:
        pm.ev[EV_PGALLOC] += 1
    return pfn


cdef void free_frame(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """free_unref_page: back on the free LIFO of its end of memory."""
    cdef bint table = pfn >= pm.table_lwm
    pm.flags[pfn] = pm.flags[pfn] & PG_HASDATA
    pm.refcount[pfn] = 0
    pm.mapcount[pfn] = 0
    pm.pt_share[pfn] = 0
    pm.pt_owner[pfn] = 0
    pm.nr_free += 1
    if table:
        pm.free_table[pm.nfree_table] = pfn
        pm.nfree_table += 1
    else:
        pm.free_data[pm.nfree_data] = pfn
        pm.nfree_data += 1
        pm.ev[EV_PGFREE] += 1


cdef void put_page(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """folio_put: drop one reference, free the frame at zero."""
    pm.refcount[pfn] -= 1
    if pm.refcount[pfn] == 0:
        free_frame(pm, pfn)


cdef void copy_frame(physmem_t* pm, pfn_t dst, pfn_t src) noexcept nogil:
    """copy_user_highpage; a source that never held data copies as zeros (dst is zeroed)."""
    if pm.flags[src] & PG_HASDATA:
        copy_page_nt(frame_ptr(pm, dst), frame_ptr(pm, src))
        pm.flags[dst] |= PG_HASDATA
        pm.ev[EV_PAGES_COPIED] += 1
    elif pm.flags[dst] & PG_HASDATA:
        memset(frame_ptr(pm, dst), 0, 4096)
        pm.flags[dst] &= ~PG_HASDATA
        pm.ev[EV_PAGES_ZEROED] += 1


cdef int64_t frames_available(physmem_t* pm) noexcept nogil:
    return pm.nr_free


cdef object _view(void* ptr, int64_t n, object dtype, int typenum):
    """A read-only numpy view of `n` elements of a metadata array."""
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    arr = cnp.PyArray_SimpleNewFromData(1, dims, typenum, ptr)
    arr.flags.writeable = False
    return arr


cdef class PhysMem:
    """Physical memory of one emulated machine.

    Parameters
    ----------
    nframes : int
        Number of 4 KiB frames. Frame 0 of the data end becomes the zero page.
    """

    def __cinit__(self, int64_t nframes):
        self._nregions = 0
        memset(&self.pm, 0, sizeof(physmem_t))
        if nframes < 16:
            raise ValueError("an emulated machine needs at least 16 frames (64 KiB)")
        self.pm.nframes = nframes
        # 4 KiB host pages, not MADV_HUGEPAGE: a host huge page must be found and zeroed
        # whole (2 MiB of fresh memory) where a 4 KiB fault reuses recently freed memory;
        # measured on a VM, the first 1 GiB of COW copies took 2-5 s with it, 1.4-1.7 s without
        self.pm.mem = <uint8_t*>self._map(<size_t>nframes * 4096, False)
        self.pm.refcount = <int32_t*>self._map(<size_t>nframes * 4, False)
        self.pm.mapcount = <int32_t*>self._map(<size_t>nframes * 4, False)
        self.pm.flags = <uint32_t*>self._map(<size_t>nframes * 4, False)
        self.pm.pt_share = <int32_t*>self._map(<size_t>nframes * 4, False)
        self.pm.pt_owner = <int32_t*>self._map(<size_t>nframes * 4, False)
        self.pm.free_data = <int64_t*>self._map(<size_t>nframes * 8, False)
        self.pm.free_table = <int64_t*>self._map(<size_t>nframes * 8, False)
        self.pm.data_hwm = 0
        self.pm.table_lwm = nframes
        self.pm.nr_free = nframes
        cdef pfn_t z = alloc_frame(&self.pm, False, True)
        self.pm.flags[z] |= PG_ZERO | PG_RESERVED
        self.pm.zero_pfn = z
        self.pm.ev[EV_PGALLOC] = 0

    cdef void* _map(self, size_t length, bint hugepage) except NULL:
        cdef void* p = mmap(NULL, length, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError(f"host mmap of {length} bytes (MAP_NORESERVE) failed")
        self._addr[self._nregions] = p
        self._len[self._nregions] = length
        self._nregions += 1
        if hugepage:
            madvise(p, length, MADV_HUGEPAGE)   # advisory: ignore failure
        return p

    def __dealloc__(self):
        free(self.pm.mms)
        self.pm.mms = NULL
        cdef int i
        for i in range(self._nregions):
            munmap(self._addr[i], self._len[i])
        self._nregions = 0

    def new_mm_id(self):
        """A fresh mm id, with a NULL registry slot."""
        self._next_mm_id += 1
        cdef int64_t i, n = self._next_mm_id + 1
        cdef void** p
        if n > self.pm.mms_len:
            n = max(n, 2 * self.pm.mms_len, 64)
            p = <void**>realloc(self.pm.mms, n * sizeof(void*))
            if p == NULL:
                raise MemoryError()
            for i in range(self.pm.mms_len, n):
                p[i] = NULL
            self.pm.mms = p
            self.pm.mms_len = n
        return self._next_mm_id

    @property
    def cow_pte_accounting(self):
        return "eager" if self.pm.cow_eager else "deferred"

    @cow_pte_accounting.setter
    def cow_pte_accounting(self, str mode):
        if mode not in ("deferred", "eager"):
            raise ValueError("cow_pte_accounting must be 'deferred' or 'eager'")
        self.pm.cow_eager = 1 if mode == "eager" else 0

    @property
    def nframes(self):
        return self.pm.nframes

    @property
    def zero_pfn(self):
        return self.pm.zero_pfn

    @property
    def nr_free(self):
        return self.pm.nr_free

    def counters(self):
        """Global page counters (pages) as a dict."""
        return {
            "nr_free_pages": self.pm.nr_free,
            "nr_anon_mapped": self.pm.nr_anon_mapped,
            "nr_file_mapped": self.pm.nr_file_mapped,
            "nr_shmem": self.pm.nr_shmem,
            "nr_file_pages": self.pm.nr_file_pages,
            "nr_page_table_pages": self.pm.nr_pagetable,
        }

    def events(self):
        """The raw event counter array (a copy)."""
        return np.array([self.pm.ev[i] for i in range(NR_EVENTS)], dtype=np.int64)

    def reset_events(self):
        cdef int i
        for i in range(NR_EVENTS):
            self.pm.ev[i] = 0

    def used_ranges(self):
        """The two PFN ranges that have ever been handed out: data [0, hwm), tables [lwm, n)."""
        return (0, self.pm.data_hwm), (self.pm.table_lwm, self.pm.nframes)

    def free_pfns(self):
        """PFNs on the free stacks (copies)."""
        d = np.array(<int64_t[:self.pm.nfree_data]> self.pm.free_data, copy=True) if self.pm.nfree_data else np.empty(0, np.int64)
        t = np.array(<int64_t[:self.pm.nfree_table]> self.pm.free_table, copy=True) if self.pm.nfree_table else np.empty(0, np.int64)
        return d, t

    # read-only views of the metadata arrays (never reallocated: fixed-size host mappings)
    @property
    def refcount(self):
        return _view(self.pm.refcount, self.pm.nframes, np.int32, cnp.NPY_INT32)

    @property
    def mapcount(self):
        return _view(self.pm.mapcount, self.pm.nframes, np.int32, cnp.NPY_INT32)

    @property
    def flags(self):
        return _view(self.pm.flags, self.pm.nframes, np.uint32, cnp.NPY_UINT32)

    @property
    def pt_share(self):
        return _view(self.pm.pt_share, self.pm.nframes, np.int32, cnp.NPY_INT32)

    @property
    def pt_owner(self):
        return _view(self.pm.pt_owner, self.pm.nframes, np.int32, cnp.NPY_INT32)

    def frame(self, pfn_t pfn):
        """The 4096 bytes of a frame (a copy)."""
        if pfn < 0 or pfn >= self.pm.nframes:
            raise IndexError(pfn)
        return bytes((<char*>frame_ptr(&self.pm, pfn))[:4096])

    def table(self, pfn_t pfn):
        """The 512 entries of a page-table frame (a copy, uint64)."""
        if pfn < 0 or pfn >= self.pm.nframes:
            raise IndexError(pfn)
        return np.array(<uint64_t[:512]> table_ptr(&self.pm, pfn), dtype=np.uint64, copy=True)

    def release_cache(self, int64_t[::1] cache, bint swapbacked):
        """truncate_inode_pages: drop every page of a page cache (all must be unmapped)."""
        cdef int64_t i
        cdef pfn_t p
        for i in range(cache.shape[0]):
            p = cache[i]
            if p < 0:
                continue
            if self.pm.mapcount[p] != 0:
                raise RuntimeError(f"page cache frame {p} is still mapped")
            cache[i] = -1
            self.pm.nr_file_pages -= 1
            if swapbacked:
                self.pm.nr_shmem -= 1
            put_page(&self.pm, p)

    # ---- page-cache helpers for in-emulator files (mmemu.file) ----
    def cache_alloc(self, bint swapbacked):
        """filemap_add_folio / shmem_alloc_and_add_folio: a zeroed page-cache frame.

        Its one reference is the page cache's; flags PG_FILE (+PG_SWAPBACKED), and
        nr_file_pages (+nr_shmem) count it, as fault.pyx do_fault does. -1 if memory is full.
        """
        cdef pfn_t p = alloc_frame(&self.pm, False, True)
        if p < 0:
            return -1
        self.pm.flags[p] |= PG_FILE | (PG_SWAPBACKED if swapbacked else 0)
        self.pm.nr_file_pages += 1
        if swapbacked:
            self.pm.nr_shmem += 1
        return p

    def cache_write(self, pfn_t pfn, int64_t offset, const uint8_t[::1] data, bint dirty):
        """Copy bytes into a page-cache frame at offset (write(2) through the page cache);
        dirty marks the folio dirty (folio_mark_dirty)."""
        cdef int64_t n = data.shape[0]
        if pfn < 0 or pfn >= self.pm.nframes or not (self.pm.flags[pfn] & PG_FILE):
            raise ValueError(f"pfn {pfn} is not a page-cache frame")
        if offset < 0 or offset + n > 4096:
            raise ValueError("write outside the frame")
        if n == 0:
            return
        memcpy(frame_ptr(&self.pm, pfn) + offset, &data[0], n)
        self.pm.flags[pfn] |= PG_HASDATA | (PG_DIRTY if dirty else 0)

    def _debug_poke(self, str field, pfn_t pfn, int64_t value):
        """Overwrite one metadata entry. For tests of the invariant checker only."""
        if pfn < 0 or pfn >= self.pm.nframes:
            raise IndexError(pfn)
        if field == "refcount":
            self.pm.refcount[pfn] = <int32_t>value
        elif field == "mapcount":
            self.pm.mapcount[pfn] = <int32_t>value
        elif field == "flags":
            self.pm.flags[pfn] = <uint32_t>value
        elif field == "pt_share":
            self.pm.pt_share[pfn] = <int32_t>value
        elif field == "pt_owner":
            self.pm.pt_owner[pfn] = <int32_t>value
        elif field == "nr_anon_mapped":
            self.pm.nr_anon_mapped = value
        else:
            raise KeyError(field)
