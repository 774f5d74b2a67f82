# cython: language_level=3
"""Install present PTEs with given properties without a fault: the mechanism behind
mmemu.procfs.import_process, which rebuilds a live Linux process's page tables.

One call per VMA installs every page the importer found present there. The entries are
what the fault path would have made (do_anonymous_page, do_read_fault, a fork's
write-protected shared anon page); counters (rss, mapcount, refcount, NR_*_MAPPED,
page-cache counts) move exactly as the fault path moves them, so Machine.check() holds.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

from mmemu._core.types cimport *
from mmemu._core.physmem cimport physmem_t, PhysMem, alloc_frame, put_page, frame_ptr, table_ptr
from mmemu._core.filemap cimport xa_load, xa_store
from mmemu._core.pagetable cimport (
    mm_t, vma_t, MMCore, pte_offset, pte_offset_alloc, vma_from_py,
)

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


cdef int _install(physmem_t* pm, mm_t* mm, vma_t* vma, uint64_t addr, int kind,
                  int64_t* frame) noexcept nogil:
    """0, or -1 (no frame), or -2 (no page-cache index for this address)."""
    cdef pte_t* ptep = pte_offset_alloc(pm, mm, addr, NULL)
    cdef pfn_t pfn
    cdef int64_t idx
    cdef pte_t e
    if ptep == NULL:
        return -1
    if ptep[0] != 0:
        return 0        # already installed (a page imported twice): keep the first
    if kind == K_ZERO:
        ptep[0] = (pte_wrprotect(mk_pte(pm.zero_pfn, vma.prot)) | _bit(BIT_SPECIAL)
                   | _bit(BIT_ACCESSED))
        return 0
    if kind == K_CACHE:
        idx = vma.pgoff + <int64_t>((addr - vma.start) >> PAGE_SHIFT)
        if vma.cache == NULL or idx < 0 or idx >= vma.cache_pages:
            return -2
        pfn = xa_load(vma.cache, idx)
        if pfn < 0:
            pfn = alloc_frame(pm, False, True)
            if pfn < 0:
                return -1
            if xa_store(vma.cache, idx, pfn) < 0:
                put_page(pm, pfn)
                return -1
            pm.flags[pfn] |= PG_FILE | (PG_SWAPBACKED if vma.swapbacked else 0)
            pm.nr_file_pages += 1
            if vma.swapbacked:
                pm.nr_shmem += 1
        pm.refcount[pfn] += 1
        pm.mapcount[pfn] += 1
        if pm.mapcount[pfn] == 1:
            pm.nr_file_mapped += 1
        mm.rss[MM_SHMEMPAGES if vma.swapbacked else MM_FILEPAGES] += 1
        ptep[0] = mk_pte(pfn, vma.prot) | _bit(BIT_ACCESSED)
        frame[0] = pfn
        return 0
    # anonymous
    pfn = frame[0]
    if kind == K_ANON_SHARED and pfn >= 0:
        # another imported process maps this page: a fork's shared page (copy_present_pte)
        pm.refcount[pfn] += 1
        pm.mapcount[pfn] += 1
        pm.flags[pfn] &= ~PG_ANON_EXCLUSIVE
        mm.rss[MM_ANONPAGES] += 1
        ptep[0] = pte_wrprotect(mk_pte(pfn, vma.prot)) | _bit(BIT_ACCESSED)
        vma.anon_vma = 1
        return 0
    pfn = alloc_frame(pm, False, True)
    if pfn < 0:
        return -1
    pm.flags[pfn] |= PG_ANON
    pm.mapcount[pfn] = 1
    pm.nr_anon_mapped += 1
    mm.rss[MM_ANONPAGES] += 1
    e = mk_pte(pfn, vma.prot) | _bit(BIT_ACCESSED)
    if kind == K_ANON_EXCLUSIVE:
        pm.flags[pfn] |= PG_ANON_EXCLUSIVE
        if vma.flags & VM_WRITE:
            e = pte_mkwrite(pte_mkdirty(e))
    else:
        e = pte_wrprotect(e)
    ptep[0] = e
    vma.anon_vma = 1
    frame[0] = pfn
    return 0


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
    cdef physmem_t* pm = &core.phys.pm
    cdef mm_t* mm = &core.mm
    cdef int64_t i, n = addrs.shape[0]
    cdef int rc = 0
    if kinds.shape[0] != n or frames.shape[0] != n:
        raise ValueError("addrs, kinds and frames must have the same length")
    vma_from_py(&v, vma)
    for i in range(n):
        if addrs[i] < v.start or addrs[i] >= v.end:
            raise ValueError(f"address {addrs[i]:#x} outside the VMA")
    v.anon_vma = 0
    with nogil:
        for i in range(n):
            rc = _install(pm, mm, &v, addrs[i], kinds[i], &frames[i])
            if rc != 0:
                break
    return rc, bool(v.anon_vma)


def ensure_pte_table(MMCore core, uint64_t addr):
    """pte_alloc for addr (and the PUD/PMD tables above it): a PTE table without entries,
    as Linux keeps one after the pages of a span went. True if it exists afterwards."""
    cdef pte_t* p
    with nogil:
        p = pte_offset_alloc(&core.phys.pm, &core.mm, addr, NULL)
    return p != NULL


def tables_cost(MMCore core, uint64_t addr):
    """How many table frames ensure_pte_table(addr) would allocate (0-3 below a PGD)."""
    cdef physmem_t* pm = &core.phys.pm
    cdef pte_t* pgd = table_ptr(pm, core.mm.pgd)
    cdef pte_t g = pgd[pgd_index(addr)], u, d
    if g == 0:
        return 3
    u = table_ptr(pm, pte_pfn(g))[pud_index(addr)]
    if u == 0:
        return 2
    d = table_ptr(pm, pte_pfn(u))[pmd_index(addr)]
    return 0 if d != 0 else 1


def wrprotect_page(MMCore core, uint64_t addr):
    """The PTE mapping addr loses RW and its anonymous page PageAnonExclusive: what fork
    does to the parent's entry when a second process maps the page."""
    cdef physmem_t* pm = &core.phys.pm
    cdef pte_t* p = pte_offset(pm, &core.mm, addr, NULL)
    if p == NULL or not pte_present(p[0]):
        raise KeyError(f"no present PTE at {addr:#x}")
    p[0] = pte_wrprotect(p[0])
    if pm.flags[pte_pfn(p[0])] & PG_ANON:
        pm.flags[pte_pfn(p[0])] &= ~PG_ANON_EXCLUSIVE


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
