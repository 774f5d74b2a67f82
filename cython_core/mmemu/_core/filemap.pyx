# cython: language_level=3
"""Page caches: the index -> PFN map of a file or shmem object (address_space.i_pages).

Models the part of lib/xarray.c the page cache uses (xa_load, xa_store, xa_erase, xa_find)
as a radix tree of 512-slot nodes whose height grows on demand: a lookup is at most seven
loads, and host memory is one 4 KiB node per 512-page run that holds a page (plus the
nodes above it), whatever the size of the file. Leaves out: multi-index entries (large
folios), marks (dirty/writeback tags), RCU and shadow entries.
"""
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free

import operator

cimport numpy as cnp
import numpy as np

from mmemu._core.types cimport pfn_t

cnp.import_array()

NODE_BYTES = sizeof(xa_node)
MAX_INDEX = (1 << 63) - 1


cdef inline xa_node* _node_alloc(xarray_t* xa) noexcept nogil:
    cdef xa_node* n = <xa_node*>calloc(1, sizeof(xa_node))
    if n != NULL:
        xa.nr_nodes += 1
    return n


cdef inline void _node_free(xarray_t* xa, xa_node* n) noexcept nogil:
    free(n)
    xa.nr_nodes -= 1


cdef inline bint _covers(const xarray_t* xa, int64_t index) noexcept nogil:
    """index (>= 0) lies below 512**height (height 7 covers every one)."""
    return (index >> (XA_CHUNK_SHIFT * xa.height)) == 0


cdef void _prune(xarray_t* xa, int64_t index) noexcept nogil:
    """xas_delete_node: free the nodes on index's path that hold nothing (bottom up), then
    xas_shrink: drop roots that only hold slot 0."""
    cdef xa_node* path[XA_MAX_HEIGHT]
    cdef int slot[XA_MAX_HEIGHT]
    cdef int depth = 0, shift
    cdef xa_node* node = xa.root
    cdef xa_node* child
    if node != NULL and _covers(xa, index):
        shift = XA_CHUNK_SHIFT * (xa.height - 1)
        while node != NULL:
            path[depth] = node
            slot[depth] = (index >> shift) & XA_CHUNK_MASK
            depth += 1
            if shift == 0:
                break
            node = <xa_node*>node.slots[slot[depth - 1]]
            shift -= XA_CHUNK_SHIFT
        while depth > 0 and path[depth - 1].count == 0:
            depth -= 1
            _node_free(xa, path[depth])
            if depth == 0:
                xa.root = NULL
                xa.height = 0
            else:
                path[depth - 1].slots[slot[depth - 1]] = 0
                path[depth - 1].count -= 1
    while xa.height > 1 and xa.root.count == 1 and xa.root.slots[0] != 0:
        child = <xa_node*>xa.root.slots[0]
        _node_free(xa, xa.root)
        xa.root = child
        xa.height -= 1


cdef int xa_store(xarray_t* xa, int64_t index, pfn_t pfn) noexcept nogil:
    """xa_store: pfn becomes the page at index (0 <= index, 0 <= pfn). Returns 0, or -1
    when the host has no memory for a node (the tree then holds what it held)."""
    cdef xa_node* node
    cdef xa_node* child
    cdef int shift, i
    if xa.root == NULL:
        xa.height = 1
        while not _covers(xa, index):
            xa.height += 1
        xa.root = _node_alloc(xa)
        if xa.root == NULL:
            xa.height = 0
            return -1
    while not _covers(xa, index):          # xas_expand: a new root above the old one
        node = _node_alloc(xa)
        if node == NULL:
            _prune(xa, index)
            return -1
        node.slots[0] = <uint64_t>xa.root
        node.count = 1
        xa.root = node
        xa.height += 1
    node = xa.root
    shift = XA_CHUNK_SHIFT * (xa.height - 1)
    while shift > 0:
        i = (index >> shift) & XA_CHUNK_MASK
        child = <xa_node*>node.slots[i]
        if child == NULL:
            child = _node_alloc(xa)
            if child == NULL:
                _prune(xa, index)
                return -1
            node.slots[i] = <uint64_t>child
            node.count += 1
        node = child
        shift -= XA_CHUNK_SHIFT
    i = index & XA_CHUNK_MASK
    if node.slots[i] == 0:
        node.count += 1
        xa.nr_pages += 1
    node.slots[i] = <uint64_t>pfn + 1
    return 0


cdef pfn_t xa_erase(xarray_t* xa, int64_t index) noexcept nogil:
    """xa_erase: remove the page at index; returns its pfn, or -1 if there was none."""
    cdef xa_node* node = xa.root
    cdef int shift
    cdef pfn_t old
    if node == NULL or index < 0 or not _covers(xa, index):
        return -1
    shift = XA_CHUNK_SHIFT * (xa.height - 1)
    while shift > 0:
        node = <xa_node*>node.slots[(index >> shift) & XA_CHUNK_MASK]
        if node == NULL:
            return -1
        shift -= XA_CHUNK_SHIFT
    old = <pfn_t>node.slots[index & XA_CHUNK_MASK] - 1
    if old < 0:
        return -1
    node.slots[index & XA_CHUNK_MASK] = 0
    node.count -= 1
    xa.nr_pages -= 1
    _prune(xa, index)
    return old


cdef pfn_t _find(const xa_node* node, int shift, int64_t base, int64_t* index,
                 int64_t last) noexcept nogil:
    """The first page at an index in [*index, last] below node (which covers indexes from
    base); sets *index. -1 if none."""
    cdef int64_t start, at
    cdef int i = 0
    cdef pfn_t r
    if index[0] > base:
        i = <int>((index[0] - base) >> shift)
    while i <= XA_CHUNK_MASK:
        start = base + (<int64_t>i << shift)
        if start > last:
            return -1
        if node.slots[i] != 0:
            if shift == 0:
                index[0] = start
                return <pfn_t>node.slots[i] - 1
            at = index[0] if index[0] > start else start
            r = _find(<const xa_node*>node.slots[i], shift - XA_CHUNK_SHIFT, start, &at, last)
            if r >= 0:
                index[0] = at
                return r
        i += 1
    return -1


cdef pfn_t xa_find(const xarray_t* xa, int64_t* index, int64_t last) noexcept nogil:
    """xa_find: the first page at an index in [*index, last]; sets *index. -1 if none."""
    if xa.root == NULL or index[0] < 0 or index[0] > last:
        return -1
    return _find(xa.root, XA_CHUNK_SHIFT * (xa.height - 1), 0, index, last)


cdef void _free_tree(xa_node* node, int shift) noexcept nogil:
    cdef int i
    if shift > 0:
        for i in range(XA_CHUNK_MASK + 1):
            if node.slots[i] != 0:
                _free_tree(<xa_node*>node.slots[i], shift - XA_CHUNK_SHIFT)
    free(node)


cdef int64_t _index(object index) except -1:
    i = operator.index(index)
    if not 0 <= i <= MAX_INDEX:
        raise IndexError(f"page index {i} outside [0, 2**63)")
    return i


cdef class PageCache:
    """The page cache of one file or shmem object: page index -> PFN, sparse.

    ``cache[i]`` is the PFN of page i or -1; ``len(cache)`` the pages cached. The Cython
    fault path reads it without the GIL through ``xa_load``. Host memory is
    ``cache.nodes * NODE_BYTES``: it grows with the pages cached, not with the file size.
    """

    def __dealloc__(self):
        if self.xa.root != NULL:
            _free_tree(self.xa.root, XA_CHUNK_SHIFT * (self.xa.height - 1))
        self.xa.root = NULL

    def __len__(self):
        return self.xa.nr_pages

    def __getitem__(self, index):
        return xa_load(&self.xa, _index(index))

    def __repr__(self):
        return f"<PageCache pages={self.xa.nr_pages} nodes={self.xa.nr_nodes}>"

    @property
    def nodes(self):
        """Tree nodes allocated (each NODE_BYTES of host memory)."""
        return self.xa.nr_nodes

    def store(self, index, pfn_t pfn):
        """Make pfn (>= 0) the page at index. False (nothing changed) if the host has no
        memory for a tree node."""
        if pfn < 0:
            raise ValueError(f"pfn {pfn} < 0")
        return xa_store(&self.xa, _index(index), pfn) == 0

    def erase(self, index):
        """Remove the page at index; its PFN, or -1 if there was none."""
        return xa_erase(&self.xa, _index(index))

    def count(self, first=0, last=None):
        """Pages cached at indexes in [first, last) (last None: to the end)."""
        return _walk(&self.xa, _index(first), MAX_INDEX if last is None else _index(last) - 1,
                     NULL, NULL)

    def entries(self, first=0, last=None):
        """(indexes, pfns) of the pages at indexes in [first, last), in index order, as
        two int64 arrays (last None: to the end)."""
        cdef int64_t lo = _index(first), hi = MAX_INDEX if last is None else _index(last) - 1
        n = _walk(&self.xa, lo, hi, NULL, NULL)
        idx = np.empty(n, dtype=np.int64)
        pfn = np.empty(n, dtype=np.int64)
        cdef int64_t[::1] ix = idx
        cdef int64_t[::1] px = pfn
        if n:
            _walk(&self.xa, lo, hi, &ix[0], &px[0])
        return idx, pfn

    def pop(self, first=0, last=None):
        """entries(first, last), removed from the cache."""
        idx, pfn = self.entries(first, last)
        cdef int64_t[::1] ix = idx
        cdef int64_t k
        with nogil:
            for k in range(ix.shape[0]):
                xa_erase(&self.xa, ix[k])
        return idx, pfn


cdef int64_t _walk(const xarray_t* xa, int64_t i, int64_t last, int64_t* idx,
                   int64_t* pfn) noexcept nogil:
    """Count the pages at indexes in [i, last]; store them in idx/pfn unless NULL."""
    cdef int64_t n = 0
    cdef pfn_t p
    while i <= last:
        p = xa_find(xa, &i, last)
        if p < 0:
            break
        if idx != NULL:
            idx[n] = i
            pfn[n] = p
        n += 1
        if i == last:
            break
        i += 1
    return n
