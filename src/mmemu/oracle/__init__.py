"""mmemu.oracle: the live Linux kernel as a test oracle.

An ``Oracle`` runs every syscall on a real helper process (mmemu/oracle/helper.py, driven
over a pipe; a fork makes the child a second helper on its own FIFOs) and on an emulated
machine, and after every step compares:

* the return value or errno of the call;
* for read/write: the bytes, and where the access stopped, the signal (SIGSEGV/SIGBUS)
  and its page;
* for the dedicated region (``REGION``, one 512 GiB PGD slot no other mapping uses):
  RssAnon, RssFile and RssShmem (summed from /proc/PID/smaps over the region's VMAs),
  VmSize (the region's VMA sizes), VmPTE (the change of /proc/PID/status VmPTE since the
  baseline) and the pagemap present / exclusive / file / swap bits of every page.

``Oracle(thp=True)`` adds transparent huge pages (the kernel here runs THP in ``madvise``
mode, as mmemu's machine does by default): mappings of kind ``"huge"`` are private
anonymous memory given MADV_HUGEPAGE on both sides, and ``"huge_file_private"`` /
``"huge_file_shared"`` map a second file (``HUGE_FILE_PAGES``, written in one write, so
the kernel's page cache holds PMD-sized folios, as mmemu's does) without advice, so its
folios map by PMDs (every other mapping keeps MADV_NOHUGEPAGE, so the helper makes no THP
elsewhere: checked after every step), madvise may be MADV_HUGEPAGE / NOHUGEPAGE, and after
every step the oracle also compares the region's AnonHugePages and FilePmdMapped (smaps)
and the change of the system-wide thp_* vmstat counters
(``THP_COUNTERS``) over the step. Other processes move those counters too: the oracle reads
them before the step, right after both sides ran it, and again after its checks; when they
moved outside the step (between the previous step and this one, or during the checks) a
neighbour is active and the step's counters are not compared (``thp_vmstat_skipped``
counts them, ``thp_vmstat_compared`` the others). A neighbour acting only inside the step
looks like a divergence, so a difference of the counters raises ``CounterDivergence`` and
the driver runs the whole sequence again (``Oracle.rerun``) before believing it: a real
divergence repeats, a neighbour's THPs do not. A khugepaged collapse of the helper's
memory (which mmemu does not model) shows as ``ForeignChange``.

Where mmemu departs from the kernel on purpose, the departure has a name in
``DEPARTURES``; the oracle either keeps the random sequences away from it (and says so) or
reports it by name instead of failing. A divergence raises ``Divergence``, whose message
ends with the whole sequence as Python calls that replay it (``Oracle.replay``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Dict, List, Optional

import numpy as np

from .. import Machine
from .._core.constants import PAGE_SIZE as PG, PM_FILE, PM_MMAP_EXCLUSIVE, PM_PRESENT, PM_SWAP
from ..errors import BusError, MMError, SegmentationFault
from ..flags import MAP_ANONYMOUS, MAP_FIXED, MAP_FIXED_NOREPLACE, MAP_PRIVATE, MAP_SHARED
from ..procfs import parse_smaps, read_proc, read_status
from .live import LiveHelper, linux_proc_available

REGION = 0x300000000000         # 48 TiB: PGD slot 96, nothing else maps there
REGION_PAGES = 1024             # 4 MiB: two PMD spans
FILE_PAGES = 96                 # the data file: mappings past it raise SIGBUS
HUGE_FILE_PAGES = 2048          # the large-folio file (thp=True): four PMD-sized folios

# the thp_* vmstat counters compared over a step (mmemu splits only shmem folios, which the
# oracle never makes: the kernel must not split a folio during a step either); every thp_*
# line guards the window
THP_COUNTERS = ("thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd",
                "thp_deferred_split_page", "thp_split_page", "nr_anon_transparent_hugepages",
                "thp_file_mapped", "nr_file_pmdmapped")
MADV_HUGEPAGE, MADV_NOHUGEPAGE = 14, 15

DEPARTURES = {
    "madv_free_is_immediate": "MADV_FREE: mmemu frees exclusive pages at once (the reclaim "
                              "that would discard them), Linux only under memory pressure: "
                              "RSS and the old bytes differ until then. Not generated.",
    "brk_not_driven": "brk: the live helper's heap belongs to Python's malloc, so the oracle "
                      "does not move its break; brk is checked against the reference model "
                      "and the other fork designs (tests/cow_pte/test_designs_agree.py).",
    "signals_inferred": "The helper writes with process_vm_writev, which stops with EFAULT "
                        "where a store would raise a signal, and reads with plain loads of "
                        "the pages its VMAs let a load reach (process_vm_readv would pin, "
                        "and so unshare, COW-shared pages); the oracle names the signal "
                        "from the VMA at that page (none or no permission: SIGSEGV, file "
                        "page past EOF: SIGBUS).",
    "child_vmpte_from_fork": "A forked helper is a Python process whose own page tables "
                             "grow as it runs after the fork; its VmPTE is compared as the "
                             "change since its first command (the fork itself is compared "
                             "exactly, before either side runs, by tests/live/test_procfs.py).",
    "mremap_multi_vma_move": "mremap(MREMAP_FIXED) of a range that is not inside one VMA "
                             "(several VMAs, or one and a gap): Linux 6.17+ moves what is "
                             "mapped (mm/mremap: permit moves of multiple VMAs); mmemu "
                             "answers EFAULT as earlier kernels did. Found by this oracle; "
                             "such calls are skipped on both sides and counted.",
    "helper_own_tables": "The helper's Python heap sometimes reaches a new 2 MiB span and "
                         "the kernel gives it a PTE table outside the region; the oracle "
                         "counts the helper's own tables from its present pages and takes "
                         "such growth out of the VmPTE comparison (counted by this name).",
    "no_memory_pressure": "MADV_COLD/PAGEOUT and reclaim are not generated: mmemu has no "
                          "reclaim (its swap device is filled only by an explicit "
                          "Process.swap_out), so reclaimed pages would differ.",
    "order0_file_folios": "The oracle's file is written page by page, so its page cache "
                          "holds order-0 folios as mmemu's does (large folios make Linux map "
                          "a whole folio on one fault).",
    "huge_zero_page_allocated": "thp_zero_page_alloc is not compared: the kernel allocated "
                                "its huge zero page long before the oracle started (and "
                                "keeps it), mmemu's fresh machine on its first huge read "
                                "fault.",
    "no_khugepaged": "mmemu has no khugepaged: the kernel's may collapse a THP region of the "
                     "helper between steps (the oracle raises ForeignChange when a region "
                     "diverges while thp_collapse_alloc moved).",
}

_ANON_KINDS = ("private", "shared", "huge")
_HUGE_FILE_KINDS = ("huge_file_private", "huge_file_shared")
_KINDS = ("private", "shared", "huge", "file_private", "file_shared") + _HUGE_FILE_KINDS


def read_vmstat_thp() -> Dict[str, int]:
    """The thp_* lines of /proc/vmstat, nr_anon_transparent_hugepages and nr_file_pmdmapped."""
    out = {}
    with open("/proc/vmstat") as f:
        for line in f:
            k, v = line.split()
            if k.startswith("thp_") or k in ("nr_anon_transparent_hugepages", "nr_file_pmdmapped"):
                out[k] = int(v)
    return out


class Divergence(AssertionError):
    """mmemu and the kernel disagree. ``sequence`` replays it."""

    def __init__(self, what: str, live, emulated, sequence: List[str], ctor: str = "Oracle()"):
        self.what, self.live, self.emulated, self.sequence = what, live, emulated, sequence
        code = "\n".join([f"o = {ctor}"] + [f"o.{s}" for s in sequence] + ["o.close()"])
        super().__init__(f"{what}: kernel {live!r}, mmemu {emulated!r}\n"
                         f"replay:\n{code}")


class CounterDivergence(Divergence):
    """The thp_* counters changed differently over a step, with nothing moving outside it:
    mmemu's bug, or a neighbour acting inside the step (``Oracle.rerun`` tells them apart)."""


class ForeignChange(RuntimeError):
    """Something outside the oracle changed what it measures (khugepaged collapsed the
    helper's memory): the sequence cannot go on, and it is no divergence."""


def _errno_of(fn):
    try:
        return {"ret": fn()}
    except MMError as e:
        return {"err": e.errno}


class Oracle:
    """A live helper and an emulated process driven in lockstep over ``REGION``."""

    def __init__(self, tmpdir: Optional[str] = None, thp: bool = False, counters_from: int = 0):
        """thp: compare THP regions (see the module's docstring); counters_from: the step
        (its index in ``sequence``) from which a difference of the thp_* counters raises,
        earlier ones are skipped (a run again after a neighbour's THPs made one differ)."""
        why = linux_proc_available()
        if why:
            raise RuntimeError(f"the oracle {why}")
        self._own_tmp = tmpdir is None
        self.tmpdir = tmpdir or tempfile.mkdtemp(prefix="mmemu-oracle-")
        self.path = os.path.join(self.tmpdir, "oracle.bin")
        self.data = bytes((i * 7 + 1) & 0xFF for i in range(FILE_PAGES * PG))
        from .helper import write_file
        write_file(self.path, self.data)
        self.m = Machine("1G", cow_pte_accounting="deferred")
        self.file = self.m.create_file("/oracle.bin", data=self.data)
        self.live: List[LiveHelper] = [LiveHelper()]
        self.emu = [self.m.spawn()]
        self.sequence: List[str] = []
        self.departures_seen: Dict[str, int] = {}
        self.thp = thp
        self.huge_path = None       # the large-folio file (thp=True)
        self.thp_vmstat_compared = self.thp_vmstat_skipped = 0
        self._vm_live = self._vm_emu = self._quiet_since = None
        self._counters_believed_from = counters_from
        if thp:
            self.huge_path = os.path.join(self.tmpdir, "oracle_huge.bin")
            hdata = bytes((i * 5 + (i >> 12) + 3) & 0xFF for i in range(HUGE_FILE_PAGES * PG))
            fd = os.open(self.huge_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                if os.write(fd, hdata) != len(hdata):      # one write: PMD-sized folios
                    raise RuntimeError("a short write of the oracle's large-folio file")
            finally:
                os.close(fd)
            self.huge_file = self.m.create_file("/oracle_huge.bin", data=hdata)
            self._departure("huge_zero_page_allocated")
            self._vm_live, self._vm_emu = read_vmstat_thp(), self.m.vmstat()
        self._warm_up(self.live[0])
        self.base_pte = [self._live_vmpte(0)]
        self.base_own = [self._own_tables(0)]
        self.emu_base_pte = [0]

    # ---- plumbing ----
    def _warm_up(self, h: LiveHelper) -> None:
        """Run every command once outside the region, so the helper's own code paths and
        heap are in place before the baseline VmPTE is taken."""
        scratch = REGION + (512 << 30)          # the next PGD slot: its tables all go again
        h.call("mmap", addr=scratch, len=PG, prot=3, flags=int(0x22 | MAP_FIXED_NOREPLACE))
        for _ in range(3):
            h.call("write", addr=scratch, data="00" * 64)
            h.call("read", addr=scratch, len=64)
            h.call("mprotect", addr=scratch, len=PG, prot=3)
            h.call("madvise", addr=scratch, len=PG, advice=4)
        h.call("munmap", addr=scratch, len=PG)

    def _own_tables(self, i: int) -> int:
        """kB of page tables the helper needs outside the region for its present pages
        (PTE tables per 2 MiB span, PMD per 1 GiB, PUD per 512 GiB)."""
        vmas = [v for v in parse_smaps(read_proc(self.live[i].pid, "smaps"))
                if v.end <= (1 << 47) and not REGION <= v.start < REGION + (512 << 30)]
        spans = set()
        with open(f"/proc/{self.live[i].pid}/pagemap", "rb") as f:
            for v in vmas:
                f.seek(v.start // PG * 8)
                pm = np.frombuffer(f.read(8 * ((v.end - v.start) // PG)), dtype=np.uint64)
                idx = np.flatnonzero(pm >> np.uint64(63))
                spans.update(((v.start + idx * PG) >> 21).tolist())
        return 4 * (len(spans) + len({s >> 9 for s in spans}) + len({s >> 18 for s in spans}))

    def _live_vmpte(self, i: int) -> int:
        return int(read_status(self.live[i].pid)["VmPTE"])

    def close(self) -> None:
        for h in reversed(self.live):
            if h is not None:
                h.close()
        self.live = []
        if self._own_tmp:
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _departure(self, name: str) -> None:
        self.departures_seen[name] = self.departures_seen.get(name, 0) + 1

    def _record(self, call: str) -> None:
        self.sequence.append(call)

    def _diverge(self, what, live, emu):
        if self.thp and self._vm_live is not None and \
                read_vmstat_thp()["thp_collapse_alloc"] != self._vm_live["thp_collapse_alloc"]:
            self._departure("no_khugepaged")
            raise ForeignChange(f"{what} differs while khugepaged collapsed memory somewhere "
                                f"(kernel {live!r}, mmemu {emu!r}): not compared")
        raise Divergence(what, live, emu, list(self.sequence),
                         "Oracle(thp=True)" if self.thp else "Oracle()")

    # ---- the state compared after every step ----
    def _live_region(self, i: int):
        every = parse_smaps(read_proc(self.live[i].pid, "smaps"))
        vmas = [v for v in every if REGION <= v.start < REGION + (512 << 30)]
        elsewhere = sum(v.fields.get("AnonHugePages", 0) for v in every if v not in vmas)
        if elsewhere:
            raise RuntimeError(f"helper {self.live[i].pid} has {elsewhere} kB of THPs outside "
                               "the oracle's region: its measurements are not its own")
        anon = file = shmem = size = 0
        for v in vmas:
            size += (v.end - v.start) >> 10
            a = v.fields.get("Anonymous", 0)
            anon += a
            rest = v.fields.get("Rss", 0) - a
            if v.path.startswith("/dev/zero") or v.path.startswith("/SYSV"):
                shmem += rest
            else:
                file += rest
        out = {"RssAnon": anon, "RssFile": file, "RssShmem": shmem, "VmSize": size}
        if self.thp:
            for k in ("AnonHugePages", "FilePmdMapped"):
                out[k] = sum(v.fields.get(k, 0) for v in vmas)
        return out, vmas

    def _live_pagemap(self, i: int) -> np.ndarray:
        with open(f"/proc/{self.live[i].pid}/pagemap", "rb") as f:
            f.seek(REGION // PG * 8)
            raw = f.read(8 * 2 * REGION_PAGES)
        return np.frombuffer(raw, dtype=np.uint64)

    def check(self, i: int) -> None:
        live, _ = self._live_region(i)
        st = dict(self.emu[i].status())
        if self.thp:
            vmas = [v for v in self.emu[i].smaps() if REGION <= v["start"] < REGION + (512 << 30)]
            for k in ("AnonHugePages", "FilePmdMapped"):
                st[k] = sum(v[k] for v in vmas)
        emu = {k: st[k] for k in live}
        if live != emu:
            self._diverge(f"process {i} region status", live, emu)
        lpte = self._live_vmpte(i) - self.base_pte[i]
        epte = st["VmPTE"] - self.emu_base_pte[i]
        if lpte != epte:
            # the helper is a Python process: its own heap may have reached a new 2 MiB span
            # (a new PTE table outside the region); count that from its present pages
            own = self._own_tables(i)
            drift = own - self.base_own[i]
            if drift and lpte - drift == epte:
                self._departure("helper_own_tables")
                self.base_pte[i] += drift
                self.base_own[i] = own
            else:
                self._diverge(f"process {i} VmPTE change", lpte, epte)
        mask = np.uint64(PM_PRESENT | PM_SWAP | PM_FILE | PM_MMAP_EXCLUSIVE)
        lp = self._live_pagemap(i) & mask
        ep = self.emu[i].pagemap(REGION, 2 * REGION_PAGES) & mask
        if not np.array_equal(lp, ep):
            bad = np.flatnonzero(lp != ep)
            pg = int(bad[0])
            bits = lambda e: {"present": int(e >> 63) & 1, "swap": int(e >> 62) & 1,  # noqa: E731
                              "file": int(e >> 61) & 1, "exclusive": int(e >> 56) & 1}
            self._diverge(f"process {i} pagemap page {pg} (of {len(bad)} differing)",
                          bits(int(lp[pg])), bits(int(ep[pg])))

    def _compare_ret(self, what, live, emu, i):
        if live != emu:
            self._diverge(what, live, emu)
        self._settle([i])
        return live

    def _settle(self, procs: List[int]) -> None:
        """After a step: check the processes, and (THP) the thp_* counters' change over the
        step on both sides, unless they moved outside it (a neighbour making THPs)."""
        if not self.thp:
            for i in procs:
                self.check(i)
            return
        after = read_vmstat_thp()
        emu_after = self.m.vmstat()
        for i in procs:
            self.check(i)
        settled = read_vmstat_thp()
        before, emu_before = self._vm_live, self._vm_emu
        self._vm_live, self._vm_emu = settled, emu_after
        live = {k: after.get(k, 0) - before.get(k, 0) for k in THP_COUNTERS}
        emu = {k: emu_after.get(k, 0) - emu_before.get(k, 0) for k in THP_COUNTERS}
        if self._quiet_since != before or settled != after:
            self.thp_vmstat_skipped += 1
            return
        if live != emu and len(self.sequence) <= self._counters_believed_from:
            self.thp_vmstat_skipped += 1      # a rerun: only the step that differed counts
            return
        if live != emu:
            raise CounterDivergence("thp_* vmstat change over the step", live, emu,
                                    list(self.sequence), "Oracle(thp=True)")
        self.thp_vmstat_compared += 1

    def _begin(self) -> None:
        """Before a step's first live call: the counters must not have moved since the
        last step settled (else the step is not compared)."""
        if self.thp:
            self._quiet_since = read_vmstat_thp()

    # ---- syscalls (page units inside the region) ----
    def mmap(self, page: int, npages: int, prot: int, kind: str = "private", offset: int = 0,
             proc: int = 0):
        """kind: private, shared, huge (private with MADV_HUGEPAGE: needs thp=True),
        file_private or file_shared, huge_file_private or huge_file_shared (the large-folio
        file, no advice: needs thp=True); every other mapping gets MADV_NOHUGEPAGE."""
        self._record(f"mmap({page}, {npages}, {prot}, {kind!r}, {offset}, proc={proc})")
        if kind not in _KINDS or (kind in ("huge",) + _HUGE_FILE_KINDS and not self.thp):
            raise ValueError(f"mmap kind {kind!r}: one of {_KINDS} ('huge*' with thp=True)")
        self._begin()
        addr, length = REGION + page * PG, npages * PG
        flags = MAP_FIXED | (MAP_SHARED if kind.endswith("shared") else MAP_PRIVATE)
        advice = MADV_HUGEPAGE if kind == "huge" else MADV_NOHUGEPAGE
        if kind in _ANON_KINDS:
            flags |= MAP_ANONYMOUS
            r = self.live[proc].call("mmap", addr=addr, len=length, prot=prot, flags=int(flags),
                                     thp_advice=advice)
            e = _errno_of(lambda: self.emu[proc].mmap(addr, length, prot, flags))
        elif kind in _HUGE_FILE_KINDS:
            r = self.live[proc].call("mmap", addr=addr, len=length, prot=prot, flags=int(flags),
                                     path=self.huge_path, offset=offset * PG, thp_advice=0)
            e = _errno_of(lambda: self.emu[proc].mmap(addr, length, prot, flags,
                                                      file=self.huge_file, offset=offset * PG))
        else:
            r = self.live[proc].call("mmap", addr=addr, len=length, prot=prot, flags=int(flags),
                                     path=self.path, offset=offset * PG)
            e = _errno_of(lambda: self.emu[proc].mmap(addr, length, prot, flags, file=self.file,
                                                      offset=offset * PG))
            if "ret" in e:
                self.emu[proc].madvise(addr, length, advice)    # as the helper does
        if "ret" in e and kind in _ANON_KINDS:
            self.emu[proc].madvise(addr, length, advice)
        return self._compare_ret("mmap", r, e, proc)

    def munmap(self, page: int, npages: int, proc: int = 0):
        self._record(f"munmap({page}, {npages}, proc={proc})")
        self._begin()
        addr, length = REGION + page * PG, npages * PG
        r = self.live[proc].call("munmap", addr=addr, len=length)
        e = _errno_of(lambda: self.emu[proc].munmap(addr, length))
        return self._compare_ret("munmap", r, e, proc)

    def mprotect(self, page: int, npages: int, prot: int, proc: int = 0):
        self._record(f"mprotect({page}, {npages}, {prot}, proc={proc})")
        self._begin()
        addr, length = REGION + page * PG, npages * PG
        r = self.live[proc].call("mprotect", addr=addr, len=length, prot=prot)
        e = _errno_of(lambda: self.emu[proc].mprotect(addr, length, prot))
        return self._compare_ret("mprotect", r, e, proc)

    def madvise(self, page: int, npages: int, advice: int, proc: int = 0):
        self._record(f"madvise({page}, {npages}, {advice}, proc={proc})")
        if advice in (8, 20, 21):          # MADV_FREE, MADV_COLD, MADV_PAGEOUT
            name = "madv_free_is_immediate" if advice == 8 else "no_memory_pressure"
            raise ValueError(f"not compared: departure {name!r}: {DEPARTURES[name]}")
        self._begin()
        addr, length = REGION + page * PG, npages * PG
        r = self.live[proc].call("madvise", addr=addr, len=length, advice=advice)
        e = _errno_of(lambda: self.emu[proc].madvise(addr, length, advice))
        return self._compare_ret("madvise", r, e, proc)

    def mremap(self, page: int, old_pages: int, new_pages: int, to_page: Optional[int] = None,
               proc: int = 0):
        """In place (no flags), or MREMAP_MAYMOVE|MREMAP_FIXED to to_page when given (a
        move without FIXED would land wherever each address space has room)."""
        self._record(f"mremap({page}, {old_pages}, {new_pages}, {to_page}, proc={proc})")
        addr = REGION + page * PG
        flags, to = 0, 0
        if to_page is not None:
            ov = self.emu[proc].mm.overlapping(addr, addr + old_pages * PG)
            if ov and (len(ov) > 1 or ov[0].start > addr or ov[0].end < addr + old_pages * PG):
                self._departure("mremap_multi_vma_move")
                return None
        if to_page is not None:
            flags, to = 3, REGION + to_page * PG
        self._begin()
        r = self.live[proc].call("mremap", addr=addr, old=old_pages * PG, new=new_pages * PG,
                                 flags=flags, to=to)
        e = _errno_of(lambda: self.emu[proc].mremap(addr, old_pages * PG, new_pages * PG, flags, to))
        return self._compare_ret("mremap", r, e, proc)

    def _signal_live(self, i: int, addr: int, write: bool, vmas=None) -> Optional[str]:
        """The signal a load/store at addr would raise (None if it would not): SIGSEGV
        without a VMA or without the permission (access_error), SIGBUS for a file page
        past EOF."""
        if vmas is None:
            _, vmas = self._live_region(i)
        for v in vmas:
            if v.start <= addr < v.end:
                allowed = "w" in v.perms[:3] if write else any(c in v.perms[:3] for c in "rwx")
                if not allowed:
                    return "SIGSEGV"
                if v.path and v.path.startswith("/") and not v.path.startswith("/dev/zero"):
                    idx = (v.offset + addr - v.start) // PG
                    pages = HUGE_FILE_PAGES if v.path == self.huge_path \
                        else (len(self.data) + PG - 1) // PG
                    if idx >= pages:
                        return "SIGBUS"
                return None
        return "SIGSEGV"

    def _access(self, kind: str, page: int, offset: int, n: int, byte: int, proc: int):
        addr = REGION + page * PG + offset
        if kind == "read":
            # plain loads of the pages the VMAs let a load reach: a read through
            # process_vm_readv is a R/O pin (FOLL_PIN), which unshares a COW-shared anon
            # page (gup_must_unshare) where a load leaves it shared
            _, vmas = self._live_region(proc)
            ok = 0
            while ok < n and self._signal_live(proc, addr + ok, False, vmas) is None:
                ok = min(n, ok + PG - (addr + ok) % PG)
            self._begin()
            data = self.live[proc].call("load", addr=addr, len=ok)["data"] if ok else ""
            live = {"bytes": bytes.fromhex(data), "n": ok}
        else:
            self._begin()
            r = self.live[proc].call("write", addr=addr, data=bytes([byte] * n).hex())
            live = {"n": r["ret"]}
        if live["n"] < n:
            self._departure("signals_inferred")
            fault = addr + live["n"]
            live["signal"] = (self._signal_live(proc, fault, kind == "write") or "none",
                              fault // PG)
        emu: Dict[str, object] = {}
        try:
            if kind == "read":
                data = self.emu[proc].read(addr, n)
                emu = {"bytes": data, "n": n}
            else:
                self.emu[proc].write(addr, bytes([byte] * n))
                emu = {"n": n}
        except (SegmentationFault, BusError) as ex:
            sig = "SIGBUS" if isinstance(ex, BusError) else "SIGSEGV"
            done = ex.address - addr
            emu = {"n": done}
            if kind == "read":
                # the bytes before the fault (read page by page, as the helper does)
                emu["bytes"] = self.emu[proc].read(addr, done) if done > 0 else b""
            emu["signal"] = (sig, ex.address // PG)
        # the helper copies whole pages; mmemu reports the exact byte: compare by page
        if "signal" in emu:
            emu["n"] = max(0, (emu["signal"][1] * PG) - addr)
            if kind == "read":
                emu["bytes"] = emu["bytes"][:emu["n"]]
        return self._compare_ret(kind, live, emu, proc)

    def read(self, page: int, offset: int, n: int, proc: int = 0):
        self._record(f"read({page}, {offset}, {n}, proc={proc})")
        return self._access("read", page, offset, n, 0, proc)

    def write(self, page: int, offset: int, n: int, byte: int, proc: int = 0):
        self._record(f"write({page}, {offset}, {n}, {byte}, proc={proc})")
        return self._access("write", page, offset, n, byte, proc)

    def fork(self, proc: int = 0) -> int:
        """A real fork (the child becomes a helper) and an emulated classic fork; returns
        the child's index."""
        self._record(f"fork(proc={proc})")
        self._begin()
        child = self.live[proc].fork_helper()
        self.live.append(child)
        self.emu.append(self.emu[proc].fork())
        self._warm_up(child)
        self._departure("child_vmpte_from_fork")
        self.base_pte.append(self._live_vmpte(len(self.live) - 1))
        self.base_own.append(self._own_tables(len(self.live) - 1))
        self.emu_base_pte.append(self.emu[-1].status()["VmPTE"])
        i = len(self.live) - 1
        self._settle([i, proc])
        return i

    def exit(self, proc: int) -> None:
        """The process exits (not the first one); the others are checked."""
        self._record(f"exit({proc})")
        if proc == 0:
            raise ValueError("process 0 drives the oracle and does not exit")
        self._begin()
        h = self.live[proc]
        h.close()
        parent = getattr(h, "parent", None)
        if parent is not None and parent.alive:
            parent.call("wait", pid=h.pid)
        self.emu[proc].exit()
        self.live[proc] = None
        self.emu[proc] = None
        self._settle(self.alive())

    def alive(self) -> List[int]:
        return [i for i, p in enumerate(self.live) if p is not None]

    @classmethod
    def rerun(cls, sequence: List[str], thp: bool = True, tries: int = 3) -> "Oracle":
        """Replay a sequence whose last step met CounterDivergence or ForeignChange until
        one run goes through (returned, in the state the first run had reached); the last
        error when none of ``tries`` runs does (a divergence that repeats is mmemu's). In
        the replays only the last step's counters must agree: the earlier ones agreed in
        the first run, a difference there now is a neighbour's."""
        if tries < 1:
            raise ValueError("tries must be at least 1")
        for _ in range(tries - 1):
            try:
                return cls.replay(sequence, thp=thp, counters_from=len(sequence) - 1)
            except (CounterDivergence, ForeignChange):
                pass
        return cls.replay(sequence, thp=thp, counters_from=len(sequence) - 1)

    @classmethod
    def replay(cls, sequence: List[str], thp: bool = False, counters_from: int = 0) -> "Oracle":
        """Run a recorded sequence (``Divergence.sequence``) again; raises at the step
        that diverges."""
        o = cls(thp=thp, counters_from=counters_from)
        try:
            for s in sequence:
                eval(f"o.{s}", {"o": o})
        except BaseException:
            o.close()
            raise
        return o
