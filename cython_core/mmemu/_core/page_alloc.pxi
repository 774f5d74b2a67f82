# The page allocator (mm/page_alloc.c), included by physmem.pyx.
#
# A free frame is in exactly one of three places:
#   - a per-cpu-pages list (order 0): a stack per kind, freed frames pushed and popped at
#     the hot end (last in, first out), the coldest (at its base) given back to the buddy
#     lists in batches when a list grows beyond pcp_high (free_pcppages_bulk);
#   - a buddy free list: a block of 2^order frames (order 0..MAX_PAGE_ORDER), aligned to its
#     size, its head flagged PG_BUDDY with the order in the flags, doubly linked through
#     buddy_next/buddy_prev; one list per (kind, order);
#   - the gap [gap_lo, gap_hi): free memory on no list, which holds every frame never handed
#     out (so a new machine is O(1) and never-used frames are never touched) and every freed
#     block that touches it. Data allocations take its bottom, table allocations its top.
# A frame's kind is where it lies: page tables at or above table_lwm, data below.

cdef extern from *:
    int __builtin_ctzll(unsigned long long x) nogil
    bint unlikely(bint x) nogil         # Cython's own __builtin_expect(!!(x), 0)


cdef inline int _kind(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """1 for the page-table end of memory (at or above table_lwm), 0 for the data end."""
    return pfn >= pm.table_lwm


cdef inline int _buddy_order(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """buddy_order: the order of the free block pfn heads (PG_BUDDY set)."""
    return (pm.flags[pfn] >> PG_ORDER_SHIFT) & 15


cdef void _add_to_free_list(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """__add_to_free_list + set_buddy_order: pfn heads a free block, first on its list
    (Linux's heuristic of adding likely-to-merge blocks at the tail is left out)."""
    cdef int i = _kind(pm, pfn) * NR_PAGE_ORDERS + order
    cdef pfn_t head = pm.free_head[i]
    pm.flags[pfn] = (pm.flags[pfn] & PG_HASDATA) | PG_BUDDY | (<uint32_t>order << PG_ORDER_SHIFT)
    pm.buddy_prev[pfn] = -1
    pm.buddy_next[pfn] = head
    if head >= 0:
        pm.buddy_prev[head] = pfn
    pm.free_head[i] = pfn
    pm.nr_blocks[i] += 1
    pm.free_mask[i >= NR_PAGE_ORDERS] |= 1u << order


cdef void _del_from_free_list(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """del_page_from_free_list: unlink the block pfn heads and clear PageBuddy."""
    cdef int i = _kind(pm, pfn) * NR_PAGE_ORDERS + order
    cdef pfn_t prev = pm.buddy_prev[pfn], nxt = pm.buddy_next[pfn]
    if prev >= 0:
        pm.buddy_next[prev] = nxt
    else:
        pm.free_head[i] = nxt
    if nxt >= 0:
        pm.buddy_prev[nxt] = prev
    pm.flags[pfn] &= PG_HASDATA
    pm.nr_blocks[i] -= 1
    if pm.free_head[i] < 0:
        pm.free_mask[i >= NR_PAGE_ORDERS] &= ~(1u << order)


cdef void _absorb(physmem_t* pm) noexcept nogil:
    """Free blocks that touch the gap join it, until none does."""
    cdef int o
    cdef pfn_t h
    cdef bint again = True
    while again:
        again = False
        o = 0
        while pm.gap_lo > 0 and o <= MAX_PAGE_ORDER and not (pm.gap_lo & ((<pfn_t>1 << o) - 1)):
            h = pm.gap_lo - (<pfn_t>1 << o)
            if h < 0:
                break
            if (pm.flags[h] & PG_BUDDY) and _buddy_order(pm, h) == o:
                _del_from_free_list(pm, h, o)
                pm.gap_lo = h
                again = True
                break
            o += 1
        if pm.gap_hi < pm.nframes and (pm.flags[pm.gap_hi] & PG_BUDDY):
            o = _buddy_order(pm, pm.gap_hi)
            _del_from_free_list(pm, pm.gap_hi, o)
            pm.gap_hi += <pfn_t>1 << o
            again = True


cdef void _free_one_page(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """__free_one_page: merge the free block with its buddy while the buddy is a free block
    of the same order, then put it on its free list, or into the gap if it touches it.
    The frames' metadata is already that of free frames."""
    cdef pfn_t buddy, size
    while order < MAX_PAGE_ORDER:
        size = <pfn_t>1 << order
        buddy = pfn ^ size
        if buddy + size > pm.nframes:
            break
        if not (pm.flags[buddy] & PG_BUDDY) or _buddy_order(pm, buddy) != order:
            break
        _del_from_free_list(pm, buddy, order)
        pfn &= ~size
        order += 1
    size = <pfn_t>1 << order
    if pfn + size == pm.gap_lo:
        pm.gap_lo = pfn
        _absorb(pm)
    elif pfn == pm.gap_hi:
        pm.gap_hi = pfn + size
        _absorb(pm)
    else:
        _add_to_free_list(pm, pfn, order)


cdef void _free_range(physmem_t* pm, pfn_t lo, pfn_t hi) noexcept nogil:
    """Put [lo, hi) on the free lists as the largest aligned blocks it holds (the part of
    the gap an aligned allocation skipped; none of them can merge)."""
    cdef int o
    while lo < hi:
        o = MAX_PAGE_ORDER if lo == 0 else min(__builtin_ctzll(<unsigned long long>lo), MAX_PAGE_ORDER)
        while lo + (<pfn_t>1 << o) > hi:
            o -= 1
        _add_to_free_list(pm, lo, o)
        lo += <pfn_t>1 << o


cdef pfn_t _expand(physmem_t* pm, pfn_t pfn, int low, int high, bint top) noexcept nogil:
    """expand: split a block of order `high` down to `low`, putting back the halves not
    kept. Data keep the lowest part (memory fills bottom up), tables (top) the highest."""
    cdef pfn_t size = <pfn_t>1 << high
    while high > low:
        high -= 1
        size >>= 1
        if top:
            _add_to_free_list(pm, pfn, high)
            pfn += size
        else:
            _add_to_free_list(pm, pfn + size, high)
    return pfn


cdef pfn_t _rmqueue_smallest(physmem_t* pm, int order, int kind, bint top) noexcept nogil:
    """__rmqueue_smallest: the first block of the smallest order >= order on kind's lists,
    split down to order. -1 if there is none."""
    cdef uint32_t m = pm.free_mask[kind] >> order
    cdef int o
    cdef pfn_t pfn
    if m == 0:
        return -1
    o = order + __builtin_ctzll(m)
    pfn = pm.free_head[kind * NR_PAGE_ORDERS + o]
    _del_from_free_list(pm, pfn, o)
    return _expand(pm, pfn, order, o, top)


cdef pfn_t _gap_take(physmem_t* pm, int order, bint top) noexcept nogil:
    """An aligned block of 2^order frames from the gap: the lowest one for data, the highest
    for tables; the frames skipped to align it go on the free lists. -1 if none fits."""
    cdef pfn_t size = <pfn_t>1 << order, s, e, edge
    if top:
        e = pm.gap_hi & ~(size - 1)
        s = e - size
        if s < pm.gap_lo:
            return -1
        edge = pm.gap_hi
        pm.gap_hi = s
        if edge > pm.data_hwm and s < pm.table_lwm:      # [s, edge) now counts as used
            pm.table_lwm = max(s, pm.data_hwm)
        _free_range(pm, e, edge)
    else:
        s = (pm.gap_lo + size - 1) & ~(size - 1)
        e = s + size
        if e > pm.gap_hi:
            return -1
        edge = pm.gap_lo
        pm.gap_lo = e
        if edge < pm.table_lwm and e > pm.data_hwm:      # [edge, e) now counts as used
            pm.data_hwm = min(e, pm.table_lwm)
        _free_range(pm, edge, s)
    return s


cdef inline void _pcp_push(physmem_t* pm, int kind, pfn_t pfn) noexcept nogil:
    pm.pcp[kind][pm.pcp_base[kind] + pm.pcp_count[kind]] = pfn
    pm.pcp_count[kind] += 1


cdef inline pfn_t _pcp_pop(physmem_t* pm, int kind) noexcept nogil:
    pm.pcp_count[kind] -= 1
    return pm.pcp[kind][pm.pcp_base[kind] + pm.pcp_count[kind]]


cdef void _free_pcppages_bulk(physmem_t* pm, int kind, int64_t n) noexcept nogil:
    """free_pcppages_bulk: give the n coldest frames of a pcp list to the buddy lists."""
    cdef pfn_t pfn
    cdef int64_t* stack = pm.pcp[kind]
    while n > 0 and pm.pcp_count[kind] > 0:
        pfn = stack[pm.pcp_base[kind]]
        pm.pcp_base[kind] += 1
        pm.pcp_count[kind] -= 1
        _free_one_page(pm, pfn, 0)
        n -= 1
    if pm.pcp_base[kind] >= pm.nframes:     # keep base + count below 2 * nframes
        memmove(stack, stack + pm.pcp_base[kind], pm.pcp_count[kind] * sizeof(int64_t))
        pm.pcp_base[kind] = 0


ctypedef void (*pcp_trim_t)(physmem_t* pm, int kind, int64_t n) noexcept nogil
cdef pcp_trim_t _pcp_trim = _free_pcppages_bulk     # called through a pointer: the free
                                                    # fast path stays small (not inlined)


cdef void drain_all_pages(physmem_t* pm) noexcept nogil:
    """drain_all_pages: every pcp frame back to the buddy lists."""
    _free_pcppages_bulk(pm, 0, pm.pcp_count[0])
    _free_pcppages_bulk(pm, 1, pm.pcp_count[1])


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


cdef pfn_t _rmqueue(physmem_t* pm, int order, int kind, bint* from_pcp) noexcept nogil:
    """rmqueue past the caller's own pcp list: kind's buddy lists (smallest block first),
    the gap, the other kind's buddy lists, and for order 0 the other kind's pcp list
    (__rmqueue_fallback). An order > 0 that finds nothing drains the pcp lists and tries
    once more (the kernel's drain_all_pages before it gives up). -1 if nothing fits.
    from_pcp (if not NULL) is set when the block came off the other pcp list."""
    cdef pfn_t pfn
    cdef int other = 1 - kind
    while True:
        pfn = _rmqueue_smallest(pm, order, kind, kind)
        if pfn < 0:
            pfn = _gap_take(pm, order, kind)
        if pfn < 0:
            pfn = _rmqueue_smallest(pm, order, other, kind)
        if pfn >= 0:
            return pfn
        if order == 0:
            if pm.pcp_count[other] > 0:
                if from_pcp != NULL:
                    from_pcp[0] = True
                return _pcp_pop(pm, other)
            return -1
        if pm.pcp_count[0] == 0 and pm.pcp_count[1] == 0:
            return -1
        drain_all_pages(pm)


cdef inline pfn_t _take(physmem_t* pm, int order, int kind, bint* from_pcp) noexcept nogil:
    """Take a block off the free lists (kind's own pcp list first for order 0) and make
    each of its frames in use with one reference (post_alloc_hook); no events are counted
    here. -1 if none (or an injected failure). from_pcp (if not NULL) says whether it came
    off a pcp list."""
    cdef pfn_t pfn, p
    cdef int64_t i, n
    pm.alloc_calls += 1
    if unlikely(pm.fail_countdown > 0) and order >= pm.fail_min_order and _should_fail(pm):
        pm.alloc_failed += 1
        return -1
    if from_pcp != NULL:
        from_pcp[0] = order == 0 and pm.pcp_count[kind] > 0
    if order == 0 and pm.pcp_count[kind] > 0:       # the hot path
        pfn = _pcp_pop(pm, kind)
    else:
        pfn = _rmqueue(pm, order, kind, from_pcp)
        if pfn < 0:
            pm.alloc_failed += 1
            return -1
    n = <int64_t>1 << order
    for i in range(n):
        p = pfn + i
        pm.flags[p] = PG_USED | (pm.flags[p] & PG_HASDATA)
        pm.refcount[p] = 1
        pm.mapcount[p] = 0
        pm.pt_share[p] = 0
        pm.pt_owner[p] = 0
    pm.nr_free -= n
    return pfn


cdef inline void _clear_frames(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """The metadata of free frames (free_pages_prepare); the bytes stay (PG_HASDATA)."""
    cdef int64_t i, n = <int64_t>1 << order
    cdef pfn_t p
    for i in range(n):
        p = pfn + i
        if MMEMU_DEBUG_BUILD:
            if not (pm.flags[p] & PG_USED) or (pm.flags[p] & (PG_BUDDY | PG_RESERVED)):
                fprintf(stderr, b"mmemu: freeing frame %lld, which is not in use (flags %#x)\n",
                        <long long>p, pm.flags[p])
                abort()
        pm.flags[p] = pm.flags[p] & PG_HASDATA
        pm.refcount[p] = 0
        pm.mapcount[p] = 0
        pm.pt_share[p] = 0
        pm.pt_owner[p] = 0
    pm.nr_free += n


cdef void _put_back(physmem_t* pm, pfn_t pfn, int order, bint from_pcp) noexcept nogil:
    """Undo _take for a block never handed out: back where it came from, no events."""
    _clear_frames(pm, pfn, order)
    if from_pcp:
        _pcp_push(pm, _kind(pm, pfn), pfn)
    else:
        _free_one_page(pm, pfn, order)


cdef inline void _prep_zero(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """__GFP_ZERO: clear the frames that held data (the others are zero already)."""
    cdef pfn_t p = pfn, end = pfn + (<pfn_t>1 << order)
    while p < end:
        if pm.flags[p] & PG_HASDATA:
            memset(frame_ptr(pm, p), 0, 4096)
            pm.ev[EV_PAGES_ZEROED] += 1
            pm.flags[p] = PG_USED
        p += 1


cdef pfn_t _pool_take(physmem_t* pm, int order, int kind) noexcept nogil:
    """The first reserved block of this order and kind (pool_avail says there is one)."""
    cdef uint8_t tag = <uint8_t>(order | (kind << 4))
    cdef int64_t i = pm.pool_head
    cdef pfn_t pfn
    while pm.pool[i] < 0 or (pm.pool_tag[i] & ~POOL_FROM_PCP) != tag:
        i += 1
    pfn = pm.pool[i]
    pm.pool[i] = -1
    pm.pool_avail[kind * NR_PAGE_ORDERS + order] -= 1
    pm.pool_frames -= <int64_t>1 << order
    while pm.pool_head < pm.pool_len and pm.pool[pm.pool_head] < 0:
        pm.pool_head += 1
    return pfn


cdef pfn_t alloc_pages(physmem_t* pm, int order, bint table, bint zero) noexcept nogil:
    """__alloc_pages: a block of 2^order frames (order <= MAX_PAGE_ORDER), each in use with
    one reference; -1 if none. A reserved block of the same order and kind is taken first
    (reserve_pages), which cannot fail. zero clears the frames that held data."""
    cdef pfn_t pfn
    cdef int kind = table
    if pm.pool_avail[kind * NR_PAGE_ORDERS + order] > 0:
        pfn = _pool_take(pm, order, kind)
    else:
        pfn = _take(pm, order, kind, NULL)
        if pfn < 0:
            return -1
    if not table:
        pm.ev[EV_PGALLOC] += <int64_t>1 << order
    if zero:
        _prep_zero(pm, pfn, order)
    return pfn


cdef pfn_t alloc_frame(physmem_t* pm, bint table, bint zero) noexcept nogil:
    """alloc_pages at order 0 (the hot path: a pcp pop). Data frames come from the bottom
    of memory, table frames from the top, so tables pack densely in host memory."""
    cdef pfn_t pfn
    if pm.pool_frames > 0 and pm.pool_avail[table * NR_PAGE_ORDERS] > 0:
        pfn = _pool_take(pm, 0, table)
    elif table:                 # a constant kind: _take's order-0 path inlined twice
        pfn = _take(pm, 0, 1, NULL)
        if pfn < 0:
            return -1
    else:
        pfn = _take(pm, 0, 0, NULL)
        if pfn < 0:
            return -1
        pm.ev[EV_PGALLOC] += 1
    if zero and (pm.flags[pfn] & PG_HASDATA):
        if table or not pm.overwrite:   # a data page access_range writes whole: dead
            memset(frame_ptr(pm, pfn), 0, 4096)
        pm.ev[EV_PAGES_ZEROED] += 1
        pm.flags[pfn] = PG_USED
    return pfn


cdef void free_pages(physmem_t* pm, pfn_t pfn, int order) noexcept nogil:
    """__free_pages: order 0 goes on its pcp list (free_frame), a larger block to the buddy
    lists, merging as far as it can."""
    if order == 0:
        free_frame(pm, pfn)
        return
    _clear_frames(pm, pfn, order)
    if not _kind(pm, pfn):
        pm.ev[EV_PGFREE] += <int64_t>1 << order
    _free_one_page(pm, pfn, order)


cdef inline void free_unref_page(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """free_unref_page: on the hot end of its pcp list; a list grown beyond pcp_high gives
    its coldest frames to the buddy lists, down to pcp_high - pcp_batch + 1."""
    _clear_frames(pm, pfn, 0)
    if _kind(pm, pfn):
        _pcp_push(pm, 1, pfn)
        if unlikely(pm.pcp_count[1] > pm.pcp_high):
            _pcp_trim(pm, 1, pm.pcp_count[1] - pm.pcp_high + pm.pcp_batch - 1)
    else:
        _pcp_push(pm, 0, pfn)
        pm.ev[EV_PGFREE] += 1
        if unlikely(pm.pcp_count[0] > pm.pcp_high):
            _pcp_trim(pm, 0, pm.pcp_count[0] - pm.pcp_high + pm.pcp_batch - 1)


cdef void free_frame(physmem_t* pm, pfn_t pfn) noexcept nogil:
    """free_pages at order 0 (free_unref_page)."""
    free_unref_page(pm, pfn)


cdef int64_t frames_available(physmem_t* pm) noexcept nogil:
    """Frames an allocation can still get: the free ones and the reserved ones."""
    return pm.nr_free + pm.pool_frames


cdef void _pool_compact(physmem_t* pm) noexcept nogil:
    """Squeeze the handed-out entries out of the pool, keeping the others in order."""
    cdef int64_t i, k = 0
    for i in range(pm.pool_head, pm.pool_len):
        if pm.pool[i] >= 0:
            pm.pool[k] = pm.pool[i]
            pm.pool_tag[k] = pm.pool_tag[i]
            k += 1
    pm.pool_head = 0
    pm.pool_len = k


cdef int reserve_pages(physmem_t* pm, int order, bint table, int64_t n, bint scope) noexcept nogil:
    """Open a reservation scope holding at least n unused blocks of this order and kind:
    0, or -1 with nothing taken (and no scope opened) if the allocator refuses one of them.
    With scope=False, top up the current scope instead of opening one.

    Blocks are taken in the order the operation would have allocated them and handed out
    first-in first-out, so a reserved operation gets the same frames an unreserved one
    would have; taking, giving back and handing out count the same events as an
    unreserved allocation would (none until a block is handed out)."""
    cdef int kind = table
    cdef int64_t start, i, need
    cdef int64_t* avail = &pm.pool_avail[kind * NR_PAGE_ORDERS + order]
    cdef pfn_t pfn
    cdef bint from_pcp
    if pm.pool_head == pm.pool_len:
        pm.pool_head = pm.pool_len = 0
    need = n - avail[0]
    if need > (pm.nr_free >> order):
        pm.alloc_failed += 1
        return -1
    if need > 0 and pm.pool_len + need > pm.nframes:
        _pool_compact(pm)       # each entry not handed out holds distinct frames: it fits
    start = pm.pool_len
    while avail[0] < n:
        pfn = _take(pm, order, kind, &from_pcp)
        if pfn < 0:
            # give back this call's blocks, last taken first, so that the first one taken
            # is the next one handed out (as if nothing had been reserved)
            i = pm.pool_len - 1
            while i >= start:
                _put_back(pm, pm.pool[i], order, pm.pool_tag[i] & POOL_FROM_PCP)
                i -= 1
            avail[0] -= pm.pool_len - start
            pm.pool_frames -= (pm.pool_len - start) << order
            pm.pool_len = start
            return -1
        pm.pool[pm.pool_len] = pfn
        pm.pool_tag[pm.pool_len] = <uint8_t>(order | (kind << 4) | (POOL_FROM_PCP if from_pcp else 0))
        pm.pool_len += 1
        avail[0] += 1
        pm.pool_frames += <int64_t>1 << order
    if scope:
        pm.pool_depth += 1
    return 0


cdef int reserve_frames(physmem_t* pm, int64_t n, bint scope=True) noexcept nogil:
    """reserve_pages of n page-table frames (order 0)."""
    return reserve_pages(pm, 0, True, n, scope)


cdef void release_reserve(physmem_t* pm) noexcept nogil:
    """Close a reservation scope; the outermost one gives back what was not used."""
    cdef int64_t i
    pm.pool_depth -= 1
    if pm.pool_depth > 0:
        return
    i = pm.pool_len - 1
    while i >= pm.pool_head:
        if pm.pool[i] >= 0:
            _put_back(pm, pm.pool[i], pm.pool_tag[i] & 15, pm.pool_tag[i] & POOL_FROM_PCP)
        i -= 1
    pm.pool_head = pm.pool_len = 0
    for i in range(NR_FREE_LISTS):
        pm.pool_avail[i] = 0
    pm.pool_frames = 0
