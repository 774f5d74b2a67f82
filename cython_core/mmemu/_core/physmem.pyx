# cython: language_level=3
"""Emulated physical memory: host backing, per-frame metadata ("struct page"), allocator.

Models the page allocator (mm/page_alloc.c: a buddy allocator of orders 0 to 10 behind
per-cpu-pages lists of order-0 frames; page_alloc.pxi) and the zero page (mm/memory.c
ZERO_PAGE). Everything is one host mapping reserved with MAP_NORESERVE, so creating a
machine costs O(1) in its size and the host pays only for frames that hold data.
"""
import operator
import reprlib

from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memset, memcpy, memmove
from libc.stdlib cimport free, abort
from libc.stdio cimport fprintf, stderr
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS, MAP_FAILED

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport (
    pfn_t, pte_t, PG_USED, PG_HASDATA, PG_ZERO, PG_RESERVED, PG_TABLE, PG_BUDDY,
    PG_ORDER_SHIFT, EV_PGALLOC, EV_PGFREE, EV_PAGES_ZEROED, EV_PAGES_COPIED, NR_EVENTS,
)
from mmemu._core.types cimport PG_FILE, PG_DIRTY, PG_SWAPBACKED
from mmemu._core.types cimport PG_COMPOUND, HPAGE_PMD_ORDER, compound_head
from mmemu._core.rmap cimport filemap_add_folio, filemap_remove_folio, folio_mark_dirty

cnp.import_array()

from mmemu._core.types cimport MMEMU_DEBUG_BUILD

DEBUG_BUILD = bool(MMEMU_DEBUG_BUILD)   # built with MMEMU_DEBUG=1: bounds checks and asserts on
MAX_ORDER = MAX_PAGE_ORDER              # the largest block: 2^MAX_ORDER frames
BUDDY_FLAG = PG_BUDDY                   # flags of a free block's head; its order above ORDER_SHIFT
ORDER_SHIFT = PG_ORDER_SHIFT
MAX_FRAMES = 1 << 34                    # 64 TiB: the host's 47-bit address space holds it once
PCP_BATCH = 63                          # Linux's pcp->batch on machines of 256 MiB and more

cdef extern from "sys/mman.h":
    int MAP_NORESERVE


include "page_alloc.pxi"


ctypedef void (*free_pages_t)(physmem_t* pm, pfn_t pfn, int order) noexcept nogil
cdef free_pages_t _free_compound = free_pages  # called through a pointer: put_page's order-0
                                               # path stays small (free_pages is not inlined)


cdef void put_page(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """folio_put: drop one reference, free the frame at zero (a THP folio: the reference
    is its head's, and the whole order-9 block goes, __folio_put's free_compound_page)."""
    if pm.flags[pfn] & PG_COMPOUND:
        pfn = compound_head(pfn)
        pm.refcount[pfn] -= 1
        if pm.refcount[pfn] == 0:
            _free_compound(pm, pfn, HPAGE_PMD_ORDER)
        return
    pm.refcount[pfn] -= 1
    if pm.refcount[pfn] == 0:
        free_unref_page(pm, pfn)


cdef void copy_frame(physmem_t* pm, pfn_t dst, pfn_t src) noexcept nogil:
    """copy_user_highpage; a source that never held data copies as zeros (dst is zeroed).
    Under pm.overwrite (access_range writes the page whole next) the bytes are skipped.
    The stores are non-temporal and unfenced: call wmb() after the last copy of a batch,
    before control returns to Python (access_range does)."""
    if pm.flags[src] & PG_HASDATA:
        if not pm.overwrite:
            copy_page_nt(frame_ptr(pm, dst), frame_ptr(pm, src))
        pm.flags[dst] |= PG_HASDATA
        pm.ev[EV_PAGES_COPIED] += 1
    elif pm.flags[dst] & PG_HASDATA:
        if not pm.overwrite:
            memset(frame_ptr(pm, dst), 0, 4096)
        pm.flags[dst] &= ~PG_HASDATA
        pm.ev[EV_PAGES_ZEROED] += 1


def default_pcp_limits(nframes):
    """(high, batch) of a new machine's per-cpu-pages lists: batch 63 (zone_batchsize),
    high nframes / 16 (the pcp high_max Linux 6.18 gives a zone), at least 4 batches."""
    batch = min(PCP_BATCH, nframes)
    return min(nframes, max(4 * batch, nframes // 16)), batch


cdef object _view(PhysMem owner, void* ptr, int64_t n, int typenum, bint writable):
    """A numpy view of `n` elements of a metadata array. It holds a reference to the
    PhysMem that owns the host mapping, so it stays valid however long it is kept."""
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    cdef cnp.ndarray arr = cnp.PyArray_SimpleNewFromData(1, dims, typenum, ptr)
    cnp.set_array_base(arr, owner)
    if not writable:
        arr.flags.writeable = False
    return arr


cdef int64_t _int_arg(object v, str what, int64_t lo, int64_t hi) except? -1:
    """An integer argument in [lo, hi]: TypeError if it is not an integer, ValueError if it
    lies outside (never OverflowError)."""
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{what} must be an integer, not {type(v).__name__}") from None
    if not lo <= i <= hi:
        raise ValueError(f"{what} {i} is outside [{lo}, {hi}]")
    return i


cdef object _walk_list(physmem_t* pm, pfn_t head, int64_t limit, list problems, str name):
    """The PFNs of one free list, head first (a copy). A broken link (outside memory, a
    back link that disagrees, more than `limit` entries) ends the walk with a problem."""
    out = np.empty(min(limit, 1024), dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int64_t k = 0
    cdef pfn_t p = head, prev = -1
    while p != -1:
        if p < 0 or p >= pm.nframes:
            problems.append(f"free list {name}: link to {p}, outside memory")
            break
        if pm.buddy_prev[p] != prev:
            problems.append(f"free list {name}: block {p} links back to "
                            f"{pm.buddy_prev[p]}, not {prev}")
            break
        if k == limit:
            problems.append(f"free list {name}: more than {limit} blocks (a cycle?)")
            break
        if k == o.shape[0]:
            out = np.concatenate([out, np.empty(min(limit, 2 * k) - k, dtype=np.int64)])
            o = out
        o[k] = p
        k += 1
        prev = p
        p = pm.buddy_next[p]
    return out[:k].copy()


# snapshots carry the first 30 event counters always and the later ones (the TLB counters)
# up to the last non-zero one: a machine that never used them saves the same bytes as before
_SAVED_EVENTS = 30


cdef list _saved_events(int64_t* ev):
    cdef list out = [ev[i] for i in range(NR_EVENTS)]
    while len(out) > _SAVED_EVENTS and out[len(out) - 1] == 0:
        out.pop()
    return out


cdef class PhysMem:
    """Physical memory of one emulated machine.

    Parameters
    ----------
    nframes : int
        Number of 4 KiB frames, 16 to MAX_FRAMES. Frame 0 becomes the zero page.
    """

    def __cinit__(self, nframes):
        cdef int64_t n, i
        self._nregions = 0
        memset(&self.pm, 0, sizeof(physmem_t))
        n = _int_arg(nframes, "nframes", 0, MAX_FRAMES)
        if n < 16:
            raise ValueError("an emulated machine needs at least 16 frames (64 KiB)")
        self.pm.nframes = n
        # 4 KiB host pages, not MADV_HUGEPAGE: a host huge page must be found and zeroed
        # whole (2 MiB of fresh memory) where a 4 KiB fault reuses recently freed memory;
        # measured on a VM, the first 1 GiB of COW copies took 2-5 s with it, 1.4-1.7 s without
        self.pm.mem = <uint8_t*>self._map(<size_t>n * 4096)
        self.pm.refcount = <int32_t*>self._map(<size_t>n * 4)
        self.pm.mapcount = <int32_t*>self._map(<size_t>n * 4)
        self.pm.flags = <uint32_t*>self._map(<size_t>n * 4)
        self.pm.pt_share = <int32_t*>self._map(<size_t>n * 4)
        self.pm.pt_owner = <int32_t*>self._map(<size_t>n * 4)
        self.pm.pcp[0] = <int64_t*>self._map(<size_t>n * 16)
        self.pm.pcp[1] = <int64_t*>self._map(<size_t>n * 16)
        self.pm.buddy_next = <int64_t*>self._map(<size_t>n * 8)
        self.pm.buddy_prev = <int64_t*>self._map(<size_t>n * 8)
        self.pm.pool = <int64_t*>self._map(<size_t>n * 8)
        self.pm.pool_tag = <uint8_t*>self._map(<size_t>n)
        self.pm.pcp_high, self.pm.pcp_batch = default_pcp_limits(n)
        for i in range(NR_FREE_LISTS):
            self.pm.free_head[i] = -1
        self.pm.gap_lo = self.pm.data_hwm = 0
        self.pm.gap_hi = self.pm.table_lwm = n
        self.pm.nr_free = n
        cdef pfn_t z = alloc_frame(&self.pm, False, True)
        self.pm.flags[z] |= PG_ZERO | PG_RESERVED
        self.pm.zero_pfn = z
        self.pm.huge_zero_pfn = -1
        self.pm.ev[EV_PGALLOC] = 0

    cdef void* _map(self, size_t length) except NULL:
        cdef void* p
        if self._nregions == 16:
            raise MemoryError("no room for another host mapping")
        p = mmap(NULL, length, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        if p == MAP_FAILED:
            raise MemoryError(f"host mmap of {length} bytes (MAP_NORESERVE) failed")
        self._addr[self._nregions] = p
        self._len[self._nregions] = length
        self._nregions += 1
        return p

    cdef void _unmap_last(self) noexcept:
        """Undo the last _map (a structure whose second mapping failed)."""
        self._nregions -= 1
        munmap(self._addr[self._nregions], self._len[self._nregions])

    def __dealloc__(self):
        free(self.pm.mms)
        self.pm.mms = NULL
        cdef int i
        for i in range(self._nregions):
            munmap(self._addr[i], self._len[i])
        self._nregions = 0

    def new_mm_id(self):
        """A fresh mm id (MMError EAGAIN once 2^31 - 2 are used: the ids are stored as int32
        owners). Ids are never reused; they cost no host memory (the registry of live mms,
        pagetable.pyx mm_register, holds the live ones only)."""
        if self._next_mm_id >= (1 << 31) - 2:
            from mmemu.errors import MMError
            import errno
            raise MMError(errno.EAGAIN, "no mm ids left")
        self._next_mm_id += 1
        return self._next_mm_id

    @property
    def next_mm_id(self):
        """The last mm id handed out (0 if none): every live mm's id is at most this."""
        return self._next_mm_id

    @property
    def cow_pte_accounting(self):
        return "eager" if self.pm.cow_eager else "deferred"

    @cow_pte_accounting.setter
    def cow_pte_accounting(self, str mode):
        """Set before the first process: tables shared under one mode are not accounted
        as the other expects (ValueError while an mm is alive)."""
        if mode not in ("deferred", "eager"):
            raise ValueError("cow_pte_accounting must be 'deferred' or 'eager'")
        if (mode == "eager") != self.pm.cow_eager and self.pm.mms_len:
            raise ValueError("cow_pte_accounting cannot change while a process exists")
        self.pm.cow_eager = 1 if mode == "eager" else 0

    @property
    def cow_rules(self):
        """The COW page-table series version's rules in force (COW_RULE_* bits,
        cow_pte_profile.pxd; 0: mmemu's own). mmemu.profiles sets them."""
        return self.pm.cow_rules

    @cow_rules.setter
    def cow_rules(self, int rules):
        if rules != <int>self.pm.cow_rules and self.pm.mms_len:
            raise ValueError("the COW page-table rules cannot change while a process exists")
        self.pm.cow_rules = <uint32_t>rules

    @property
    def nframes(self):
        return self.pm.nframes

    @property
    def zero_pfn(self):
        return self.pm.zero_pfn

    @property
    def huge_zero_pfn(self):
        """The huge zero folio's first frame, -1 until a THP read fault allocates it."""
        return self.pm.huge_zero_pfn

    @property
    def nr_free(self):
        return self.pm.nr_free

    @property
    def available(self):
        """Frames an allocation can still get (free + reserved, unused)."""
        return frames_available(&self.pm)

    # ---- the page allocator (page_alloc.pxi) ----
    @property
    def pcp_pages(self):
        """Free frames on the per-cpu-pages lists (free memory /proc/buddyinfo leaves out)."""
        return self.pm.pcp_count[0] + self.pm.pcp_count[1]

    @property
    def pcp_limits(self):
        """(high, batch) of each per-cpu-pages list: a list longer than high gives its
        coldest frames back to the buddy lists, down to high - batch + 1."""
        return self.pm.pcp_high, self.pm.pcp_batch

    @pcp_limits.setter
    def pcp_limits(self, value):
        """Set (high, batch): 1 <= batch <= high <= nframes (percpu_pagelist_high_fraction).
        Lists now longer than high shrink at their next free."""
        try:
            high, batch = value
        except (TypeError, ValueError):
            raise TypeError("pcp_limits takes a pair (high, batch)") from None
        cdef int64_t h = _int_arg(high, "pcp high", 1, self.pm.nframes)
        cdef int64_t b = _int_arg(batch, "pcp batch", 1, h)
        self.pm.pcp_high = h
        self.pm.pcp_batch = b

    def drain_pages(self):
        """drain_all_pages: every per-cpu-pages frame back to the buddy lists (merged)."""
        drain_all_pages(&self.pm)

    def buddyinfo(self):
        """Free blocks per order 0..MAX_ORDER, as /proc/buddyinfo counts them: the blocks
        on the buddy lists, and the gap as the largest aligned blocks it holds (it is free
        memory never split); frames on the per-cpu-pages lists are not counted."""
        cdef int64_t lo = self.pm.gap_lo, hi = self.pm.gap_hi, k
        cdef int o, i
        out = [0] * NR_PAGE_ORDERS
        for i in range(NR_FREE_LISTS):
            out[i % NR_PAGE_ORDERS] += self.pm.nr_blocks[i]
        while lo < hi:
            o = MAX_PAGE_ORDER if lo == 0 else min(__builtin_ctzll(<unsigned long long>lo), MAX_PAGE_ORDER)
            while lo + (<int64_t>1 << o) > hi:
                o -= 1
            if o == MAX_PAGE_ORDER:
                k = (hi - lo) >> MAX_PAGE_ORDER
                out[o] += k
                lo += k << MAX_PAGE_ORDER
            else:
                out[o] += 1
                lo += <int64_t>1 << o
        return out

    def free_lists(self):
        """The allocator's free memory, for the checker and tests (copies): a dict with
        ``pcp`` (data, table) PFN arrays, coldest first; ``blocks`` (pfns, orders, kinds)
        arrays of every buddy free list in turn, head first; ``counts`` the stored
        per-list block counts, shape (2 kinds, MAX_ORDER + 1); ``gap`` (lo, hi); and
        ``problems``: broken links found while walking the lists."""
        cdef int64_t i
        cdef int kind
        cdef int64_t[::1] av
        problems = []
        pcp = []
        for kind in range(2):
            a = np.empty(self.pm.pcp_count[kind], dtype=np.int64)
            av = a
            for i in range(self.pm.pcp_count[kind]):
                av[i] = self.pm.pcp[kind][self.pm.pcp_base[kind] + i]
            pcp.append(a)
        pfns, orders, kinds = [], [], []
        for i in range(NR_FREE_LISTS):
            kind, o = divmod(i, NR_PAGE_ORDERS)
            lst = _walk_list(&self.pm, self.pm.free_head[i], self.pm.nframes, problems,
                             f"{('data', 'table')[kind]} order {o}")
            pfns.append(lst)
            orders.append(np.full(len(lst), o, dtype=np.int64))
            kinds.append(np.full(len(lst), kind, dtype=np.int64))
        return {"pcp": tuple(pcp),
                "blocks": (np.concatenate(pfns), np.concatenate(orders), np.concatenate(kinds)),
                "counts": np.array([self.pm.nr_blocks[i] for i in range(NR_FREE_LISTS)],
                                   dtype=np.int64).reshape(2, NR_PAGE_ORDERS),
                "gap": (self.pm.gap_lo, self.pm.gap_hi),
                "problems": problems}

    def _alloc_pages(self, order, bint table=False):
        """alloc_pages(order) from Python (tests): the first PFN of a block of 2^order
        zeroed frames in use, each with one reference; -1 if there is none."""
        cdef int o = _int_arg(order, "order", 0, MAX_PAGE_ORDER)
        return alloc_pages(&self.pm, o, table, True)

    def _free_pages(self, pfn, order):
        """free_pages of a block _alloc_pages gave: every frame must be in use, unmapped,
        with one reference and no other role (ValueError and nothing freed otherwise)."""
        cdef int o = _int_arg(order, "order", 0, MAX_PAGE_ORDER)
        cdef int64_t p = _int_arg(pfn, "pfn", 0, self.pm.nframes - (<int64_t>1 << o))
        cdef int64_t q
        if p & ((<int64_t>1 << o) - 1):
            raise ValueError(f"pfn {p} is not aligned to a block of order {o}")
        if self.pm.pool_depth:
            raise ValueError("a reservation scope is open")
        for q in range(p, p + (<int64_t>1 << o)):
            if (self.pm.flags[q] & ~PG_HASDATA) != PG_USED or self.pm.refcount[q] != 1 \
                    or self.pm.mapcount[q] != 0:
                raise ValueError(f"frame {q} is not a bare allocated frame")
        free_pages(&self.pm, p, o)

    # ---- reservations and fault injection ----
    def reserve(self, n, bint scope=True, order=0, bint table=True):
        """Open a reservation scope with at least n blocks of 2^order frames of this kind
        set aside (the scope's allocations of that order and kind then cannot fail). False,
        with nothing taken, if they cannot all be had. Every True must be paired with
        release(). With scope=False, top up the innermost open scope instead."""
        cdef int64_t k = _int_arg(n, "n", 0, 1 << 62)
        cdef int o = _int_arg(order, "order", 0, MAX_PAGE_ORDER)
        if not scope and self.pm.pool_depth <= 0:
            raise RuntimeError("no reservation scope is open")
        return reserve_pages(&self.pm, o, table, k, scope) == 0

    def release(self):
        """Close the innermost reservation scope; the outermost frees what was not used."""
        if self.pm.pool_depth <= 0:
            raise RuntimeError("release() without a reservation")
        release_reserve(&self.pm)

    @property
    def reservation_depth(self):
        return self.pm.pool_depth

    def fail_page_alloc(self, nth, times=1, min_order=0):
        """Fault injection: the nth allocation attempt from now fails (nth >= 1), and the
        times - 1 attempts after it (times < 0: every attempt from then on). nth = 0 turns
        injection off. Frames already reserved are not affected. Only attempts of at least
        min_order count (fail_page_alloc's min-order; 0: every order)."""
        cdef int64_t n = _int_arg(nth, "nth", 0, 1 << 62)
        cdef int64_t t = _int_arg(times, "times", -(1 << 62), 1 << 62)
        cdef int64_t o = _int_arg(min_order, "min_order", 0, MAX_PAGE_ORDER)
        if t == 0 and n:
            raise ValueError("times must be nonzero")
        self.pm.fail_min_order = o if n else 0
        self.pm.fail_countdown = n
        self.pm.fail_times = (-1 if t < 0 else t) if n else 0

    @property
    def fail_pending(self):
        """True while an injected failure is still to come."""
        return self.pm.fail_countdown > 0

    @property
    def alloc_calls(self):
        """Allocation attempts so far (reserved blocks handed out are not attempts)."""
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
            "nr_anon_transparent_hugepages": self.pm.nr_anon_thps,
            "nr_file_hugepages": self.pm.nr_file_thps,
            "nr_file_pmdmapped": self.pm.nr_file_pmdmapped,
            "nr_shmem_hugepages": self.pm.nr_shmem_thps,
            "nr_shmem_pmdmapped": self.pm.nr_shmem_pmdmapped,
        }

    def events(self):
        """The raw event counter array (a copy)."""
        return np.array([self.pm.ev[i] for i in range(NR_EVENTS)], dtype=np.int64)

    def reset_events(self):
        cdef int i
        for i in range(NR_EVENTS):
            self.pm.ev[i] = 0

    def used_ranges(self):
        """The two PFN ranges that have ever been handed out: data [0, hwm), tables [lwm, n).
        Every frame between them is free, in the gap, and has never been touched."""
        return (0, self.pm.data_hwm), (self.pm.table_lwm, self.pm.nframes)

    # read-only views of the metadata arrays (never reallocated: fixed-size host mappings;
    # each view keeps this PhysMem, and so the mapping, alive)
    @property
    def refcount(self):
        return _view(self, self.pm.refcount, self.pm.nframes, cnp.NPY_INT32, False)

    @property
    def mapcount(self):
        return _view(self, self.pm.mapcount, self.pm.nframes, cnp.NPY_INT32, False)

    @property
    def flags(self):
        return _view(self, self.pm.flags, self.pm.nframes, cnp.NPY_UINT32, False)

    @property
    def pt_share(self):
        return _view(self, self.pm.pt_share, self.pm.nframes, cnp.NPY_INT32, False)

    @property
    def pt_owner(self):
        return _view(self, self.pm.pt_owner, self.pm.nframes, cnp.NPY_INT32, False)

    def frame(self, pfn):
        """The 4096 bytes of a frame (a copy)."""
        cdef int64_t p = _int_arg(pfn, "pfn", 0, self.pm.nframes - 1)
        return bytes((<char*>frame_ptr(&self.pm, p))[:4096])

    def table(self, pfn):
        """The 512 entries of a page-table frame (a copy, uint64)."""
        cdef int64_t p = _int_arg(pfn, "pfn", 0, self.pm.nframes - 1)
        return np.array(<uint64_t[:512]> table_ptr(&self.pm, p), dtype=np.uint64, copy=True)

    def release_cache(self, cnp.ndarray cache, bint swapbacked):
        """truncate_inode_pages: drop every page of a page cache (a writable int64 array;
        -1 entries are holes, and every entry becomes one). Each other entry must be an
        unmapped page-cache frame of this kind (shmem or file) holding only the cache's
        reference, named once; otherwise ValueError and nothing changes."""
        if cache is None or cache.dtype != np.int64 or cache.ndim != 1 \
                or not cache.flags.c_contiguous or not cache.flags.writeable:
            raise ValueError("a page cache is a writable contiguous 1-d int64 array")
        cdef int64_t[::1] c = cache
        cdef int64_t i, j, k = c.shape[0]
        cdef pfn_t p
        cdef uint32_t want = PG_USED | PG_FILE | (PG_SWAPBACKED if swapbacked else 0)
        for i in range(k):
            p = c[i]
            if p == -1:
                continue
            if p < -1 or p >= self.pm.nframes:
                raise ValueError(f"page cache entry {i}: frame {p} outside memory")
            if (self.pm.flags[p] & (PG_USED | PG_FILE | PG_SWAPBACKED | PG_TABLE)) != want:
                raise ValueError(f"page cache entry {i}: frame {p} is not a "
                                 f"{'shmem' if swapbacked else 'file'} page-cache frame")
            if self.pm.mapcount[p] != 0:
                raise ValueError(f"page cache frame {p} is still mapped")
            if self.pm.refcount[p] != 1:
                raise ValueError(f"page cache frame {p} has {self.pm.refcount[p]} references")
        for i in range(k):          # a frame named twice: mark each (refcount 1 -> 2) once
            p = c[i]
            if p == -1:
                continue
            if self.pm.refcount[p] == 2:
                for j in range(i):
                    if c[j] != -1:
                        self.pm.refcount[c[j]] = 1
                raise ValueError(f"page cache frame {p} appears twice")
            self.pm.refcount[p] = 2
        for i in range(k):
            p = c[i]
            if p == -1:
                continue
            self.pm.refcount[p] = 1
            c[i] = -1
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

    def cache_write(self, pfn, offset, const uint8_t[::1] data, bint dirty):
        """Copy bytes into a page-cache frame at offset (write(2) through the page cache);
        dirty marks the folio dirty (folio_mark_dirty)."""
        cdef int64_t n = data.shape[0]
        cdef int64_t p = _int_arg(pfn, "pfn", 0, self.pm.nframes - 1)
        cdef int64_t off = _int_arg(offset, "offset", 0, 4096)
        if (self.pm.flags[p] & (PG_USED | PG_FILE)) != PG_USED | PG_FILE:
            raise ValueError(f"pfn {p} is not a page-cache frame")
        if off + n > 4096:
            raise ValueError("write outside the frame")
        if n == 0:
            return
        memcpy(frame_ptr(&self.pm, p) + off, &data[0], n)
        self.pm.flags[p] |= PG_HASDATA
        if dirty:
            folio_mark_dirty(&self.pm, p)

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
        elif field == "buddy_next":
            self.pm.buddy_next[pfn] = value
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
            "refcount": _view(self, self.pm.refcount, n, cnp.NPY_INT32, True),
            "mapcount": _view(self, self.pm.mapcount, n, cnp.NPY_INT32, True),
            "flags": _view(self, self.pm.flags, n, cnp.NPY_UINT32, True),
            "pt_share": _view(self, self.pm.pt_share, n, cnp.NPY_INT32, True),
            "pt_owner": _view(self, self.pm.pt_owner, n, cnp.NPY_INT32, True),
        }

    def dump_state(self):
        """The allocator and "struct page" state as (scalars, arrays), for a snapshot.

        scalars is a JSON-able dict (sizes, high/low-water marks, the gap, the pcp limits,
        the length of every buddy free list, counters, events, accounting mode, the mm id
        counter); arrays maps names to numpy copies: each per-frame array over the used
        ranges only ([0, data_hwm) then [table_lwm, nframes)), the two pcp lists
        (``free_data``, ``free_table``, coldest first), ``free_blocks`` (every buddy free
        list in turn, head first), and ``data_pfns``: the frames in use whose bytes are not
        all zero (their contents: ``read_frames``).
        """
        cdef int64_t i, n = self.pm.nframes, d1 = self.pm.data_hwm, t0 = self.pm.table_lwm
        if self.pm.pool_depth or self.pm.pool_len:
            raise RuntimeError("cannot dump physical memory inside a reservation scope")
        fl = self.free_lists()
        if fl["problems"]:
            raise RuntimeError("free lists are broken: " + "; ".join(fl["problems"]))
        scalars = {
            "nframes": n, "data_hwm": d1, "table_lwm": t0, "zero_pfn": self.pm.zero_pfn,
            "gap": [self.pm.gap_lo, self.pm.gap_hi],
            "pcp": [self.pm.pcp_high, self.pm.pcp_batch],
            "free_blocks": [int(c) for c in fl["counts"].ravel()],
            "nr_free": self.pm.nr_free, "nr_anon_mapped": self.pm.nr_anon_mapped,
            "nr_file_mapped": self.pm.nr_file_mapped, "nr_shmem": self.pm.nr_shmem,
            "nr_file_pages": self.pm.nr_file_pages, "nr_pagetable": self.pm.nr_pagetable,
            "events": _saved_events(self.pm.ev),
            "cow_eager": self.pm.cow_eager, "next_mm_id": self._next_mm_id,
            "alloc_calls": self.pm.alloc_calls, "alloc_failed": self.pm.alloc_failed,
        }
        arrays = {}
        for name, view in self._frame_arrays().items():
            arrays["frame." + name] = np.concatenate([view[:d1], view[t0:]])
        arrays["free_data"], arrays["free_table"] = fl["pcp"]
        arrays["free_blocks"] = fl["blocks"][0]
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
                raise ValueError(f"frame {pfns[i]} outside memory")
        out = np.empty(k * 4096, dtype=np.uint8)
        cdef uint8_t[::1] o = out
        with nogil:
            for i in range(k):
                memcpy(&o[i * 4096], frame_ptr(&self.pm, pfns[i]), 4096)
        return out

    def restore_state(self, dict scalars not None, dict arrays not None, frames=()):
        """Load what dump_state returned into this freshly created PhysMem, then the frame
        contents: ``frames`` yields the bytes of the frames of ``arrays["data_pfns"]`` in
        order, in pieces of whole frames (what read_frames gave). The state is validated
        before anything is written -- shapes, ranges, that the free lists, the pcp lists
        and the gap are disjoint, hold no frame in use, are merged as far as they can be and
        account for every free frame, and that data_pfns increase and name frames in use
        flagged PG_HASDATA; ValueError says what is wrong (also when ``frames`` holds more
        or fewer frames: the state is written by then, and this PhysMem is to be discarded).
        Host memory between the used ranges is never touched (it is zero in a fresh
        PhysMem). The mm registry is not touched: each MMCore registers itself
        (MMCore(phys, state)), with an id at most the restored next_mm_id."""
        cdef int64_t n = self.pm.nframes, i, j, lst
        cdef int kind
        if (self.pm.data_hwm != 1 or self.pm.table_lwm != n or self.pm.gap_lo != 1
                or self.pm.gap_hi != n or self.pm.pcp_count[0] or self.pm.pcp_count[1]
                or self.pm.free_mask[0] or self.pm.free_mask[1] or self.pm.pool_len):
            raise ValueError("restore_state needs a freshly created PhysMem")
        if _scalar(scalars, "nframes", 0, 1 << 62) != n:
            raise ValueError(f"snapshot has {scalars['nframes']} frames, this memory {n}")
        cdef int64_t d1 = _scalar(scalars, "data_hwm", 0, 1 << 62)
        cdef int64_t t0 = _scalar(scalars, "table_lwm", 0, 1 << 62)
        if not (1 <= d1 <= t0 <= n):
            raise ValueError(f"bad used ranges: data_hwm {d1}, table_lwm {t0}, nframes {n}")
        used = d1 + (n - t0)
        gap = _ints(scalars, "gap", 2)
        lo, hi = gap
        if not (0 <= lo <= hi <= n) or (d1 < t0 and not (lo <= d1 and t0 <= hi)):
            raise ValueError(f"bad gap [{lo}, {hi}): it must hold the never-used frames "
                             f"[{d1}, {t0})")
        high, batch = _ints(scalars, "pcp", 2)
        if not 1 <= batch <= high <= n:
            raise ValueError(f"bad pcp limits: high {high}, batch {batch}")
        counts = _ints(scalars, "free_blocks", NR_FREE_LISTS)
        if min(counts) < 0:
            raise ValueError("a negative free list length")
        views = self._frame_arrays()
        for name, view in views.items():
            a = arrays.get("frame." + name)
            if not isinstance(a, np.ndarray):
                raise ValueError(f"per-frame array {name!r} missing")
            if a.dtype != view.dtype or a.shape != (used,):
                raise ValueError(f"per-frame array {name!r}: {a.dtype}{a.shape}, expected "
                                 f"{view.dtype}({used},)")
        fd, ft, fb = (arrays.get(k) for k in ("free_data", "free_table", "free_blocks"))
        for a, what in ((fd, "free_data"), (ft, "free_table"), (fb, "free_blocks")):
            if not isinstance(a, np.ndarray) or a.dtype != np.int64 or a.ndim != 1 or len(a) > n:
                raise ValueError(f"bad free list array {what}")
        if len(fb) != sum(counts):
            raise ValueError(f"free_blocks holds {len(fb)} blocks, the list lengths say "
                             f"{sum(counts)}")
        orders = np.repeat(np.arange(NR_FREE_LISTS) % NR_PAGE_ORDERS, counts).astype(np.int64)
        kinds = np.repeat(np.arange(NR_FREE_LISTS) // NR_PAGE_ORDERS, counts).astype(np.int64)
        size = np.left_shift(np.int64(1), orders)
        if len(fb) and (np.any(fb < 0) or np.any(fb & (size - 1)) or np.any(fb + size > n)):
            raise ValueError("a free block lies outside memory or is not aligned to its size")
        for a, k, what in ((fd, 0, "free_data"), (ft, 1, "free_table"), (fb, kinds, "free_blocks")):
            if len(a) and np.any((a < 0) | (a >= n) | ((a >= t0) != k)):
                raise ValueError(f"{what} holds frames of the other end of memory or outside it")
        starts = np.concatenate([fd, ft, fb, [lo] if hi > lo else []]).astype(np.int64)
        ends = np.concatenate([fd + 1, ft + 1, fb + size, [hi] if hi > lo else []]).astype(np.int64)
        order = np.argsort(starts, kind="stable")
        if np.any(starts[order][1:] < ends[order][:len(order) - 1]):
            raise ValueError("the free lists, pcp lists and gap overlap")
        fl = arrays["frame.flags"]
        inuse = np.concatenate([[0], np.cumsum((fl & PG_USED) != 0)])
        def at(p):                  # index into the used-range arrays of a PFN boundary
            return np.where(p <= d1, np.minimum(p, d1), d1 + np.maximum(p - t0, 0))
        s_all = np.concatenate([starts, [lo, max(lo, t0)]]).astype(np.int64)
        e_all = np.concatenate([ends, [min(hi, d1), hi]]).astype(np.int64)
        keep = e_all > s_all
        if np.any(inuse[at(e_all[keep])] - inuse[at(s_all[keep])]):
            raise ValueError("the free lists hold frames in use")
        if int(np.count_nonzero((fl & PG_USED) == 0)) + (t0 - d1) != \
                len(fd) + len(ft) + int(size.sum()) + (hi - lo):
            raise ValueError("free frames that are on no free list")
        heads = np.concatenate([np.arange(d1), np.arange(t0, n)])[(fl & PG_BUDDY) != 0]
        byhead = np.argsort(fb, kind="stable")
        if not np.array_equal(heads, fb[byhead]) or np.any(
                ((fl[at(fb)] >> PG_ORDER_SHIFT) & 15) != orders):
            raise ValueError("PG_BUDDY flags and the free lists disagree")
        key = fb * 16 + orders
        small = orders < MAX_PAGE_ORDER
        if np.any(np.isin(((fb ^ size) * 16 + orders)[small], key)) or \
                np.any(fb + size == lo) or np.any(fb == hi):
            raise ValueError("free blocks that should have merged")
        nr_free = _scalar(scalars, "nr_free", 0, n)
        if nr_free != len(fd) + len(ft) + int(size.sum()) + (hi - lo):
            raise ValueError(f"free lists hold {len(fd) + len(ft) + int(size.sum())} + "
                             f"{hi - lo} frames in the gap, nr_free is {nr_free}")
        z = _scalar(scalars, "zero_pfn", 0, d1 - 1)
        ev = scalars.get("events")
        if isinstance(ev, list) and _SAVED_EVENTS <= len(ev) < NR_EVENTS:
            ev = ev + [0] * (NR_EVENTS - len(ev))   # the slots after 30 are saved when used
        if not isinstance(ev, list) or len(ev) != NR_EVENTS or not all(
                isinstance(x, int) and not isinstance(x, bool) and 0 <= x < (1 << 62) for x in ev):
            raise ValueError(f"expected {_SAVED_EVENTS} to {NR_EVENTS} event counters in [0, 2^62)")
        eager = _scalar(scalars, "cow_eager", 0, 1)
        nid = _scalar(scalars, "next_mm_id", 0, (1 << 31) - 2)
        calls = _scalar(scalars, "alloc_calls", 0, (1 << 62) - 1)
        failed = _scalar(scalars, "alloc_failed", 0, calls)
        gauges = {k: _scalar(scalars, k, 0, n) for k in (
            "nr_anon_mapped", "nr_file_mapped", "nr_shmem", "nr_file_pages", "nr_pagetable")}
        dp = arrays.get("data_pfns")
        if not isinstance(dp, np.ndarray) or dp.dtype != np.int64 or dp.ndim != 1 or len(dp) > used:
            raise ValueError("bad array data_pfns")
        if len(dp) and (np.any(dp[1:] <= dp[:-1]) or dp[0] < 0 or dp[-1] >= n
                        or np.any((dp >= d1) & (dp < t0))):
            raise ValueError("data_pfns must increase inside the used ranges")
        if len(dp) and np.any((fl[at(dp)] & (PG_USED | PG_HASDATA)) != PG_USED | PG_HASDATA):
            raise ValueError("data_pfns names a frame not in use or not flagged PG_HASDATA")
        # validated: write
        for name, view in views.items():
            a = arrays["frame." + name]
            view[:d1] = a[:d1]          # [d1, t0) stays as a fresh PhysMem has it: zeros
            view[t0:] = a[d1:]
        self.pm.data_hwm = d1
        self.pm.table_lwm = t0
        self.pm.gap_lo = lo
        self.pm.gap_hi = hi
        self.pm.pcp_high = high
        self.pm.pcp_batch = batch
        cdef const int64_t[::1] v
        for kind, a in ((0, fd), (1, ft)):
            v = np.ascontiguousarray(a)
            for i in range(v.shape[0]):
                _pcp_push(&self.pm, kind, v[i])
        v = np.ascontiguousarray(fb)
        j = v.shape[0]
        for lst in range(NR_FREE_LISTS - 1, -1, -1):     # each list tail first
            for i in range(counts[lst]):
                j -= 1
                _add_to_free_list(&self.pm, v[j], lst % NR_PAGE_ORDERS)
        self.pm.zero_pfn = z
        self.pm.huge_zero_pfn = -1
        self.pm.nr_free = nr_free
        self.pm.nr_anon_mapped = gauges["nr_anon_mapped"]
        self.pm.nr_file_mapped = gauges["nr_file_mapped"]
        self.pm.nr_shmem = gauges["nr_shmem"]
        self.pm.nr_file_pages = gauges["nr_file_pages"]
        self.pm.nr_pagetable = gauges["nr_pagetable"]
        for i in range(NR_EVENTS):
            self.pm.ev[i] = ev[i]
        self.pm.cow_eager = eager
        self.pm.alloc_calls = calls
        self.pm.alloc_failed = failed
        self._next_mm_id = nid
        # the frame contents, piece by piece
        cdef const int64_t[::1] pfns = dp
        cdef int64_t nf, done = 0, total = pfns.shape[0]
        cdef const uint8_t[::1] d
        for piece in frames:
            d = piece
            nf = d.shape[0] // 4096
            if d.shape[0] % 4096 or nf > total - done:
                raise ValueError(f"frame contents: {d.shape[0]} bytes at frame {done} of {total}")
            with nogil:
                for i in range(nf):
                    memcpy(frame_ptr(&self.pm, pfns[done + i]), &d[i * 4096], 4096)
            done += nf
        if done != total:
            raise ValueError(f"frame contents for {done} of {total} frames")


def _scalar(dict d, str key, lo, hi):
    """d[key], an int in [lo, hi] (ValueError otherwise)."""
    v = d.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise ValueError(f"scalar {key!r} must be an integer in [{lo}, {hi}], not "
                         f"{reprlib.repr(v)}")
    return v


def _ints(dict d, str key, int n):
    """d[key], a list of n ints in [0, 2^62] (ValueError otherwise)."""
    v = d.get(key)
    if not isinstance(v, list) or len(v) != n or not all(
            isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= (1 << 62) for x in v):
        raise ValueError(f"{key!r} must be a list of {n} integers in [0, 2^62]")
    return v
