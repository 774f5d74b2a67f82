# cython: language_level=3
"""A batch of user accesses, one page each, through the one fault path (fault.access_range):
what the MMU and do_user_addr_fault do for a run of page faults of one mm, without a Python
call per fault (mmemu.trace.replay dispatches a trace's faults here).

The access check (access_error) and the VMA lookup are the caller's: it passes, for every
access, the index of its VMA in ``vmas`` (or -1 to skip it). Left out, as in fault.access:
THP, userfaultfd, NUMA hinting.
"""
from libc.stdint cimport uint8_t, int8_t, int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free

from mmemu._core.types cimport PAGE_SIZE
from mmemu._core.pagetable cimport vma_t, MMCore, vma_from_py
from mmemu._core.fault cimport access_range


def access_batch(MMCore mmc, list vmas, const int64_t[::1] vma_index,
                 const uint64_t[::1] addrs, const uint8_t[::1] writes, int8_t[::1] rc_out):
    """access_range(page, page + 4096, write) for every address, in order, in the VMA
    vmas[vma_index[i]] (skipped where the index is -1; rc_out[i] stays as it was).
    rc_out[i] gets the FAULT_* code of access i. Returns, per VMA in ``vmas``, whether it
    has an anon_vma afterwards (anon_vma_prepare is the caller's, as in fault.access)."""
    cdef Py_ssize_t n = addrs.shape[0], nv = len(vmas), i, j, m, q
    cdef int rc
    cdef int64_t k
    cdef uint64_t fail = 0, page
    if vma_index.shape[0] != n or writes.shape[0] != n or rc_out.shape[0] != n:
        raise ValueError("access_batch: arrays of different lengths")
    for i in range(n):
        if vma_index[i] >= nv or vma_index[i] < -1:
            raise ValueError(f"access_batch: VMA index {vma_index[i]} out of range")
    cdef vma_t* vs = <vma_t*>malloc(max(nv, 1) * sizeof(vma_t))
    if vs == NULL:
        raise MemoryError()
    try:
        for i in range(nv):
            vma_from_py(&vs[i], vmas[i])
        for i in range(n):
            page = addrs[i] & ~(<uint64_t>PAGE_SIZE - 1)
            k = vma_index[i]
            if k >= 0 and not (page >= vs[k].start and page + PAGE_SIZE <= vs[k].end):
                raise ValueError(f"access_batch: address {addrs[i]:#x} outside its VMA")
        with nogil:
            i = 0
            while i < n:
                k = vma_index[i]
                if k < 0:
                    i += 1
                    continue
                # a run of ascending adjacent pages of one VMA, all reads or all writes, is
                # one access_range over the run: it visits the same pages in the same order
                page = addrs[i] & ~(<uint64_t>PAGE_SIZE - 1)
                j = i + 1
                while j < n and vma_index[j] == k and (writes[j] != 0) == (writes[i] != 0) \
                        and (addrs[j] & ~(<uint64_t>PAGE_SIZE - 1)) == page + (j - i) * PAGE_SIZE:
                    j += 1
                rc = access_range(&mmc.phys.pm, &mmc.mm, &vs[k], page, page + (j - i) * PAGE_SIZE,
                                  writes[i] != 0, NULL, 0, &fail)
                if rc == 0:
                    for m in range(i, j):
                        rc_out[m] = 0
                    i = j
                else:                   # pages before the failing one were accessed
                    m = i + <Py_ssize_t>((fail - page) // PAGE_SIZE)
                    for q in range(i, m):
                        rc_out[q] = 0
                    rc_out[m] = <int8_t>rc
                    i = m + 1
        return [bool(vs[i].anon_vma) for i in range(nv)]
    finally:
        free(vs)
