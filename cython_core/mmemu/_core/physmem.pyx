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
from mmemu._core.types cimport PG_FILE, PG_DIRTY
from mmemu._core.rmap cimport filemap_add_folio, filemap_remove_folio

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


cdef pfn_t alloc_frame(physmem_t* pm, bint table, bint zero) noexcept nogil:
    """__alloc_pages(order 0): freed frames LIFO first, then never-used ones; -1 if none.

    Data frames come from the bottom of memory, table frames from the top, so tables pack
    densely in host memory. A frame that held data is zeroed when `zero` is asked for.
    A table frame comes from the reservation pool first (reserve_frames), which cannot fail.
    """
    cdef pfn_t pfn
    if table and pm.pool_head < pm.pool_len:
        pfn = pm.pool[pm.pool_head]
        pm.pool_head += 1
    else:
        pfn = _take(pm, table)
        if pfn < 0:
            return -1
        if not table:
            pm.ev[EV_PGALLOC] += 1
    if zero and (pm.flags[pfn] & PG_HASDATA):
        memset(frame_ptr(pm, pfn), 0, 4096)
        pm.ev[EV_PAGES_ZEROED] += 1
        pm.flags[pfn] = PG_USED
    return pfn


cdef inline bint _should_fail(physmem_t* pm) noexcept nogil:
    """should_fail_alloc_page: the fault-injection countdown (fail_page_alloc)."""
    if pm.fail_countdown <= 0:
        return False
    pm.fail_countdown -= 1
    if pm.fail_countdown > 0:
        return False
    if pm.fail_times > 0:
        pm.fail_times -= 1
    if pm.fail_times != 0:
        pm.fail_countdown = 1       # keep failing: the next attempt fails too
    return True


cdef pfn_t _take(physmem_t* pm, bint table) noexcept nogil:
    """Take a frame off the free lists (or the never-used ranges) and make it in use, with
    one reference; no events are counted here. -1 if none (or an injected failure)."""
    cdef pfn_t pfn = -1
    pm.alloc_calls += 1
    if _should_fail(pm):
        pm.alloc_failed += 1
        return -1
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
        pm.alloc_failed += 1
        return -1
    pm.flags[pfn] = PG_USED | (pm.flags[pfn] & PG_HASDATA)
    pm.refcount[pfn] = 1
    pm.mapcount[pfn] = 0
    pm.pt_share[pfn] = 0
    pm.pt_owner[pfn] = 0
    pm.nr_free -= 1
    return pfn


cdef void _put_back(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """Undo _take for a frame never handed out: back on its free list, no events."""
    pm.flags[pfn] = pm.flags[pfn] & PG_HASDATA
    pm.refcount[pfn] = 0
    pm.nr_free += 1
    if pfn >= pm.table_lwm:
        pm.free_table[pm.nfree_table] = pfn
        pm.nfree_table += 1
    else:
        pm.free_data[pm.nfree_data] = pfn
        pm.nfree_data += 1


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
    """Frames a table allocation can still get: the free ones and the reserved ones."""
    return pm.nr_free + pm.pool_len - pm.pool_head


cdef int reserve_frames(physmem_t* pm, int64_t n, bint scope=True) noexcept nogil:
    """Open a reservation scope holding at least n unused table frames: 0, or -1 with
    nothing taken (and no scope opened) if the allocator refuses one of them. With
    scope=False, top up the current scope instead of opening one.

    Frames are taken in the order the operation would have allocated them and handed out
    first-in first-out, so a reserved operation gets the same frames an unreserved one
    would have; taking, giving back and handing out count the same events as an
    unreserved allocation would (none until a frame is handed out)."""
    cdef int64_t start, i
    cdef pfn_t pfn
    if pm.pool_head == pm.pool_len:
        pm.pool_head = pm.pool_len = 0
    start = pm.pool_len
    if n - (pm.pool_len - pm.pool_head) > pm.nr_free:
        pm.alloc_failed += 1
        return -1
    while pm.pool_len - pm.pool_head < n:
        pfn = _take(pm, True)
        if pfn < 0:
            # give back this call's frames, last taken first, so that the first one
            # taken is the next frame handed out (as if nothing had been reserved)
            i = pm.pool_len - 1
            while i >= start:
                _put_back(pm, pm.pool[i])
                i -= 1
            pm.pool_len = start
            return -1
        pm.pool[pm.pool_len] = pfn
        pm.pool_len += 1
    if scope:
        pm.pool_depth += 1
    return 0


cdef void release_reserve(physmem_t* pm) noexcept nogil:
    """Close a reservation scope; the outermost one gives back what was not used."""
    cdef int64_t i
    pm.pool_depth -= 1
    if pm.pool_depth > 0:
        return
    i = pm.pool_len - 1
    while i >= pm.pool_head:
        _put_back(pm, pm.pool[i])
        i -= 1
    pm.pool_head = pm.pool_len = 0


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
        self.pm.mem = <uint8_t*>self._map(<size_t>nframes * 4096)
        self.pm.refcount = <int32_t*>self._map(<size_t>nframes * 4)
        self.pm.mapcount = <int32_t*>self._map(<size_t>nframes * 4)
        self.pm.flags = <uint32_t*>self._map(<size_t>nframes * 4)
        self.pm.pt_share = <int32_t*>self._map(<size_t>nframes * 4)
        self.pm.pt_owner = <int32_t*>self._map(<size_t>nframes * 4)
        self.pm.free_data = <int64_t*>self._map(<size_t>nframes * 8)
        self.pm.free_table = <int64_t*>self._map(<size_t>nframes * 8)
        self.pm.pool = <int64_t*>self._map(<size_t>nframes * 8)
        self.pm.data_hwm = 0
        self.pm.table_lwm = nframes
        self.pm.nr_free = nframes
        cdef pfn_t z = alloc_frame(&self.pm, False, True)
        self.pm.flags[z] |= PG_ZERO | PG_RESERVED
        self.pm.zero_pfn = z
        self.pm.ev[EV_PGALLOC] = 0

    cdef void* _map(self, size_t length) except NULL:
        cdef void* p = mmap(NULL, length, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError(f"host mmap of {length} bytes (MAP_NORESERVE) failed")
        self._addr[self._nregions] = p
        self._len[self._nregions] = length
        self._nregions += 1
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
        self._mm_slot(self._next_mm_id + 1)
        self._next_mm_id += 1
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

    @property
    def available(self):
        """Frames a page-table allocation can still get (free + reserved, unused)."""
        return frames_available(&self.pm)

    # ---- reservations and fault injection ----
    def reserve(self, int64_t n, bint scope=True):
        """Open a reservation scope with at least n table frames set aside (the scope's
        table allocations then cannot fail). False, with nothing taken, if they cannot all
        be had. Every True must be paired with release(). With scope=False, top up the
        innermost open scope to n unused frames instead."""
        if n < 0:
            raise ValueError("negative reservation")
        if not scope and self.pm.pool_depth <= 0:
            raise RuntimeError("no reservation scope is open")
        return reserve_frames(&self.pm, n, scope) == 0

    def release(self):
        """Close the innermost reservation scope; the outermost frees what was not used."""
        if self.pm.pool_depth <= 0:
            raise RuntimeError("release() without a reservation")
        release_reserve(&self.pm)

    @property
    def reservation_depth(self):
        return self.pm.pool_depth

    def fail_page_alloc(self, int64_t nth, int64_t times=1):
        """Fault injection: the nth allocation attempt from now fails (nth >= 1), and the
        times - 1 attempts after it (times < 0: every attempt from then on). nth = 0 turns
        injection off. Frames already reserved are not affected."""
        if nth < 0:
            raise ValueError("nth must be >= 0")
        if times == 0 and nth:
            raise ValueError("times must be nonzero")
        self.pm.fail_countdown = nth
        self.pm.fail_times = times if nth else 0

    @property
    def fail_pending(self):
        """True while an injected failure is still to come."""
        return self.pm.fail_countdown > 0

    @property
    def alloc_calls(self):
        """Allocation attempts so far (reserved frames handed out are not attempts)."""
        return self.pm.alloc_calls

    @property
    def alloc_failed(self):
        """Allocation attempts that failed: memory full or an injected failure."""
        return self.pm.alloc_failed

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
            filemap_remove_folio(&self.pm, p, swapbacked)

    # ---- page-cache helpers for in-emulator files (mmemu.file) ----
    def cache_alloc(self, bint swapbacked):
        """filemap_add_folio / shmem_alloc_and_add_folio: a zeroed page-cache frame.

        Its one reference is the page cache's; flags PG_FILE (+PG_SWAPBACKED), and
        nr_file_pages (+nr_shmem) count it (rmap.pxd filemap_add_folio, as a fault's
        shmem_alloc_and_add_folio). -1 if memory is full.
        """
        cdef pfn_t p = alloc_frame(&self.pm, False, True)
        if p < 0:
            return -1
        filemap_add_folio(&self.pm, p, swapbacked)
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

    # ---- snapshots (mmemu.snapshot) ----
    def _frame_arrays(self):
        """name -> writable view of every per-frame metadata array a snapshot saves and
        restores. A new per-frame array in physmem_t needs exactly one line here."""
        cdef int64_t n = self.pm.nframes
        return {
            "refcount": _wview(self.pm.refcount, n, cnp.NPY_INT32),
            "mapcount": _wview(self.pm.mapcount, n, cnp.NPY_INT32),
            "flags": _wview(self.pm.flags, n, cnp.NPY_UINT32),
            "pt_share": _wview(self.pm.pt_share, n, cnp.NPY_INT32),
            "pt_owner": _wview(self.pm.pt_owner, n, cnp.NPY_INT32),
        }

    def dump_state(self):
        """The allocator and "struct page" state as (scalars, arrays), for a snapshot.

        scalars is a JSON-able dict (sizes, high/low-water marks, counters, events,
        accounting mode, the mm id counter); arrays maps names to numpy copies: each
        per-frame array over the used ranges only ([0, data_hwm) then [table_lwm,
        nframes)), the two free stacks, and ``data_pfns``: the frames in use whose bytes
        are not all zero (their contents: ``read_frames``).
        """
        cdef int64_t i, n = self.pm.nframes, d1 = self.pm.data_hwm, t0 = self.pm.table_lwm
        if self.pm.pool_depth or self.pm.pool_len:
            raise RuntimeError("cannot dump physical memory inside a reservation scope")
        scalars = {
            "nframes": n, "data_hwm": d1, "table_lwm": t0, "zero_pfn": self.pm.zero_pfn,
            "nr_free": self.pm.nr_free, "nr_anon_mapped": self.pm.nr_anon_mapped,
            "nr_file_mapped": self.pm.nr_file_mapped, "nr_shmem": self.pm.nr_shmem,
            "nr_file_pages": self.pm.nr_file_pages, "nr_pagetable": self.pm.nr_pagetable,
            "events": [self.pm.ev[i] for i in range(NR_EVENTS)],
            "cow_eager": self.pm.cow_eager, "next_mm_id": self._next_mm_id,
            "alloc_calls": self.pm.alloc_calls, "alloc_failed": self.pm.alloc_failed,
        }
        arrays = {}
        for name, view in self._frame_arrays().items():
            arrays["frame." + name] = np.concatenate([view[:d1], view[t0:]])
        d, t = self.free_pfns()
        arrays["free_data"] = d
        arrays["free_table"] = t
        arrays["data_pfns"] = self._nonzero_frames()
        return scalars, arrays

    def _nonzero_frames(self):
        """PFNs of frames in use flagged PG_HASDATA whose 4096 bytes are not all zero.

        A free frame's stale bytes are left out: no one reads them, and every allocation
        zeroes a PG_HASDATA frame before handing it out (its flag is kept, so the zeroing,
        and EV_PAGES_ZEROED, happen after a restore as they would have)."""
        cdef int64_t n = self.pm.nframes, d1 = self.pm.data_hwm, t0 = self.pm.table_lwm
        out = np.empty(d1 + (n - t0), dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef int64_t k = 0, pfn, j
        cdef uint64_t* w
        with nogil:
            pfn = 0
            while pfn < n:
                if pfn == d1:
                    pfn = t0
                    if pfn >= n:
                        break
                if (self.pm.flags[pfn] & (PG_USED | PG_HASDATA)) == PG_USED | PG_HASDATA:
                    w = <uint64_t*>frame_ptr(&self.pm, pfn)
                    for j in range(512):
                        if w[j] != 0:
                            o[k] = pfn
                            k += 1
                            break
                pfn += 1
        return out[:k].copy()

    def read_frames(self, const int64_t[::1] pfns):
        """The contents of these frames, concatenated (a uint8 copy, 4096 bytes each)."""
        cdef int64_t i, k = pfns.shape[0]
        for i in range(k):
            if pfns[i] < 0 or pfns[i] >= self.pm.nframes:
                raise IndexError(pfns[i])
        out = np.empty(k * 4096, dtype=np.uint8)
        cdef uint8_t[::1] o = out
        with nogil:
            for i in range(k):
                memcpy(&o[i * 4096], frame_ptr(&self.pm, pfns[i]), 4096)
        return out

    def write_frames(self, const int64_t[::1] pfns, const uint8_t[::1] data):
        """Restore frame contents (the inverse of read_frames; metadata is untouched)."""
        cdef int64_t i, k = pfns.shape[0]
        if data.shape[0] != k * 4096:
            raise ValueError(f"{data.shape[0]} bytes of data for {k} frames")
        for i in range(k):
            if pfns[i] < 0 or pfns[i] >= self.pm.nframes:
                raise ValueError(f"frame {pfns[i]} outside memory")
        if k == 0:
            return
        with nogil:
            for i in range(k):
                memcpy(frame_ptr(&self.pm, pfns[i]), &data[i * 4096], 4096)

    def restore_state(self, dict scalars, dict arrays):
        """Load what dump_state returned into this freshly created PhysMem (frame contents
        come separately, through write_frames). Everything is validated before anything is
        written; ValueError says what is wrong. Host memory between the used ranges is
        never touched (it is zero in a fresh PhysMem). The mm registry is not touched: each
        MMCore registers itself in MMCore.restore_state."""
        cdef int64_t n = self.pm.nframes, i
        if self.pm.data_hwm != 1 or self.pm.table_lwm != n or self.pm.nfree_data or self.pm.nfree_table:
            raise ValueError("restore_state needs a freshly created PhysMem")
        if scalars["nframes"] != n:
            raise ValueError(f"snapshot has {scalars['nframes']} frames, this memory {n}")
        cdef int64_t d1 = scalars["data_hwm"], t0 = scalars["table_lwm"]
        if not (1 <= d1 <= t0 <= n):
            raise ValueError(f"bad used ranges: data_hwm {d1}, table_lwm {t0}, nframes {n}")
        used = d1 + (n - t0)
        views = self._frame_arrays()
        for name, view in views.items():
            a = arrays.get("frame." + name)
            if a is None:
                raise ValueError(f"per-frame array {name!r} missing")
            if a.dtype != view.dtype or a.shape != (used,):
                raise ValueError(f"per-frame array {name!r}: {a.dtype}{a.shape}, expected "
                                 f"{view.dtype}({used},)")
        fd, ft = arrays["free_data"], arrays["free_table"]
        for a, what in ((fd, "free_data"), (ft, "free_table")):
            if a.dtype != np.int64 or a.ndim != 1 or len(a) > used:
                raise ValueError(f"bad free stack {what}")
            if len(a) and (np.any(a < 0) or np.any(a >= n) or np.any((a >= d1) & (a < t0))):
                raise ValueError(f"free stack {what} holds frames outside the used ranges")
        if len(fd) + len(ft) + (t0 - d1) != scalars["nr_free"]:
            raise ValueError(f"free stacks hold {len(fd) + len(ft)} + {t0 - d1} never-used "
                             f"frames, nr_free is {scalars['nr_free']}")
        z = scalars["zero_pfn"]
        if not 0 <= z < d1:
            raise ValueError(f"zero page {z} outside the data range")
        ev = scalars["events"]
        if len(ev) != NR_EVENTS:
            raise ValueError(f"{len(ev)} event counters, expected {NR_EVENTS}")
        if scalars["cow_eager"] not in (0, 1):
            raise ValueError("bad accounting mode")
        nid = scalars["next_mm_id"]
        if not 0 <= nid < (1 << 31) - 1:
            raise ValueError(f"bad mm id counter {nid}")
        calls, failed = scalars["alloc_calls"], scalars["alloc_failed"]
        if not (0 <= failed <= calls < (1 << 62)):
            raise ValueError(f"bad allocation counters {calls}, {failed}")
        # validated: write
        for name, view in views.items():
            a = arrays["frame." + name]
            view[:d1] = a[:d1]          # [d1, t0) stays as a fresh PhysMem has it: zeros
            view[t0:] = a[d1:]
        self.pm.data_hwm = d1
        self.pm.table_lwm = t0
        self.pm.nfree_data = len(fd)
        self.pm.nfree_table = len(ft)
        if len(fd):
            _wview(self.pm.free_data, n, cnp.NPY_INT64)[:len(fd)] = fd
        if len(ft):
            _wview(self.pm.free_table, n, cnp.NPY_INT64)[:len(ft)] = ft
        self.pm.zero_pfn = z
        self.pm.nr_free = scalars["nr_free"]
        self.pm.nr_anon_mapped = scalars["nr_anon_mapped"]
        self.pm.nr_file_mapped = scalars["nr_file_mapped"]
        self.pm.nr_shmem = scalars["nr_shmem"]
        self.pm.nr_file_pages = scalars["nr_file_pages"]
        self.pm.nr_pagetable = scalars["nr_pagetable"]
        for i in range(NR_EVENTS):
            self.pm.ev[i] = ev[i]
        self.pm.cow_eager = scalars["cow_eager"]
        self.pm.alloc_calls = calls
        self.pm.alloc_failed = failed
        self._set_next_mm_id(nid)

    def _set_next_mm_id(self, int64_t nid):
        """Restore the mm id counter (the next new_mm_id returns nid + 1)."""
        self._next_mm_id = nid
        self._mm_slot(nid)

    def _mm_slot(self, int64_t mm_id):
        """Grow the mm registry so that mm_id has a slot (NULL if new)."""
        cdef int64_t i, n = mm_id + 1
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


cdef object _wview(void* ptr, int64_t n, int typenum):
    """A writable numpy view of `n` elements of a metadata array (snapshot restore only)."""
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    return cnp.PyArray_SimpleNewFromData(1, dims, typenum, ptr)
