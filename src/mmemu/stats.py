"""Statistics views computed from state, printed in the /proc text formats.

meminfo (fs/proc/meminfo.c), status (fs/proc/task_mmu.c task_mem), maps/smaps
(show_map_vma, show_smap), vmstat (mm/vmstat.c names where Linux has one).
"""
from __future__ import annotations

import json
from collections.abc import Mapping

# the core's event table (_core/constants.pyx): EVENT_NAMES (slot -> vmstat name) and
# EVENT_HELP (name -> what it counts), importable from here as before
from ._core.constants import EVENT_HELP, EVENT_NAMES  # noqa: F401
from ._core.constants import HPAGE_PMD_NR
from ._core.task_mmu import pagemap, pte_tables, smaps_range
from .flags import VmFlags
from .huge_memory import thp_eligible
from .vma import PAGE_SHIFT, PMD_SIZE


class ProcView(Mapping):
    """A read-only name -> int mapping that prints as a /proc file."""

    _fmt = "{name}: {value}"

    def __init__(self, items):
        self._d = dict(items)

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __repr__(self):
        return f"{type(self).__name__}({self._d!r})"

    def __str__(self):
        return "".join(self._fmt.format(name=k, value=v) + "\n" for k, v in self._d.items())

    def to_dict(self):
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


class Counters(ProcView):
    """vmstat-style counters: ``a - b`` gives the deltas of a snapshot."""

    def __str__(self):
        return "".join(f"{k} {v}\n" for k, v in self._d.items())

    def __sub__(self, other):
        return Counters((k, v - other.get(k, 0)) for k, v in self._d.items())


class BuddyInfo(tuple):
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
    ])


def vmstat(machine) -> Counters:
    c = machine.phys.counters()
    ev = machine.phys.events()
    items = [
        ("nr_free_pages", c["nr_free_pages"]),
        ("nr_anon_pages", c["nr_anon_mapped"]),
        ("nr_mapped", c["nr_file_mapped"]),
        ("nr_file_pages", c["nr_file_pages"]),
        ("nr_shmem", c["nr_shmem"]),
        ("nr_page_table_pages", c["nr_page_table_pages"]),
    ]
    items += [(name, int(ev[i])) for i, name in enumerate(EVENT_NAMES)]
    items.append(("nr_anon_transparent_hugepages", c["nr_anon_transparent_hugepages"]))
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


class Maps(list):
    """/proc/PID/maps as a list of lines; str() gives the file."""

    def __str__(self):
        return "".join(line + "\n" for line in self)


class Smaps(list):
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
            "ShmemPmdMapped": 0, "FilePmdMapped": 0,
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
