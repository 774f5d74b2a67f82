"""Import a live Linux process into an emulated machine.

``import_process(machine, pid)`` reads /proc/PID/smaps (the VMAs and their flags),
/proc/PID/stat (code, stack and brk boundaries), /proc/PID/status and /proc/PID/pagemap
(which pages are present, file-backed, exclusively mapped, swapped) and, where the caller
may read them, the PFNs and /proc/kpageflags. It then builds an emulated Process with the
same VMAs and the same present pages, installed without faults (mmemu._core.install).

Policy (README "Real processes"):

* Private anonymous VMAs get anonymous pages; a present page whose PFN is the zero page
  becomes the zero page. A page pagemap shows exclusively mapped (bit 56) is imported
  exclusive and writable (if the VMA is); otherwise write-protected and shared with the
  other imported process that maps the same PFN, if any. A VMA gets an anon_vma when it
  has an anonymous page.
* File mappings map an emulated file named after the mapped path (one per path, shared by
  every process imported into the machine); file pages are that file's page-cache pages,
  present anonymous pages there are private COW copies. Shared anonymous memory, SysV
  shm, memfd and /dev/shm files are shmem objects (one per device and inode).
* [vdso] (and [uprobes]) are files of their own name (the kernel counts their pages in
  RssFile); [vvar]/[vvar_vclock] are VM_PFNMAP|VM_IO VMAs whose entries count nowhere and
  are not imported (their page tables are); [vsyscall] lies above TASK_SIZE and is
  skipped.
* Page tables: a PTE table for every 2 MiB span with a present (or marker) entry; the
  kernel keeps tables where pages went away (MADV_DONTNEED, munmap inside a span), which
  pagemap cannot show: the importer adds empty tables in mapped spans until the emulated
  VmPTE equals the kernel's, choosing the spans (a guess, reported in ``report``).
* Pagemap is read only where pages can be: the ranges PAGEMAP_SCAN (Linux 6.7+) finds
  holding a present page, a swap entry or a marker, and the VM_PFNMAP VMAs it skips;
  without the ioctl, every VMA but the PROT_NONE ones smaps shows without Rss or Swap.
  Reads are chunked and only those entries are kept, so a 16 TiB reservation costs
  nothing to import.
* Transparent huge pages are imported as base pages and counted in the report. Swapped
  entries become swap entries on the machine's emulated swap device (mmemu.swap), one
  slot per kernel swap entry (shared by imported processes that hold the same one); their
  data is not read (that would swap them in), so a fault reads back zeros.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import functools
import operator
import os
import signal
import struct
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from ._core import install as _install
from ._core.constants import (
    PM_FILE, PM_GUARD_ENTRY, PM_MMAP_EXCLUSIVE, PM_PFN_MASK, PM_PRESENT, PM_SWAP,
)
from .file import folio_head, i_size_write
from .flags import VmFlags
from .locking import locked_function
from .state import bad, is_int, show
from .stats import VM_FLAG_MNEMONICS
from .vma import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, TASK_SIZE, VMA, AnonVma

KPF_THP, KPF_ZERO_PAGE, KPF_SWAPBACKED, KPF_ANON, KPF_COMPOUND_HEAD = 22, 24, 14, 12, 15

_FLAG_OF = {m: int(bit) for bit, m in VM_FLAG_MNEMONICS}
_PFN_SPECIAL = ("[vvar]", "[vvar_vclock]")
_PFNMAP_IO = int(VmFlags.PFNMAP | VmFlags.IO)
_FILE_SPECIAL = ("[vdso]", "[uprobes]", "[sigpage]")
_SHMEM_PREFIXES = ("/dev/zero", "/SYSV", "/memfd:", "/dev/shm/", "[anon_shmem")


class ImportFailed(OSError):
    """The process could not be imported; nothing was added to the machine.

    ``errno``: ESRCH (no such process, or it exited), EACCES (permission denied), ENOTSUP
    (the kernel hides pagemap), EINVAL (a kernel thread: no address space), ENOMEM (the
    emulated machine is too small)."""


@dataclass
class LiveVma:
    start: int
    end: int
    perms: str
    offset: int
    dev: str
    inode: int
    path: str
    vmflags: List[str]
    fields: Dict[str, int]

    @property
    def npages(self) -> int:
        return (self.end - self.start) >> PAGE_SHIFT

    @functools.cached_property
    def flags(self) -> int:
        f = 0
        for m in self.vmflags:
            f |= _FLAG_OF.get(m, 0)
        return f


@dataclass
class ImportReport:
    """What import_process did and what it could not reproduce exactly."""
    pid: int
    vmas: int = 0
    skipped: List[str] = field(default_factory=list)      # VMAs not imported, with reason
    pages: Dict[str, int] = field(default_factory=dict)   # present pages by kind
    thp_pages: int = 0               # base pages of transparent huge pages (imported as base pages)
    huge_pmds: int = 0               # PMD-mapped THPs imported as huge PMDs
    pfns_readable: bool = False
    kpageflags: bool = False
    shared_frames: int = 0           # anon pages mapped to a frame of another imported process
    extra_tables: List[int] = field(default_factory=list)  # spans given an empty PTE table
    kernel_status: Dict[str, int] = field(default_factory=dict)
    emulated_status: Dict[str, int] = field(default_factory=dict)
    contents_pages: int = 0
    changed_while_read: bool = False    # status differed before and after reading pagemap
    comm: str = ""                   # the live process's command name (status Name:, comm)

    def mismatches(self, names=("VmPTE", "RssAnon", "RssFile", "RssShmem", "VmSize")):
        """{field: (kernel, emulated)} where the imported process differs from the kernel."""
        return {k: (self.kernel_status.get(k), self.emulated_status.get(k)) for k in names
                if self.kernel_status.get(k) != self.emulated_status.get(k)}

    # ---- snapshots (mmemu.snapshot) ----
    def dump_state(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_state(cls, rec, where) -> "ImportReport":
        """The report dump_state gave, each field of its declared type (integers, flags,
        lists of strings or integers, str -> int dicts)."""
        kinds = {"int": is_int, "bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
                 "List[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                 "List[int]": lambda v: isinstance(v, list) and all(is_int(x) for x in v),
                 "Dict[str, int]": lambda v: isinstance(v, dict) and all(
                     isinstance(k, str) and is_int(x) for k, x in v.items())}
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        if not isinstance(rec, dict) or set(rec) - set(fields) or "pid" not in rec:
            raise bad(f"{where}: not an import report")
        for k, v in rec.items():
            if not kinds[fields[k]](v):
                raise bad(f"{where}: {k!r} must be {fields[k]}, not {show(v)}")
        return cls(**rec)


# ---------------------------------------------------------------- reading /proc
def _open_proc(pid: int, name: str, mode="r"):
    path = f"/proc/{pid}/{name}"
    try:
        return open(path, mode)
    except FileNotFoundError:
        if not os.path.exists(f"/proc/{pid}"):
            raise ImportFailed(errno.ESRCH, f"no process {pid}") from None
        if name == "pagemap":
            raise ImportFailed(errno.ENOTSUP, f"{path}: this kernel has no pagemap") from None
        raise ImportFailed(errno.ESRCH, f"{path} vanished: process {pid} exited") from None
    except PermissionError:
        raise ImportFailed(errno.EACCES, f"{path}: permission denied (ptrace access needed)") from None
    except ProcessLookupError:
        raise ImportFailed(errno.ESRCH, f"process {pid} exited") from None


def read_proc(pid: int, name: str) -> str:
    with _open_proc(pid, name) as f:
        try:
            return f.read()
        except PermissionError:
            raise ImportFailed(errno.EACCES, f"/proc/{pid}/{name}: permission denied") from None
        except ProcessLookupError:
            raise ImportFailed(errno.ESRCH, f"process {pid} exited") from None


def read_status(pid: int) -> Dict[str, object]:
    """/proc/PID/status: kB fields as ints, others as strings."""
    out: Dict[str, object] = {}
    for line in read_proc(pid, "status").splitlines():
        k, _, v = line.partition(":")
        v = v.strip()
        parts = v.split()
        if len(parts) == 2 and parts[1] == "kB":
            out[k] = int(parts[0])
        else:
            out[k] = v
    return out


def parse_smaps(text: str) -> List[LiveVma]:
    vmas: List[LiveVma] = []
    cur: Optional[LiveVma] = None
    for line in text.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):
            parts = line.split(None, 5)
            s, e = (int(x, 16) for x in parts[0].split("-"))
            cur = LiveVma(s, e, parts[1], int(parts[2], 16), parts[3], int(parts[4]),
                          parts[5] if len(parts) > 5 else "", [], {})
            vmas.append(cur)
        elif cur is not None and head == "VmFlags:":
            cur.vmflags = rest.split()
        elif cur is not None and head.endswith(":"):
            p = rest.split()
            if p and p[0].isdigit():
                cur.fields[head[:-1]] = int(p[0])
    return vmas


def read_stat_fields(pid: int) -> Dict[str, int]:
    """start_code, end_code, start_stack, start_brk from /proc/PID/stat (0 if hidden)."""
    text = read_proc(pid, "stat")
    rest = text[text.rindex(")") + 2:].split()     # fields from 3 (state) on
    f = lambda n: int(rest[n - 3]) if len(rest) > n - 3 else 0  # noqa: E731
    return {"start_code": f(26), "end_code": f(27), "start_stack": f(28), "start_brk": f(47)}


def read_pagemap(fd: int, start: int, npages: int) -> np.ndarray:
    """npages pagemap entries from start (one read's worth: callers bound npages)."""
    want = npages * 8
    buf = bytearray()
    off = (start >> PAGE_SHIFT) * 8
    try:
        while len(buf) < want:
            chunk = os.pread(fd, min(want - len(buf), 1 << 24), off + len(buf))
            if not chunk:
                break
            buf += chunk
    except OSError as e:
        raise _os_error(e, "pagemap") from None
    if len(buf) != want:
        raise ImportFailed(errno.ESRCH, "pagemap ended early: the process exited during the import")
    return np.frombuffer(bytes(buf), dtype=np.uint64)


# PAGEMAP_SCAN (fs/proc/task_mmu.c, Linux 6.7+): the ranges of pages in given categories,
# found by the kernel's own page-table walk, which skips what has no page table
PAGEMAP_SCAN = 0xC0606610           # _IOWR('f', 16, struct pm_scan_arg)
PAGE_IS_PRESENT, PAGE_IS_SWAPPED = 1 << 3, 1 << 4     # swapped: swap entries and markers
_SCAN_VEC = 4096                    # page_region slots per ioctl
_READ_CHUNK = 1 << 16               # pagemap entries per read (512 KiB)


class _PmScanArg(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "size", "flags", "start", "end", "walk_end", "vec", "vec_len", "max_pages",
        "category_inverted", "category_mask", "category_anyof_mask", "return_mask")]


class _NoScan(Exception):
    """This kernel has no PAGEMAP_SCAN."""


def _os_error(e: OSError, what: str) -> ImportFailed:
    if e.errno in (errno.ESRCH, errno.ENOENT):
        return ImportFailed(errno.ESRCH, "the process exited during the import")
    if e.errno in (errno.EACCES, errno.EPERM):
        return ImportFailed(errno.EACCES, f"{what}: permission denied")
    return ImportFailed(errno.ENOTSUP, f"{what} unreadable: {e}")


def scan_pagemap(fd: int, start: int, end: int, vec) -> List[tuple]:
    """[(start, end)] address ranges of [start, end) holding a present page, a swap entry
    or a marker, from PAGEMAP_SCAN (vec: a ctypes array of 3 x uint64 page_region slots),
    increasing and disjoint. Raises _NoScan where the kernel lacks the ioctl.

    The kernel may report a walk_end before the end of the last region it returned (seen
    on 6.18 at the stack); the next call then repeats a part, which is clipped off."""
    out = []
    covered = start
    regions = np.frombuffer(vec, dtype=np.uint64).reshape(-1, 3)
    cats = PAGE_IS_PRESENT | PAGE_IS_SWAPPED
    while start < end:
        arg = _PmScanArg(size=ctypes.sizeof(_PmScanArg), start=start, end=end,
                         vec=ctypes.addressof(vec), vec_len=len(regions),
                         category_anyof_mask=cats, return_mask=cats)
        try:
            n = fcntl.ioctl(fd, PAGEMAP_SCAN, arg)
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
                raise _NoScan() from None
            raise _os_error(e, "PAGEMAP_SCAN") from None
        for a, b in regions[:n, :2].tolist():
            if b > covered:
                out.append((max(a, covered), b))
                covered = b
        if arg.walk_end <= start:
            break
        start = arg.walk_end
    return out


def _may_hold_pages(v: "LiveVma") -> bool:
    """Without PAGEMAP_SCAN: smaps says a PROT_NONE VMA with no Rss and no Swap holds
    nothing worth a read (a reservation; only a zero page or a guard marker there would be
    missed). Every other VMA is read."""
    return v.perms[:3] != "---" or v.fields.get("Rss", 0) > 0 or v.fields.get("Swap", 0) > 0


def read_pagemaps(fd: int, vmas: List["LiveVma"]) -> None:
    """Set ``v.pi`` (page indexes in the VMA) and ``v.pm`` (entries) of the present and
    swap/marker pagemap entries of every VMA below TASK_SIZE. Reads only where pages can
    be: the ranges PAGEMAP_SCAN finds (plus the VM_PFNMAP VMAs, which it skips), or
    without it every VMA _may_hold_pages allows; in chunks of at most _READ_CHUNK
    entries. Host memory follows the pages found, not the size of the VMAs."""
    vmas = [v for v in vmas if v.start < TASK_SIZE]
    try:
        ranges = scan_pagemap(fd, 0, TASK_SIZE, (ctypes.c_uint64 * (3 * _SCAN_VEC))())
        ranges = sorted(ranges + [(v.start, v.end) for v in vmas if _is_pfnmap(v)])
    except _NoScan:
        ranges = [(v.start, v.end) for v in vmas if _may_hold_pages(v)]
    pages, ents = [np.empty(0, np.int64)], [np.empty(0, np.uint64)]
    for lo, hi in ranges:
        for a in range(lo, hi, _READ_CHUNK << PAGE_SHIFT):
            pm = read_pagemap(fd, a, min(_READ_CHUNK, (hi - a) >> PAGE_SHIFT))
            nz = np.flatnonzero(pm & np.uint64(PM_PRESENT | PM_SWAP))   # not soft-dirty holes
            pages.append(nz + (a >> PAGE_SHIFT))
            ents.append(pm[nz])
    pages, ents = np.concatenate(pages), np.concatenate(ents)
    first = np.array([v.start >> PAGE_SHIFT for v in vmas], dtype=np.int64)
    lo = np.searchsorted(pages, first).tolist()
    hi = np.searchsorted(pages, [v.end >> PAGE_SHIFT for v in vmas]).tolist()
    for v, f, a, b in zip(vmas, first.tolist(), lo, hi):
        v.pi, v.pm = pages[a:b] - f, ents[a:b]


_ZERO_PFN: Optional[int] = None


def zero_pfn() -> int:
    """The PFN of the kernel's zero page, found by a read fault in this process (0 if PFNs
    are hidden from us)."""
    global _ZERO_PFN
    if _ZERO_PFN is None:
        import mmap
        m = mmap.mmap(-1, PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        try:
            m[0]
            import ctypes
            addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
            with open("/proc/self/pagemap", "rb") as f:
                f.seek((addr >> PAGE_SHIFT) * 8)
                e = struct.unpack("Q", f.read(8))[0]
            del addr
            _ZERO_PFN = e & PM_PFN_MASK if e & PM_PRESENT else 0
        except (OSError, TypeError, BufferError):
            _ZERO_PFN = 0
        finally:
            try:
                m.close()
            except BufferError:
                pass
    return _ZERO_PFN


def kpageflags(pfns: np.ndarray) -> Optional[np.ndarray]:
    """/proc/kpageflags entries for pfns (None if unreadable)."""
    try:
        fd = os.open("/proc/kpageflags", os.O_RDONLY)
    except OSError:
        return None
    try:
        out = np.empty(len(pfns), dtype=np.uint64)
        order = np.argsort(pfns)
        sp = pfns[order]
        i = 0
        n = len(sp)
        while i < n:
            j = i
            while j + 1 < n and sp[j + 1] - sp[i] < 4096 and j + 1 - i < 4096:
                j += 1
            base = int(sp[i])
            raw = os.pread(fd, (int(sp[j]) - base + 1) * 8, base * 8)
            arr = np.frombuffer(raw, dtype=np.uint64)
            out[order[i:j + 1]] = arr[(sp[i:j + 1] - base).astype(np.int64)]
            i = j + 1
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


# ---------------------------------------------------------------- the import
@dataclass
class _Plan:
    live: LiveVma
    kind: str                 # "anon", "file", "shmem", "pfnmap"
    key: object = None        # backing key
    pi: Optional[np.ndarray] = None     # page indexes (in the VMA) of present/swap entries
    pm: Optional[np.ndarray] = None     # their pagemap entries


def _is_shmem_path(path: str) -> bool:
    return path.startswith(_SHMEM_PREFIXES)


def _is_pfnmap(v: LiveVma) -> bool:
    return v.path in _PFN_SPECIAL or bool(v.flags & _PFNMAP_IO)


def _classify(v: LiveVma) -> str:
    if _is_pfnmap(v):
        return "pfnmap"
    if v.path in _FILE_SPECIAL:
        return "file"
    shared = "s" in v.perms[3:]
    if v.path.startswith("/") or v.path.startswith("[anon_shmem"):
        if _is_shmem_path(v.path) or (shared and v.inode and v.path.startswith("/dev/zero")):
            return "shmem"
        return "file"
    if shared:
        return "shmem"
    return "anon"


@locked_function
def import_process(machine, pid: int, *, contents: bool = False, stop: bool = False):
    """Build an emulated Process from the live process ``pid`` (see the module doc).

    Returns the Process; its ``import_report`` (an ImportReport) says what was imported
    and what differs. ``contents=True`` copies page contents from /proc/PID/mem where
    readable. ``stop=True`` holds the process with SIGSTOP while it is read (and sends
    SIGCONT after); otherwise a running process may change while it is read.
    Raises ImportFailed (an OSError) with nothing added to the machine, TypeError for a
    pid that is not an integer and ValueError for one that is not positive.
    """
    if isinstance(pid, bool):
        raise TypeError("pid must be an int, not bool")
    pid = operator.index(pid)
    if pid <= 0:
        raise ValueError(f"pid must be positive, not {pid}")
    stopped = False
    if stop:
        try:
            os.kill(pid, signal.SIGSTOP)
            stopped = True
        except ProcessLookupError:
            raise ImportFailed(errno.ESRCH, f"no process {pid}") from None
        except PermissionError:
            raise ImportFailed(errno.EACCES, f"may not stop process {pid}") from None
    try:
        live = _read_live(pid)
    finally:
        if stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
    return _build(machine, pid, live, contents)


def _read_live(pid: int) -> dict:
    status = read_status(pid)
    state = str(status.get("State", ""))
    if state[:1] in ("Z", "X"):
        raise ImportFailed(errno.ESRCH, f"process {pid} has exited ({state})")
    vmas = parse_smaps(read_proc(pid, "smaps"))
    if not vmas:
        if "VmSize" not in status:
            raise ImportFailed(errno.EINVAL, f"process {pid} is a kernel thread: no address space")
        raise ImportFailed(errno.ESRCH, f"process {pid} exited (no mappings)")
    stat = read_stat_fields(pid)
    pmf = _open_proc(pid, "pagemap", "rb")
    try:
        read_pagemaps(pmf.fileno(), vmas)
    finally:
        pmf.close()
    status2 = read_status(pid)
    return {"status": status, "status_after": status2, "vmas": vmas, "stat": stat}


def _build(machine, pid: int, live: dict, contents: bool):
    report = ImportReport(pid, comm=str(live["status"].get("Name", "")))
    report.kernel_status = {k: v for k, v in live["status"].items() if isinstance(v, int)}
    after = {k: v for k, v in live["status_after"].items() if isinstance(v, int)}
    report.changed_while_read = any(after.get(k) != report.kernel_status.get(k)
                                    for k in ("VmSize", "VmRSS", "VmPTE", "VmSwap"))
    vmas: List[LiveVma] = live["vmas"]
    zpfn = zero_pfn()
    plans: List[_Plan] = []
    all_pfns = []
    for v in vmas:
        if v.start >= TASK_SIZE:
            report.skipped.append(f"{v.start:#x}-{v.end:#x} {v.path}: above TASK_SIZE (the "
                                  "vsyscall gate page, not a VMA of the mm)")
            continue
        pm = v.pm
        pres = (pm & np.uint64(PM_PRESENT)) != 0
        pfns = pm[pres] & np.uint64(PM_PFN_MASK)
        if len(pfns):
            all_pfns.append(pfns)
        plans.append(_Plan(v, _classify(v), pi=v.pi, pm=pm))
    cat = np.concatenate(all_pfns) if all_pfns else np.empty(0, np.uint64)
    report.pfns_readable = bool(len(cat)) and bool(np.any(cat != 0))
    pfns_ok = report.pfns_readable and zpfn != 0

    kflags: Dict[int, int] = {}
    if pfns_ok:
        # kpageflags only where it decides something: file pages (shmem or not) and THP
        need = []
        for pl in plans:
            pm = pl.pm
            pres = (pm & np.uint64(PM_PRESENT)) != 0
            if pl.kind == "file" or pl.live.fields.get("AnonHugePages", 0) \
                    or pl.live.fields.get("ShmemPmdMapped", 0):
                need.append(pm[pres] & np.uint64(PM_PFN_MASK))
        if need:
            q = np.unique(np.concatenate(need))
            kf = kpageflags(q.astype(np.int64))
            if kf is not None:
                report.kpageflags = True
                kflags = dict(zip(q.tolist(), kf.tolist()))

    # shmem file mappings discovered by kpageflags (tmpfs files)
    for pl in plans:
        if pl.kind == "file" and kflags and pl.live.path not in _FILE_SPECIAL:
            pm = pl.pm
            fp = pm[(pm & np.uint64(PM_PRESENT | PM_FILE)) == np.uint64(PM_PRESENT | PM_FILE)]
            if len(fp) and (kflags.get(int(fp[0] & np.uint64(PM_PFN_MASK)), 0) >> KPF_SWAPBACKED) & 1:
                pl.kind = "shmem"

    # backing objects: sizes first
    need_pages: Dict[object, int] = {}     # pages the object must cover (VMAs)
    present_pages: Dict[object, int] = {}  # pages up to the last present file page
    key_inode: Dict[object, int] = {}
    for pl in plans:
        v = pl.live
        if pl.kind == "file":
            pl.key = ("file", v.path)
        elif pl.kind == "shmem":
            pl.key = ("shmem", v.dev, v.inode, v.path)
        else:
            continue
        pgoff = v.offset >> PAGE_SHIFT
        need_pages[pl.key] = max(need_pages.get(pl.key, 0), pgoff + v.npages)
        key_inode[pl.key] = v.inode
        fp = pl.pi[(pl.pm & np.uint64(PM_PRESENT | PM_FILE)) == np.uint64(PM_PRESENT | PM_FILE)]
        if len(fp):
            present_pages[pl.key] = max(present_pages.get(pl.key, 0), pgoff + int(fp[-1]) + 1)

    registry = machine._import_registry
    created_files = []
    p = machine.spawn()
    try:
        backings = {}
        for key, npages in need_pages.items():
            if key[0] == "file":
                path = key[1]
                f = machine._files.get(path)
                if f is None:
                    # the file's size if it is still there (the same inode), else the mapping's
                    size = npages * PAGE_SIZE
                    try:
                        st = os.stat(path)
                        if st.st_ino == key_inode.get(key, -1):
                            size = st.st_size
                    except OSError:
                        pass
                    size = max(size, present_pages.get(key, 0) * PAGE_SIZE)
                    f = machine.create_file(path, size=size, writable=False)
                    created_files.append(f)
                elif f.npages < present_pages.get(key, 0):
                    i_size_write(f, present_pages[key] * PAGE_SIZE)
                backings[key] = f
            else:
                sh = registry["shmem"].get(key)
                if sh is None or sh not in machine._backings:
                    sh = machine.shmem_zero_setup(npages * PAGE_SIZE)
                    sh.name = key[3] or "/dev/zero (deleted)"
                    registry["shmem"][key] = sh
                elif sh.npages < npages:
                    sh.npages = npages
                backings[key] = sh

        mm = p.mm
        st = live["stat"]
        mm.start_code, mm.end_code = st["start_code"], st["end_code"]
        mm.start_stack = st["start_stack"]
        counts = {"anon": 0, "zero": 0, "file": 0, "shmem": 0, "pfnmap": 0, "guard": 0,
                  "swap": 0}
        anon_reg = registry["anon"]
        to_fill = []
        for pl in plans:
            v = pl.live
            backing = backings.get(pl.key)
            pgoff = (v.offset >> PAGE_SHIFT) if backing is not None else (v.start >> PAGE_SHIFT)
            vma = VMA(v.start, v.end, v.flags, pgoff, backing)
            if backing is None and v.path:
                vma.name = v.path
            if v.path == "[heap]":
                mm.start_brk = mm.start_brk or st["start_brk"] or v.start
                mm.brk = v.end
            mm.insert(vma)
            mm.vm_stat_account(vma.flags, v.npages)
            if vma.flags & VmFlags.LOCKED:
                mm.locked_vm += v.npages
            report.vmas += 1
            pm, pi = pl.pm, pl.pi
            if not len(pm):
                continue            # nothing present, swapped or guarded: the VMA alone
            pres = (pm & np.uint64(PM_PRESENT)) != 0
            if v.fields.get("AnonHugePages", 0) and backing is None and kflags:
                pres &= ~_import_huge_pmds(p, vma, v, pm, pi, kflags, anon_reg, report, counts,
                                           to_fill if contents else None)
            huge_kb = v.fields.get("FilePmdMapped", 0) + v.fields.get("ShmemPmdMapped", 0)
            if huge_kb and backing is not None and kflags:
                pres &= ~_import_file_pmds(p, vma, v, backing, pm, pi, kflags, huge_kb >> 11,
                                           report, counts, to_fill if contents else None)
            idx = pi[pres]
            guard_idx = pi[pm == np.uint64(PM_GUARD_ENTRY)]
            if v.fields.get("AnonHugePages", 0) or v.fields.get("FilePmdMapped", 0):
                if kflags:
                    thp = [(kflags.get(int(x & np.uint64(PM_PFN_MASK)), 0) >> KPF_THP) & 1
                           for x in pm[pres]]
                    report.thp_pages += int(sum(thp))
                elif not report.huge_pmds:
                    report.thp_pages += (v.fields.get("AnonHugePages", 0)
                                         + v.fields.get("FilePmdMapped", 0)) >> 2
            if pl.kind == "pfnmap":
                counts["pfnmap"] += len(idx)
                for a in np.unique((v.start + (idx << PAGE_SHIFT)) & ~(PMD_SIZE - 1)).tolist():
                    if not _install.ensure_pte_table(mm.core, a):
                        raise _oom()
                continue
            e = pm[pres]
            isfile = (e & np.uint64(PM_FILE)) != 0
            excl = (e & np.uint64(PM_MMAP_EXCLUSIVE)) != 0
            rpfn = (e & np.uint64(PM_PFN_MASK)).astype(np.int64)
            kinds = np.empty(len(idx), dtype=np.uint8)
            frames = np.full(len(idx), -1, dtype=np.int64)
            if backing is not None:
                kinds[isfile] = _install.KIND_CACHE
            else:
                isfile[:] = False
            anon = ~isfile
            if pfns_ok:
                zero = anon & (rpfn == zpfn)
            else:
                # PFNs hidden: smaps Anonymous counts the anonymous pages, the rest of the
                # non-exclusive present pages are the zero page
                nz = max(0, int(np.count_nonzero(anon)) - (v.fields.get("Anonymous", 0) >> 2))
                cand = np.flatnonzero(anon & ~excl)[:nz]
                zero = np.zeros(len(idx), dtype=bool)
                zero[cand] = True
            if backing is not None:
                zero &= False      # the zero page maps only in anonymous VMAs
            kinds[anon & excl] = _install.KIND_ANON_EXCLUSIVE
            kinds[anon & ~excl] = _install.KIND_ANON_SHARED
            kinds[zero] = _install.KIND_ZERO
            shared_anon = np.flatnonzero(anon & ~excl & ~zero)
            if pfns_ok and len(shared_anon) and anon_reg:
                for i in shared_anon.tolist():
                    got = anon_reg.get(int(rpfn[i]))
                    if got is not None and _still_maps(*got):
                        frames[i] = got[2]
                        report.shared_frames += 1
            addrs = (v.start + (idx.astype(np.uint64) << np.uint64(PAGE_SHIFT))).astype(np.uint64)
            rc, got_anon = _install.install_pages(mm.core, vma, addrs, kinds, frames)
            if rc == -1:
                raise _oom()
            if rc == -2:
                raise ImportFailed(errno.EINVAL, f"{v.path}: file page past the object's end")
            if got_anon and vma.anon_vma is None:
                vma.anon_vma = AnonVma()
            if pfns_ok:
                for i in shared_anon.tolist():
                    if int(rpfn[i]) not in anon_reg or not _still_maps(*anon_reg[int(rpfn[i])]):
                        anon_reg[int(rpfn[i])] = (p, int(addrs[i]), int(frames[i]))
            swapped = (((pm & np.uint64(PM_PRESENT | PM_SWAP)) == np.uint64(PM_SWAP))
                       & (pm != np.uint64(PM_GUARD_ENTRY)))
            if np.any(swapped):
                counts["swap"] += int(np.count_nonzero(swapped))
                _import_swap(machine, mm, vma, v, pm[swapped], pi[swapped], registry["swap"])
            if len(guard_idx):
                from ._core import zap as _zap
                for g in guard_idx.tolist():
                    a = v.start + (g << PAGE_SHIFT)
                    if _zap.guard_install(mm.core, a, a + PAGE_SIZE) < 0:
                        raise _oom()
                vma.set_flags(vma.flags | VmFlags.MAYBE_GUARD)
                if vma.is_anonymous and vma.anon_vma is None:
                    vma.anon_vma = AnonVma()
                counts["guard"] += len(guard_idx)
            nzero = int(np.count_nonzero(zero))
            counts["zero"] += nzero
            counts["anon"] += int(np.count_nonzero(anon)) - nzero
            counts["shmem" if pl.kind == "shmem" else "file"] += int(np.count_nonzero(isfile))
            if contents:
                keep = kinds != _install.KIND_ZERO
                to_fill.append((v.start, idx[keep], frames[keep]))
        report.pages = counts

        # page tables the kernel keeps where pagemap shows nothing
        _match_vmpte(p, report, plans)
        if contents:
            report.contents_pages = _copy_contents(machine, pid, to_fill)
        mm.hiwater_vm = max(mm.total_vm, live["status"].get("VmPeak", 0) >> 2)
        mm.hiwater_rss = max(mm.rss, live["status"].get("VmHWM", 0) >> 2)
        p.imported_from = pid
        st = p.status()
        report.emulated_status = {k: st[k] for k in st}
        p.import_report = report
        return p
    except BaseException:
        if p.alive:
            p.exit()
        for f in created_files:
            if not f.unlinked:
                machine.unlink(f)
        raise


def _import_swap(machine, mm, vma, v: LiveVma, entries, idx, reg) -> None:
    """Swap entries: one emulated slot per (swap type, offset) of the kernel, shared by
    every imported process that holds it (a fork's copies); the data is not readable (a
    read of /proc/PID/mem would swap the page in), so a fault reads back zeros."""
    from . import swap as _swapmod
    from ._core import swap as _swap
    keys = (entries & np.uint64(PM_PFN_MASK)).tolist()
    missing = len({k for k in keys if k and k not in reg}) + sum(1 for k in keys if not k)
    got = _swapmod.alloc_slots(machine, missing)
    if len(got) < missing:
        raise ImportFailed(errno.ENOMEM, f"the emulated swap device has {len(got)} free "
                                         f"slots for {missing} swap entries")
    free = iter(got.tolist())
    sl = np.empty(len(keys), dtype=np.int64)
    for i, k in enumerate(keys):
        if not k:                   # the offset is hidden (no PFN rights): never shared
            sl[i] = next(free)
            continue
        if k not in reg:
            reg[k] = next(free)
        sl[i] = reg[k]
    addrs = (v.start + (idx.astype(np.uint64) << np.uint64(PAGE_SHIFT))).astype(np.uint64)
    if _swap.install_swap_entries(mm.core, addrs, sl) < 0:
        raise _oom()
    if vma.anon_vma is None:
        vma.anon_vma = AnonVma()     # a swapped anonymous page was mapped: the VMA had one


def _import_huge_pmds(p, vma, v, pm, pi, kflags, anon_reg, report, counts, to_fill):
    """The PMD-mapped THPs of a private anonymous VMA as huge PMDs (huge_memory's
    install_huge_pmd): every 2 MiB-aligned span whose 512 pages are present, anonymous and at
    consecutive PFNs from a THP head (kpageflags COMPOUND_HEAD and THP), with one exclusive
    bit, up to the VMA's smaps AnonHugePages (a span of a folio the kernel maps with PTEs
    looks the same in pagemap; smaps says how many the kernel maps by PMD). The huge zero
    folio's spans get it; a folio another imported process maps by a PMD is shared with it.
    Returns the mask of pm's entries installed."""
    from ._core import huge_memory as _huge
    done = np.zeros(len(pm), dtype=bool)
    limit = v.fields["AnonHugePages"] >> 11
    pres = (pm & np.uint64(PM_PRESENT)) != 0
    addr = v.start + (pi.astype(np.int64) << PAGE_SHIFT)
    installed = 0       # THPs (the huge zero folio does not count in AnonHugePages)
    for k in np.flatnonzero(pres & (addr % PMD_SIZE == 0)).tolist():
        a = int(addr[k])
        if k + 512 > len(pm) or a + PMD_SIZE > v.end or pi[k + 511] != pi[k] + 511:
            continue
        e = pm[k:k + 512]
        rpfn = (e & np.uint64(PM_PFN_MASK)).astype(np.int64)
        excl = (e & np.uint64(PM_MMAP_EXCLUSIVE)) != 0
        head = int(rpfn[0])
        kf = kflags.get(head, 0)
        zero = bool((kf >> KPF_ZERO_PAGE) & 1)      # pagemap calls it a file page
        if (not np.all(e & np.uint64(PM_PRESENT)) or (np.any(e & np.uint64(PM_FILE)) and not zero)
                or head % 512 or not np.array_equal(rpfn, head + np.arange(512))
                or not (kf >> KPF_THP) & 1 or not (kf >> KPF_COMPOUND_HEAD) & 1
                or excl.any() != excl.all()):
            continue
        if not zero and installed >= limit:
            continue
        share = _huge.HUGE_NEW
        if not zero and not excl[0] and head in anon_reg:
            proc, at, ehead = anon_reg[head]
            if proc.alive and _huge.huge_pmd_head(proc.mm.core, at) == ehead:
                share = ehead
        got = _huge.install_huge_pmd(p.mm.core, vma, a, _huge.HUGE_ZERO if zero else share,
                                     bool(excl[0]))
        if got == -1:
            raise _oom()
        if got < 0:
            continue
        vma.anon_vma = vma.anon_vma or AnonVma()
        if not zero and not excl[0] and share < 0:
            anon_reg[head] = (p, a, got)
        done[k:k + 512] = True
        installed += not zero
        report.huge_pmds += 1
        counts["zero" if zero else "anon"] += 512
        if to_fill is not None and not zero:
            to_fill.append((v.start, pi[k:k + 512], got + np.arange(512, dtype=np.int64)))
    return done


def _import_file_pmds(p, vma, v, backing, pm, pi, kflags, limit, report, counts, to_fill):
    """The PMD-mapped page-cache folios of a file or shmem VMA as file PMDs (huge_memory's
    install_file_pmd): every 2 MiB-aligned span at a 512-aligned index whose 512 pages are
    present page-cache pages at consecutive PFNs from a THP head (kpageflags), up to limit
    (the VMA's smaps FilePmdMapped + ShmemPmdMapped, in PMDs). The emulated object gets a
    PMD-sized folio there (filemap_alloc_folio_pmd) unless one is cached already (another
    imported mapping of it); a span some of whose pages are cached alone stays with PTEs.
    Returns the mask of pm's entries installed."""
    from ._core import huge_memory as _huge
    done = np.zeros(len(pm), dtype=bool)
    addr = v.start + (pi.astype(np.int64) << PAGE_SHIFT)
    pres = (pm & np.uint64(PM_PRESENT | PM_FILE)) == np.uint64(PM_PRESENT | PM_FILE)
    installed = 0
    for k in np.flatnonzero(pres & (addr % PMD_SIZE == 0)).tolist():
        a = int(addr[k])
        idx = vma.pgoff + ((a - vma.start) >> PAGE_SHIFT)
        if (installed >= limit or k + 512 > len(pm) or a + PMD_SIZE > v.end or idx % 512
                or pi[k + 511] != pi[k] + 511 or not pres[k:k + 512].all()
                or idx + 512 > backing.npages):
            continue
        rpfn = (pm[k:k + 512] & np.uint64(PM_PFN_MASK)).astype(np.int64)
        head = int(rpfn[0])
        kf = kflags.get(head, 0)
        if (head % 512 or not np.array_equal(rpfn, head + np.arange(512))
                or not (kf >> KPF_THP) & 1 or not (kf >> KPF_COMPOUND_HEAD) & 1):
            continue
        cached = backing.cache.count(idx, idx + 512)
        if cached == 0:
            if _huge.filemap_alloc_folio_pmd(p.machine.phys, backing.cache, idx,
                                             backing.swapbacked) < 0:
                raise _oom()
        elif folio_head(backing, idx, p.machine.phys) < 0:
            continue
        got = _huge.install_file_pmd(p.mm.core, vma, a)
        if got == -1:
            raise _oom()
        if got < 0:
            continue
        done[k:k + 512] = True
        installed += 1
        report.huge_pmds += 1
        counts["shmem" if backing.swapbacked else "file"] += 512
        if to_fill is not None:
            to_fill.append((v.start, pi[k:k + 512], got + np.arange(512, dtype=np.int64)))
    return done


def _still_maps(proc, addr: int, pfn: int) -> bool:
    """Does the imported process that first mapped this frame still map it at addr? (It
    may have exited or unmapped it since, and the frame been reused.)"""
    if not proc.alive:
        return False
    e = proc.mm.core.walk(addr)[3]
    return bool(e & 1) and ((e >> 12) & ((1 << 40) - 1)) == pfn


def _oom():
    return ImportFailed(errno.ENOMEM, "the emulated machine has too little memory for the process")


def _match_vmpte(p, report: ImportReport, plans: List[_Plan]) -> None:
    """Add empty PTE tables until VmPTE is the kernel's; the kernel's own choice is
    invisible to pagemap. Spans of VMAs without any present entry come first (their pages
    went: MADV_DONTNEED, or a munmap inside the span), then the others, each in address
    order, taking a span whenever its cost (1-3 tables) still fits. A private anonymous VMA
    given a table gets an anon_vma (it was faulted, so most likely written).

    One pass in that order is enough, so the placement is linear in the spans: a span
    passed over because its cost did not fit shares any missing upper table only with
    spans that cost as much, so it never fits later either."""
    want = report.kernel_status.get("VmPTE")
    if want is None:
        return
    core = p.mm.core
    deficit = (want << 10) - core.pgtables_bytes
    if deficit <= 0:
        return
    empty, other = [], []
    for pl in plans:
        v = pl.live
        has = len(pl.pm) > 0
        a = v.start & ~(PMD_SIZE - 1)
        n = 0
        while a < v.end and n < 4096:
            (other if has else empty).append((a, v.start))
            a += PMD_SIZE
            n += 1
    vma_at = {v.start: v for v in p.mm.vmas}
    for a, vstart in empty + other:
        if deficit <= 0:
            break
        c = core.tables_needed(a)
        if c and c * PAGE_SIZE <= deficit:
            _install.ensure_pte_table(core, a)
            report.extra_tables.append(a)
            deficit -= c * PAGE_SIZE
            v = vma_at.get(vstart)
            if v is not None and v.is_anonymous and not (v.flags & VmFlags.SHARED) \
                    and v.anon_vma is None and v.flags & VmFlags.WRITE:
                v.anon_vma = AnonVma()


def _copy_contents(machine, pid: int, to_fill) -> int:
    """Copy present pages' bytes from /proc/PID/mem into their frames (where readable)."""
    try:
        fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
    except OSError:
        return 0
    n = 0
    try:
        for start, idx, frames in to_fill:
            ok_pfn, rows = [], []
            for i, fr in zip(idx.tolist(), frames.tolist()):
                if fr < 0:
                    continue
                try:
                    data = os.pread(fd, PAGE_SIZE, start + (i << PAGE_SHIFT))
                except OSError:
                    continue
                if len(data) == PAGE_SIZE:
                    ok_pfn.append(fr)
                    rows.append(data)
            if ok_pfn:
                arr = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(-1, PAGE_SIZE)
                _install.fill_frames(machine.phys, np.array(ok_pfn, dtype=np.int64), arr)
                n += len(ok_pfn)
    finally:
        os.close(fd)
    return n
