"""Statistics views computed from state, printed in the /proc text formats.

meminfo (fs/proc/meminfo.c), status (fs/proc/task_mmu.c task_mem), maps/smaps
(show_map_vma, show_smap), vmstat (mm/vmstat.c names where Linux has one).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, NamedTuple

# the core's event table (_core/constants.pyx): EVENT_NAMES (slot -> vmstat name) and
# EVENT_HELP (name -> what it counts), importable from here as before
from ._core.constants import EVENT_HELP, EVENT_NAMES  # noqa: F401
from ._core.constants import HPAGE_PMD_NR
from ._core.task_mmu import pagemap, pte_tables, smaps_range
from .flags import VmFlags
from .huge_memory import thp_eligible
from .vma import PAGE_SHIFT, PMD_SIZE


class ProcView(Mapping[str, int]):
    """A read-only name -> int mapping that prints as a /proc file."""

    _fmt = "{name}: {value}"

    def __init__(self, items):
        self._d = dict(items)

    def __getitem__(self, k: str) -> int:
        return self._d[k]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self):
        return f"{type(self).__name__}({self._d!r})"

    def __str__(self):
        return "".join(self._fmt.format(name=k, value=v) + "\n" for k, v in self._d.items())

    def to_dict(self) -> Dict[str, int]:
        return dict(self._d)

    def to_json(self, **kw) -> str:
        return json.dumps(self._d, **kw)


class MemInfo(ProcView):
    """/proc/meminfo: values in kB."""

    def __str__(self):
        return "".join(f"{k + ':':<16}{v:>8} kB\n" for k, v in self._d.items())


class Status(ProcView):
    """The memory lines of /proc/PID/status: values in kB."""

    def __str__(self):
        return "".join(f"{k}:\t{v:>8} kB\n" for k, v in self._d.items())


class CounterInfo(NamedTuple):
    """One counter of a Counters snapshot, explained (``Counters.describe``)."""
    name: str
    value: int
    help: str


class Counters(ProcView):
    """vmstat-style counters (``Machine.vmstat()``): ``a - b`` gives the deltas of a
    snapshot, ``nonzero()`` drops the zeros, ``describe()`` says what each one counts.

    Examples
    --------
    >>> m = mmemu.Machine("64M"); p = m.spawn()
    >>> a = p.mmap(0, 8192, mmemu.PROT_READ | mmemu.PROT_WRITE, mmemu.MAP_PRIVATE | mmemu.MAP_ANONYMOUS)
    >>> before = m.vmstat(); p.touch(a, 8192); d = (m.vmstat() - before).nonzero()
    >>> d["fault_anon"], d.describe()[0].name
    (2, 'nr_free_pages')
    """

    def __str__(self):
        return "".join(f"{k} {v}\n" for k, v in self._d.items())

    def __sub__(self, other: Mapping[str, int]) -> "Counters":
        return Counters((k, v - other.get(k, 0)) for k, v in self._d.items())

    def nonzero(self) -> "Counters":
        """The counters that are not zero, in the same order."""
        return Counters((k, v) for k, v in self._d.items() if v)

    def describe(self) -> List[CounterInfo]:
        """(name, value, help) of every counter, help from ``COUNTER_HELP``."""
        return [CounterInfo(k, v, COUNTER_HELP.get(k, "")) for k, v in self._d.items()]


class BuddyInfo(tuple[int, ...]):
    """/proc/buddyinfo: free blocks of each order 0..10 in the one zone (Normal, node 0);
    str() gives the kernel's line (mm/vmstat.c frag_show_print)."""

    def __str__(self):
        return "Node 0, zone %8s " % "Normal" + "".join("%6d " % n for n in self) + "\n"


def buddyinfo(machine) -> BuddyInfo:
    return BuddyInfo(machine.phys.buddyinfo())


def _swap_total(machine) -> int:
    from .swap import slots_total
    return slots_total(machine)


def _swap_used(machine) -> int:
    from .swap import slots_used
    return slots_used(machine)


def meminfo(machine) -> MemInfo:
    c = machine.phys.counters()
    kb = lambda pages: pages << (PAGE_SHIFT - 10)  # noqa: E731
    free = c["nr_free_pages"]
    file_pages = c["nr_file_pages"]
    return MemInfo([
        ("MemTotal", kb(machine.phys.nframes)),
        ("MemFree", kb(free)),
        ("MemAvailable", kb(free + file_pages - c["nr_shmem"])),
        ("Buffers", 0),
        ("Cached", kb(file_pages)),
        ("SwapCached", 0),
        ("AnonPages", kb(c["nr_anon_mapped"])),
        ("Mapped", kb(c["nr_file_mapped"])),
        ("Shmem", kb(c["nr_shmem"])),
        ("PageTables", kb(c["nr_page_table_pages"])),
        ("SwapTotal", kb(_swap_total(machine))),
        ("SwapFree", kb(_swap_total(machine) - _swap_used(machine))),
        ("AnonHugePages", kb(c["nr_anon_transparent_hugepages"] * HPAGE_PMD_NR)),
        ("ShmemHugePages", kb(c["nr_shmem_hugepages"] * HPAGE_PMD_NR)),
        ("ShmemPmdMapped", kb(c["nr_shmem_pmdmapped"] * HPAGE_PMD_NR)),
        ("FileHugePages", kb(c["nr_file_hugepages"] * HPAGE_PMD_NR)),
        ("FilePmdMapped", kb(c["nr_file_pmdmapped"] * HPAGE_PMD_NR)),
    ])


# the page gauges of vmstat: (vmstat name, PhysMem.counters() key, help); the event
# counters' names and help are the core's EVENTS table (_core/constants.pyx)
GAUGES = [
    ("nr_free_pages", "nr_free_pages", "free 4 KiB frames (MemFree / 4)"),
    ("nr_anon_pages", "nr_anon_mapped", "anonymous pages mapped (AnonPages / 4)"),
    ("nr_mapped", "nr_file_mapped", "page-cache pages mapped by some process (Mapped / 4)"),
    ("nr_file_pages", "nr_file_pages", "page-cache pages, shmem included (Cached + Shmem)"),
    ("nr_shmem", "nr_shmem", "shmem and tmpfs pages (Shmem / 4)"),
    ("nr_page_table_pages", "nr_page_table_pages", "page-table pages (PageTables / 4)"),
]
# the THP gauges come after the events (vmstat keeps its order: new names go at the end)
THP_GAUGES = [
    ("nr_anon_transparent_hugepages", "anonymous THPs mapped (NR_ANON_THPS)"),
    ("nr_file_hugepages", "PMD-sized page-cache folios (FileHugePages / 2048)"),
    ("nr_file_pmdmapped", "PMD-sized page-cache folios some PMD maps (FilePmdMapped / 2048)"),
    ("nr_shmem_hugepages", "PMD-sized shmem folios (ShmemHugePages / 2048)"),
    ("nr_shmem_pmdmapped", "PMD-sized shmem folios some PMD maps (ShmemPmdMapped / 2048)"),
]
#: What every vmstat counter counts: the one table of help texts (gauges, then events).
COUNTER_HELP = {**{name: text for name, _, text in GAUGES}, **EVENT_HELP, **dict(THP_GAUGES)}
#: Where the kernel keeps each counter (the function that counts it, or its /proc view).
COUNTED_BY = {
    "nr_free_pages": "mm/page_alloc.c: __free_one_page, rmqueue",
    "nr_anon_pages": "mm/rmap.c: folio_add_new_anon_rmap, folio_remove_rmap_pte",
    "nr_mapped": "mm/rmap.c: folio_add_file_rmap_pte, folio_remove_rmap_pte",
    "nr_file_pages": "mm/filemap.c: filemap_add_folio, filemap_remove_folio",
    "nr_shmem": "mm/shmem.c: shmem_add_to_page_cache",
    "nr_page_table_pages": "include/linux/mm.h: pagetable_alloc, pagetable_free",
    "nr_file_hugepages": "mm/filemap.c: __filemap_add_folio, filemap_unaccount_folio",
    "nr_file_pmdmapped": "mm/rmap.c: folio_add_file_rmap_pmd, folio_remove_rmap_pmd",
    "nr_shmem_hugepages": "mm/khugepaged.c: collapse_file; mm/filemap.c: filemap_unaccount_folio",
    "nr_shmem_pmdmapped": "mm/rmap.c: folio_add_file_rmap_pmd, folio_remove_rmap_pmd",
    "pgfault": "mm/memory.c: handle_mm_fault",
    "fault_zero_page": "mm/memory.c: do_anonymous_page (zero-page branch)",
    "fault_anon": "mm/memory.c: do_anonymous_page",
    "fault_file": "mm/memory.c: do_read_fault, do_shared_fault, filemap_map_pages",
    "fault_file_alloc": "mm/shmem.c: shmem_get_folio_gfp",
    "cow_fault": "mm/memory.c: wp_page_copy, do_cow_fault",
    "cow_zero_fault": "mm/memory.c: wp_page_copy (zero-page source)",
    "wp_reuse": "mm/memory.c: wp_page_reuse",
    "wp_shared": "mm/memory.c: wp_page_shared",
    "spurious_fault": "mm/memory.c: handle_pte_fault (spurious)",
    "pages_copied": "mm/memory.c: __wp_page_copy_user, copy_user_highpage",
    "pages_zeroed": "mm/page_alloc.c: clear_highpage (__GFP_ZERO)",
    "pgalloc": "mm/page_alloc.c: __alloc_pages",
    "pgfree": "mm/page_alloc.c: free_unref_folios, __free_pages",
    "pgtable_alloc": "include/linux/mm.h: pagetable_alloc (__pte_alloc, __pmd_alloc, __pud_alloc)",
    "pgtable_free": "include/linux/mm.h: pagetable_free (free_pgd_range)",
    "fork_ptes_copied": "mm/memory.c: copy_pte_range",
    "fork_pte_tables_copied": "mm/memory.c: copy_pte_range (pte_alloc_map_lock)",
    "fork_ptes_wrprotected": "mm/memory.c: copy_present_pte (ptep_set_wrprotect)",
    "ptes_zapped": "mm/memory.c: zap_pte_range",
    "ptes_protected": "mm/mprotect.c: change_pte_range",
    "cow_pte_tables_shared": "mm/memory.c: copy_cow_pte_range (COW page-table series)",
    "cow_pte_tables_duplicated": "mm/memory.c: break_cow_pte (COW page-table series)",
    "cow_pte_tables_reused": "mm/memory.c: break_cow_pte, table no longer shared",
    "cow_pte_entries_copied": "mm/memory.c: break_cow_pte (copy_pte_range of the table)",
    "nr_tlb_local_flush_one": "arch/x86/mm/tlb.c: flush_tlb_func (one page per INVLPG)",
    "nr_tlb_local_flush_all": "arch/x86/mm/tlb.c: flush_tlb_func (a full flush)",
    "nr_tlb_remote_flush": "arch/x86/mm/tlb.c: native_flush_tlb_multi",
    "nr_tlb_remote_flush_received": "arch/x86/mm/tlb.c: flush_tlb_func (another CPU's request)",
    "cow_pmd_tables_shared": "mmemu whole-table COW (no kernel has it): share_cow_table at fork",
    "cow_pmd_tables_duplicated": "mmemu whole-table COW (no kernel has it): break_cow_table",
    "cow_pmd_tables_reused": "mmemu whole-table COW (no kernel has it): break_cow_table",
    "cow_pud_tables_shared": "mmemu whole-table COW (no kernel has it): share_cow_table at fork",
    "cow_pud_tables_duplicated": "mmemu whole-table COW (no kernel has it): break_cow_table",
    "cow_pud_tables_reused": "mmemu whole-table COW (no kernel has it): break_cow_table",
    "fork_ptes_accounted": "mm/memory.c: copy_cow_pte_range (v3-v5, copy_present_pte "
                                      "per entry of a shared table)",
    "tlb_flush": "mm/mmu_gather.c: tlb_flush_mmu, flush_tlb_range",
    "mremap_ptes_moved": "mm/mremap.c: move_ptes",
    "mremap_pmds_moved": "mm/mremap.c: move_normal_pmd",
    "pswpin": "mm/memory.c: do_swap_page (swap_read_folio)",
    "pswpout": "mm/page_io.c: swap_writeout (shrink_folio_list)",
    "thp_fault_alloc": "mm/huge_memory.c: __do_huge_pmd_anonymous_page",
    "thp_fault_fallback": "mm/huge_memory.c: vma_alloc_anon_folio_pmd (no order-9 block)",
    "thp_zero_page_alloc": "mm/huge_memory.c: get_huge_zero_folio",
    "thp_split_pmd": "mm/huge_memory.c: __split_huge_pmd_locked",
    "thp_deferred_split_page": "mm/huge_memory.c: deferred_split_folio",
    "nr_anon_transparent_hugepages": "mm/rmap.c: folio_add_new_anon_rmap_pmd, folio_remove_rmap_pmd",
    "thp_collapse_alloc": "mm/khugepaged.c: alloc_charge_folio",
    "thp_collapse_alloc_failed": "mm/khugepaged.c: alloc_charge_folio (no order-9 folio)",
    "thp_file_mapped": "mm/memory.c: do_set_pmd",
    "thp_split_page_failed": "mm/huge_memory.c: __folio_split (truncate_inode_partial_folio)",
    "thp_split_page": "mm/huge_memory.c: __folio_split (shmem_undo_range's split_folio)",
}


def vmstat(machine) -> Counters:
    c = machine.phys.counters()
    ev = machine.phys.events()
    items = [(name, c[key]) for name, key, _ in GAUGES]
    items += [(name, int(ev[i])) for i, name in enumerate(EVENT_NAMES)]
    items += [(name, c[name]) for name, _ in THP_GAUGES]
    return Counters(items)


def proc_status(proc) -> Status:
    mm = proc.mm
    f, a, s, sh = mm.core.rss
    rss = f + a + sh
    kb = lambda pages: pages << (PAGE_SHIFT - 10)  # noqa: E731
    text = min(((mm.end_code + 4095) & ~4095) - (mm.start_code & ~4095), mm.exec_vm << PAGE_SHIFT)
    lib = (mm.exec_vm << PAGE_SHIFT) - text
    return Status([
        ("VmPeak", kb(max(mm.hiwater_vm, mm.total_vm))),
        ("VmSize", kb(mm.total_vm)),
        ("VmLck", kb(mm.locked_vm)),
        ("VmPin", 0),
        ("VmHWM", kb(max(mm.hiwater_rss, rss))),
        ("VmRSS", kb(rss)),
        ("RssAnon", kb(a)),
        ("RssFile", kb(f)),
        ("RssShmem", kb(sh)),
        ("VmData", kb(mm.data_vm)),
        ("VmStk", kb(mm.stack_vm)),
        ("VmExe", text >> 10),
        ("VmLib", lib >> 10),
        ("VmPTE", mm.core.pgtables_bytes >> 10),
        ("VmSwap", kb(s)),
    ])


# show_smap_vma_flags: the two letters smaps prints for each VM_* bit (procfs reads them back)
VM_FLAG_MNEMONICS = [
    (VmFlags.READ, "rd"), (VmFlags.WRITE, "wr"), (VmFlags.EXEC, "ex"), (VmFlags.SHARED, "sh"),
    (VmFlags.MAYREAD, "mr"), (VmFlags.MAYWRITE, "mw"), (VmFlags.MAYEXEC, "me"),
    (VmFlags.MAYSHARE, "ms"), (VmFlags.GROWSDOWN, "gd"), (VmFlags.PFNMAP, "pf"),
    (VmFlags.MAYBE_GUARD, "gu"),
    (VmFlags.LOCKED, "lo"), (VmFlags.IO, "io"), (VmFlags.SEQ_READ, "sr"),
    (VmFlags.RAND_READ, "rr"), (VmFlags.DONTCOPY, "dc"), (VmFlags.DONTEXPAND, "de"),
    (VmFlags.LOCKONFAULT, "lf"), (VmFlags.ACCOUNT, "ac"), (VmFlags.NORESERVE, "nr"),
    (VmFlags.HUGETLB, "ht"), (VmFlags.SYNC, "sf"), (VmFlags.WIPEONFORK, "wf"),
    (VmFlags.DONTDUMP, "dd"), (VmFlags.SOFTDIRTY, "sd"), (VmFlags.MIXEDMAP, "mm"),
    (VmFlags.HUGEPAGE, "hg"), (VmFlags.NOHUGEPAGE, "nh"), (VmFlags.MERGEABLE, "mg"),
]


def vma_name(proc, v):
    if v.backing is not None:
        return v.backing.name
    if v.name:
        return v.name
    mm = proc.mm
    if mm.brk and v.start <= mm.brk and v.end >= mm.start_brk and mm.start_brk != 0:
        return "[heap]"
    if mm.start_stack and v.start <= mm.start_stack <= v.end:
        return "[stack]"
    return None


def maps_line(proc, v) -> str:
    """show_map_vma: one /proc/PID/maps line (without the newline)."""
    if v.backing is not None:
        dev = v.backing.dev
        ino = v.backing.inode
        pgoff = v.pgoff << PAGE_SHIFT
    else:
        dev, ino, pgoff = (0, 0), 0, 0
    f = v.flags
    perms = ("r" if f & VmFlags.READ else "-") + ("w" if f & VmFlags.WRITE else "-") \
        + ("x" if f & VmFlags.EXEC else "-") + ("s" if f & VmFlags.MAYSHARE else "p")
    head = f"{v.start:08x}-{v.end:08x} {perms} {pgoff:08x} {dev[0]:02x}:{dev[1]:02x} {ino} "
    name = vma_name(proc, v)
    if name is None:
        return head
    return f"{head:<72} {name}"


class Maps(list[str]):
    """/proc/PID/maps as a list of lines; str() gives the file."""

    def __str__(self):
        return "".join(line + "\n" for line in self)


class Smaps(list[Dict[str, Any]]):
    """/proc/PID/smaps as a list of per-VMA dicts (values in kB); str() gives the file."""

    _KB = ["Size", "KernelPageSize", "MMUPageSize", "Rss", "Pss", "Pss_Dirty", "Shared_Clean",
           "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
           "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
           "Private_Hugetlb", "Swap", "SwapPss", "Locked"]

    def __str__(self):
        out = []
        for e in self:
            out.append(e["header"] + "\n")
            out.extend(f"{k + ':':<16}{e[k]:>8} kB\n" for k in self._KB)
            out.append(f"THPeligible:    {e['THPeligible']:>8}\n")
            out.append("VmFlags: " + "".join(m + " " for m in e["VmFlags"]) + "\n")
        return "".join(out)


def proc_maps(proc) -> Maps:
    return Maps(maps_line(proc, v) for v in proc.mm.vmas)


class Statm(ProcView):
    """/proc/PID/statm (pages): size resident shared text lib data dt."""

    def __str__(self):
        return " ".join(str(v) for v in self._d.values()) + "\n"


def proc_statm(proc) -> Statm:
    """task_statm: lib and dt are always 0 since Linux 2.6."""
    mm = proc.mm
    f, a, _s, sh = mm.core.rss
    text = (((mm.end_code + 4095) & ~4095) - (mm.start_code & ~4095)) >> PAGE_SHIFT
    return Statm([("size", mm.total_vm), ("resident", f + a + sh), ("shared", f + sh),
                  ("text", text), ("lib", 0), ("data", mm.data_vm + mm.stack_vm), ("dt", 0)])


class SmapsRollup(MemInfo):
    """/proc/PID/smaps_rollup: the smaps fields summed over every VMA (kB)."""

    def __init__(self, header, items):
        super().__init__(items)
        self.header = header

    def __str__(self):
        return self.header + "\n" + super().__str__()


_ROLLUP = ["Rss", "Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem", "Shared_Clean",
           "Shared_Dirty", "Private_Clean", "Private_Dirty", "Referenced", "Anonymous", "KSM",
           "LazyFree", "AnonHugePages", "ShmemPmdMapped", "FilePmdMapped", "Shared_Hugetlb",
           "Private_Hugetlb", "Swap", "SwapPss", "Locked"]
_PSS = {"Pss", "Pss_Dirty", "Pss_Anon", "Pss_File", "Pss_Shmem"}


def proc_smaps_rollup(proc) -> SmapsRollup:
    """show_smaps_rollup: sums in bytes (PSS in bytes << 12) over all VMAs, then kB."""
    vmas = proc.mm.vmas
    tot = dict.fromkeys(_ROLLUP, 0)
    for v in vmas:
        r = smaps_range(proc.mm.core, v.start, v.end)
        for k, val in r.items():
            tot[k] += val
        if v.flags & VmFlags.LOCKED:
            tot["Locked"] += r["Pss"]
    start = vmas[0].start if vmas else 0
    end = vmas[-1].end if vmas else 0
    header = f"{f'{start:08x}-{end:08x} ---p 00000000 00:00 0 ':<72} [rollup]"
    return SmapsRollup(header, [(k, (tot[k] >> 12 if k in _PSS or k == "Locked" else tot[k]) >> 10)
                                for k in _ROLLUP])


def proc_smaps(proc) -> Smaps:
    out = Smaps()
    for v in proc.mm.vmas:
        r = smaps_range(proc.mm.core, v.start, v.end)
        pss_kb = (r["Pss"] >> 12) >> 10
        e = {
            "start": v.start, "end": v.end, "header": maps_line(proc, v),
            "Size": (v.end - v.start) >> 10, "KernelPageSize": 4, "MMUPageSize": 4,
            "Rss": r["Rss"] >> 10, "Pss": pss_kb, "Pss_Dirty": (r["Pss_Dirty"] >> 12) >> 10,
            "Shared_Clean": r["Shared_Clean"] >> 10, "Shared_Dirty": r["Shared_Dirty"] >> 10,
            "Private_Clean": r["Private_Clean"] >> 10, "Private_Dirty": r["Private_Dirty"] >> 10,
            "Referenced": r["Referenced"] >> 10, "Anonymous": r["Anonymous"] >> 10,
            "KSM": 0, "LazyFree": 0, "AnonHugePages": r["AnonHugePages"] >> 10,
            "ShmemPmdMapped": r["ShmemPmdMapped"] >> 10, "FilePmdMapped": r["FilePmdMapped"] >> 10,
            "Shared_Hugetlb": 0, "Private_Hugetlb": 0, "Swap": 0, "SwapPss": 0,
            "Locked": pss_kb if v.flags & VmFlags.LOCKED else 0,
            "THPeligible": thp_eligible(proc.machine, v),
            "VmFlags": [m for bit, m in VM_FLAG_MNEMONICS if v.flags & bit],
        }
        out.append(e)
    return out


def pagemap_chunks(mm, addr: int, end: int):
    """/proc/PID/pagemap of [addr, end) in pieces (pagemap_pmd_range): (address, entries)
    for each part that has a PTE table, in address order, at most 512 entries each; every
    page not yielded reads 0. Host memory is bounded by one PTE table's entries."""
    for span in pte_tables(mm.core, addr, end).tolist():
        lo, hi = max(addr, span), min(end, span + PMD_SIZE)
        yield lo, pagemap(mm.core, lo, (hi - lo) >> PAGE_SHIFT)
