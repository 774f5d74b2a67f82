# cython: language_level=3
"""Install present PTEs with given properties without a fault: the mechanism behind
mmemu.procfs.import_process, which rebuilds a live Linux process's page tables.

One call per VMA installs every page the importer found present there. The entries are
what the fault path would have made (do_anonymous_page, do_read_fault, a fork's
write-protected shared anon page); counters (rss, mapcount, refcount, NR_*_MAPPED,
page-cache counts) move exactly as the fault path moves them (through rmap.pxd), so
Machine.check() holds. Each run of pages in one 2 MiB span is an install walk
(walk_page_range with ops.install, as Linux's install_pte walks): the tables a page needs
are allocated as its fault would have allocated them.
"""
from libc.stdint cimport uint8_t, int64_t, uint64_t
from libc.string cimport memcpy

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, alloc_frame, frame_ptr, table_ptr
from mmemu._core.pagetable cimport mm_t, vma_t, MMCore, pte_offset_alloc, vma_from_py
from mmemu._core.fault cimport mk_anon_pte, mk_zero_pte, set_pte_range
from mmemu._core.pgtable cimport set_pte_at
from mmemu._core.rmap cimport (
    folio_add_new_anon_rmap, folio_dup_rmap_pte, shmem_alloc_and_add_folio,
)
from mmemu._core.filemap cimport xa_load
from mmemu._core.pagewalk cimport mm_walk, mm_walk_ops, page_list, walk_page_list

# page kinds (numpy uint8 per page)
cdef enum:
    K_ANON_EXCLUSIVE = 1    # a new anonymous page mapped once (PageAnonExclusive)
    K_ANON_SHARED = 2       # an anonymous page not exclusively mapped: frame given, or a new one
    K_ZERO = 3              # the shared zero page (a read fault on anonymous memory)
    K_CACHE = 4             # the page-cache page of the VMA's file / shmem object

KIND_ANON_EXCLUSIVE = K_ANON_EXCLUSIVE
KIND_ANON_SHARED = K_ANON_SHARED
KIND_ZERO = K_ZERO
KIND_CACHE = K_CACHE


cdef int _install(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, pte_t* ptep, int kind,
                  int64_t* frame) noexcept nogil:
    """One page at addr into its none PTE: 0, or -1 (no frame), or -2 (no page-cache index
    for this address)."""
    cdef pfn_t pfn
    cdef int64_t idx
    if ptep[0] != 0:
        return 0        # already installed (a page imported twice): keep the first
    if kind == K_ZERO:
        set_pte_at(pm, ptep, mk_zero_pte(pm, vma))
        return 0
    if kind == K_CACHE:
        idx = vma.pgoff + <int64_t>((addr - vma.start) >> PAGE_SHIFT)
        if vma.cache == NULL or idx < 0 or idx >= vma.cache_pages:
            return -2
        pfn = xa_load(vma.cache, idx)
        if pfn < 0:
            pfn = shmem_alloc_and_add_folio(pm, vma.cache, idx, vma.swapbacked)
            if pfn < 0:
                return -1
        set_pte_range(pm, mm, vma, ptep, pfn, False)
        frame[0] = pfn
        return 0
    # anonymous
    pfn = frame[0]
    if kind == K_ANON_SHARED and pfn >= 0:
        # another imported process maps this page: a fork's shared page (copy_present_pte)
        folio_dup_rmap_pte(pm, pfn, pm.flags[pfn], mm.rss)
        set_pte_at(pm, ptep, pte_wrprotect(mk_pte(pfn, vma.prot)) | _bit(BIT_ACCESSED))
        vma.anon_vma = 1
        return 0
    pfn = alloc_frame(pm, False, True)
    if pfn < 0:
        return -1
    folio_add_new_anon_rmap(pm, pfn, mm.rss, kind == K_ANON_EXCLUSIVE)
    if kind == K_ANON_EXCLUSIVE:
        set_pte_at(pm, ptep, mk_anon_pte(pfn, vma))
    else:
        set_pte_at(pm, ptep, pte_wrprotect(mk_pte(pfn, vma.prot)) | _bit(BIT_ACCESSED))
    vma.anon_vma = 1
    frame[0] = pfn
    return 0


cdef struct install_walk:
    page_list pages
    vma_t* vma
    const uint8_t* kinds
    int64_t* frames


cdef int install_pmd_entry(pte_t* pmd, uint64_t addr, uint64_t end, mm_walk* walk) noexcept nogil:
    """pmd_entry of an install walk over one 2 MiB span: its listed pages into the PTE
    table the walk found or allocated."""
    cdef install_walk* w = <install_walk*>walk.private
    cdef pte_t* t = table_ptr(walk.pm, pte_pfn(pmd[0]))
    cdef uint64_t a
    cdef int64_t i
    cdef int rc
    for i in range(w.pages.i, w.pages.run_end):
        a = w.pages.addrs[i]
        rc = _install(walk.pm, walk.mm, w.vma, a, &t[pte_index(a)], w.kinds[i], &w.frames[i])
        if rc != 0:
            return rc
    return 0


cdef mm_walk_ops install_ops
install_ops.pmd_entry = install_pmd_entry
install_ops.install = True


def install_pages(MMCore core, vma, uint64_t[::1] addrs, const uint8_t[::1] kinds,
                  int64_t[::1] frames):
    """Install one present page per address of a VMA (addresses inside it, increasing).

    kinds: KIND_* per page. frames: in/out int64 per page: for KIND_ANON_SHARED a frame
    another imported process maps (>= 0) or -1; on return the frame each page maps (-1 for
    the zero page). Returns (rc, anon_vma): rc 0, -1 (out of emulated memory: the pages
    installed so far stay, the caller tears the process down) or -2 (a file page past the
    object's end); anon_vma whether an anonymous page was installed.
    """
    cdef vma_t v
    cdef install_walk w
    cdef int64_t i, n = addrs.shape[0]
    cdef int rc
    if kinds.shape[0] != n or frames.shape[0] != n:
        raise ValueError("addrs, kinds and frames must have the same length")
    vma_from_py(&v, vma)
    for i in range(n):
        if addrs[i] < v.start or addrs[i] >= v.end:
            raise ValueError(f"address {addrs[i]:#x} outside the VMA")
    v.anon_vma = 0
    if n == 0:
        return 0, False
    w.pages.addrs = &addrs[0]
    w.pages.n = n
    w.vma = &v
    w.kinds = &kinds[0]
    w.frames = &frames[0]
    with nogil:
        rc = walk_page_list(&core.phys.pm, &core.mm, &w.pages, &install_ops, &w)
    return rc, bool(v.anon_vma)


def ensure_pte_table(MMCore core, uint64_t addr):
    """pte_alloc for addr (and the PUD/PMD tables above it): a PTE table without entries,
    as Linux keeps one after the pages of a span went. True if it exists afterwards."""
    cdef pte_t* p
    with nogil:
        p = pte_offset_alloc(&core.phys.pm, &core.mm, addr, NULL)
    return p != NULL


def fill_frames(PhysMem phys, const int64_t[::1] pfns, const uint8_t[:, ::1] data):
    """Copy one 4 KiB row of data into each frame (contents=True imports)."""
    cdef int64_t i
    cdef physmem_t* pm = &phys.pm
    if data.shape[0] != pfns.shape[0] or (pfns.shape[0] and data.shape[1] != 4096):
        raise ValueError("one 4096-byte row per frame")
    for i in range(pfns.shape[0]):
        if pfns[i] < 0 or pfns[i] >= pm.nframes or not (pm.flags[pfns[i]] & (PG_ANON | PG_FILE)):
            raise ValueError(f"frame {pfns[i]} holds no anonymous or page-cache page")
    with nogil:
        for i in range(pfns.shape[0]):
            memcpy(frame_ptr(pm, pfns[i]), &data[i, 0], 4096)
            pm.flags[pfns[i]] |= PG_HASDATA
