from libc.stdint cimport int32_t, int64_t, uint64_t
from mmemu._core.types cimport pfn_t

# A page cache (struct address_space's i_pages): a radix tree of 512-slot nodes, like
# lib/xarray.c with XA_CHUNK_SHIFT 9. A tree of height h covers indexes [0, 512**h); the
# height grows on demand, so host memory follows the pages cached, never the file size.
# Leaf slots hold pfn + 1 (0 = no page); interior slots hold child nodes (0 = none).
cdef enum:
    XA_CHUNK_SHIFT = 9
    XA_CHUNK_MASK = 511
    XA_MAX_HEIGHT = 7       # 512**7 = 2**63 indexes: every int64 index >= 0

cdef struct xa_node:
    uint64_t slots[512]
    int32_t count           # slots in use

cdef struct xarray_t:
    xa_node* root           # NULL when empty
    int32_t height          # levels, 0 when empty
    int64_t nr_pages        # leaf entries (pages cached)
    int64_t nr_nodes        # nodes allocated (host memory: nr_nodes * sizeof(xa_node))


cdef inline pfn_t xa_load(const xarray_t* xa, int64_t index) noexcept nogil:
    """xa_load / filemap_get_folio without a reference: the page at index, or -1."""
    cdef const xa_node* node = xa.root
    cdef int shift = XA_CHUNK_SHIFT * (xa.height - 1)
    if node == NULL or index < 0 or (index >> (XA_CHUNK_SHIFT * xa.height)) != 0:
        return -1
    while shift > 0:
        node = <const xa_node*>node.slots[(index >> shift) & XA_CHUNK_MASK]
        if node == NULL:
            return -1
        shift -= XA_CHUNK_SHIFT
    return <pfn_t>node.slots[index & XA_CHUNK_MASK] - 1


cdef int xa_store(xarray_t* xa, int64_t index, pfn_t pfn) noexcept nogil
cdef pfn_t xa_erase(xarray_t* xa, int64_t index) noexcept nogil
cdef pfn_t xa_find(const xarray_t* xa, int64_t* index, int64_t last) noexcept nogil


cdef class PageCache:
    cdef xarray_t xa
