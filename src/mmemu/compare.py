"""``mmemu compare PID``: what would a classic fork and a COW-page-table fork of this live
process cost? Each design gets a fresh emulated machine holding the imported process; it
forks once to warm up (the child exits), then the measured fork runs, as in
``mmemu fork-table``.
"""
from __future__ import annotations

import errno
import time
from typing import Dict, List, Sequence

from .errors import MMError
from .machine import Machine
from .procfs import import_process
from .profiles import PROFILES

DESIGNS = {
    "classic": ("classic fork", "deferred", False),
    "deferred": ("COW PTE deferred", "deferred", True),
    "eager": ("COW PTE eager", "eager", True),
    # whole-table COW (mmemu's own design): PMD or PUD tables shared at fork
    "cow-pmd-deferred": ("COW PMD deferred", "deferred", "pmd"),
    "cow-pmd-eager": ("COW PMD eager", "eager", "pmd"),
    "cow-pud-deferred": ("COW PUD deferred", "deferred", "pud"),
    "cow-pud-eager": ("COW PUD eager", "eager", "pud"),
    # the series' published versions (mmemu.profiles)
    "odf": ("COW PTE odf", "deferred", True),
    "v1": ("COW PTE v1", "deferred", True),
    "v2": ("COW PTE RFC v2", "deferred", True),
    "v5": ("COW PTE v5", "eager", True),
}
# names that stand for several designs: a level in both accounting modes
DESIGN_GROUPS = {"cow-pmd": ["cow-pmd-deferred", "cow-pmd-eager"],
                 "cow-pud": ["cow-pud-deferred", "cow-pud-eager"]}


def expand_designs(names) -> List[str]:
    """Design names with the groups (cow-pmd, cow-pud: both accounting modes) spelled out;
    ValueError naming the unknown ones."""
    out = []
    for n in names:
        for d in DESIGN_GROUPS.get(n, [n]):
            if d not in DESIGNS:
                raise ValueError(f"unknown design {n!r}; choose from "
                                 f"{', '.join(list(DESIGNS) + list(DESIGN_GROUPS))}")
            if d not in out:
                out.append(d)
    return out


def design_machine(design: str, memory) -> Machine:
    """A fresh machine for one design: a version name picks its profile."""
    _, accounting, _ = DESIGNS[design]
    return Machine(memory, cow_pte_accounting=accounting,
                   cow_pte_version=design if design in PROFILES else None)


MEMINFO = ["MemFree", "AnonPages", "Mapped", "PageTables"]
CHILD = ["VmPTE", "VmRSS", "RssAnon", "RssFile", "RssShmem"]


def measure_fork(m: Machine, p, cow: bool, check: bool = False):
    """The measured fork of `mmemu fork-table` and `mmemu compare`: one warm-up fork (its
    child exits, so the measured fork reuses hot frames), then a timed fork of p.
    Returns (child, meminfo before, meminfo after, vmstat work, seconds); check=True runs
    the invariant checker afterwards. MMError(ESRCH) if p is not a process of m."""
    if getattr(p, "machine", None) is not m:
        raise MMError(errno.ESRCH, f"{p!r} is not a process of this machine")
    p.fork(cow_pgtable=cow).exit()
    before = dict(m.meminfo())
    ev0 = m.vmstat()
    t0 = time.perf_counter()
    child = p.fork(cow_pgtable=cow)
    fork_s = time.perf_counter() - t0
    after = dict(m.meminfo())
    work = m.vmstat() - ev0
    if check:
        m.check()
    return child, before, after, work, fork_s

def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def compare(pid: int, designs: Sequence[str] = ("classic", "deferred", "eager"),
            memory="64G", check: bool = False, stop: bool = False) -> Dict[str, object]:
    """Import process ``pid`` once per design and fork it there; returns a dict with the
    import summary (``import["matched"]``: whether the import reproduced the kernel's
    VmPTE, RssAnon, RssFile, RssShmem and VmSize; ``import["mismatches"]``: what differs)
    and, per design, meminfo deltas, the child's status, the parent's VmPTE, the fork's
    vmstat work counters (zeros included) and its emulated wall time."""
    def make(design):
        m = design_machine(design, memory)
        return m, import_process(m, pid, stop=stop)
    return _compare(make, int(pid), _comm(pid), designs, check)


def compare_loaded(path, designs: Sequence[str] = ("classic", "deferred", "eager"),
                   check: bool = False) -> Dict[str, object]:
    """compare() of the imported process of a snapshot (``mmemu import PID --save FILE``):
    the file is loaded once per design, its accounting mode set to the design's (a
    freshly imported process shares no table, so the mode has nothing to convert).
    ValueError if the snapshot holds no imported process or several."""
    from .snapshot import load

    def make(design):
        m = load(path, design_loader(design))
        imported = [p for p in m.processes if p.imported_from is not None]
        if len(imported) != 1:
            raise ValueError(f"{path}: {len(imported)} imported processes (compare needs one)")
        return m, imported[0]
    m, p = make("classic")
    pid, comm = p.imported_from, p.imported_comm or "?"
    del m, p
    return _compare(make, pid, comm, designs, check)


def design_loader(design: str):
    """A Machine class whose from_state builds the machine in this design: its accounting
    mode and, for a series version, its profile (the snapshot's own are replaced)."""
    _, accounting, _ = DESIGNS[design]

    class Loaded(Machine):
        @classmethod
        def from_state(cls, state, arrays, frames=(), swap_data=()):
            if isinstance(state, dict) and isinstance(state.get("physmem"), dict):
                state["physmem"]["cow_eager"] = int(accounting == "eager")
            if isinstance(state, dict) and isinstance(state.get("machine"), dict):
                state["machine"]["cow_pte_version"] = design if design in PROFILES else None
            return Machine.from_state.__func__(cls, state, arrays, frames, swap_data)
    return Loaded


def _compare(make, pid: int, comm: str, designs: Sequence[str], check: bool) -> Dict[str, object]:
    out: Dict[str, object] = {"pid": pid, "comm": comm, "designs": {}}
    for d in designs:
        if d not in DESIGNS:
            raise ValueError(f"unknown design {d!r}; choose from {', '.join(DESIGNS)}")
        title, accounting, cow = DESIGNS[d]
        m, p = make(d)
        rep = p.import_report
        if "import" not in out:
            mism = {k: list(v) for k, v in rep.mismatches().items()}
            out["import"] = {
                "vmas": rep.vmas, "pages": rep.pages, "thp_pages": rep.thp_pages,
                "extra_tables": len(rep.extra_tables), "skipped": rep.skipped,
                "pfns_readable": rep.pfns_readable,
                "kernel": {k: rep.kernel_status.get(k) for k in ["VmSize", "VmRSS"] + CHILD[2:] + ["VmPTE"]},
                "matched": not mism,
                "mismatches": mism,
            }
        child, before, after, work, fork_s = measure_fork(m, p, cow, check)
        cs, ps = child.status(), p.status()
        out["designs"][d] = {
            "title": title,
            "accounting": accounting if cow else None,
            "delta": {k: after[k] - before[k] for k in MEMINFO},
            "child": {k: cs[k] for k in CHILD},
            "parent": {"VmPTE": ps["VmPTE"], "VmRSS": ps["VmRSS"]},
            "fork_ms": fork_s * 1e3,
            "work": {k: v for k, v in work.items() if not k.startswith("nr_")},
        }
    return out


def format_compare(res: Dict[str, object]) -> str:
    imp = res["import"]
    ds: List[dict] = list(res["designs"].values())
    w = 18
    k = imp["kernel"]
    pg = imp["pages"]
    lines = [
        f"process {res['pid']} ({res['comm']}): {imp['vmas']} VMAs, VmSize {k['VmSize']} kB, "
        f"VmRSS {k['VmRSS']} kB, VmPTE {k['VmPTE']} kB",
        f"imported: {pg.get('anon', 0)} anonymous, {pg.get('file', 0)} file, "
        f"{pg.get('shmem', 0)} shmem, {pg.get('zero', 0)} zero-page entries"
        + (f"; {imp['thp_pages']} pages of transparent huge pages imported as base pages"
           if imp["thp_pages"] else "")
        + (f"; {imp['extra_tables']} empty PTE tables added to match VmPTE" if imp["extra_tables"] else ""),
    ]
    if imp["mismatches"]:
        lines.append("import differs from the kernel: " + ", ".join(
            f"{f} kernel {a} kB, emulated {b} kB" for f, (a, b) in imp["mismatches"].items()))
    else:
        lines.append("import matched the kernel: VmSize, VmPTE, RssAnon, RssFile and RssShmem "
                     "are equal")
    lines += ["", f"{'fork of it (kB)':<24}" + "".join(f"{d['title']:>{w}}" for d in ds)]
    for f in MEMINFO:
        lines.append(f"{'meminfo ' + f + ' delta':<24}" + "".join(f"{d['delta'][f]:>+{w}}" for d in ds))
    for f in CHILD:
        lines.append(f"{'child ' + f:<24}" + "".join(f"{d['child'][f]:>{w}}" for d in ds))
    lines.append(f"{'parent VmPTE':<24}" + "".join(f"{d['parent']['VmPTE']:>{w}}" for d in ds))
    lines.append(f"{'fork wall time (ms)':<24}" + "".join(f"{d['fork_ms']:>{w}.3f}" for d in ds))
    lines += ["", "work done by the fork (vmstat deltas):"]
    names: List[str] = []
    for d in ds:
        names += [n for n, v in d["work"].items() if v and n not in names]
    for n in names:
        lines.append(f"  {n:<22}" + "".join(f"{d['work'].get(n, 0):>{w}}" for d in ds))
    return "\n".join(lines)
