"""The published versions of the copy-on-write page-table series, as profiles of one mechanism.

``Machine(cow_pte_version=...)`` picks one: ``"odf"`` (On-Demand-Fork, rssys/on-demand-fork),
``"v1"`` (lore 20220519183127.3909598), ``"v2"`` (RFC v2, 20220927162957.270460), ``"v5"``
(20230414142341.354556); ``"v3"`` and ``"v4"`` behave as v5. A profile implies its accounting
(odf, v1, v2 deferred to the owner; v3-v5 eager) and sets the core's rule bits
(``_core/cow_pte_profile.pxd``, the decision points in fault, fork, break and drop); the
policy rules (which spans are shared, how a process opts in) live here. docs/series-versions.md
has the table of rules and the patch lines each follows; where a version's code does
something mmemu does not model (a version's bug), the docs name it.
"""
from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._core.constants import (
    COW_RULE_FLUSH_EVERY_BREAK, COW_RULE_MKOLD_AT_FORK, COW_RULE_NO_BREAK_FLUSH,
    COW_RULE_OWNER_NULL, COW_RULE_READ_FAULT_SHARED, COW_RULE_V1_EXIT_FALLBACK, MM_SWAPENTS,
    PMD_SHIFT,
)
from .errors import MMError, einval
from .flags import PR_GET_COW_PTE, PR_SET_COW_PTE, VmFlags

_SPAN = 1 << PMD_SHIFT
# no version shares a span holding a VMA the child does not get (VM_DONTCOPY) or gets empty
# (VM_WIPEONFORK); v1 and v5 as written would (docs: "spans shared")
_NEVER = int(VmFlags.DONTCOPY | VmFlags.WIPEONFORK)
_ODF_EXCLUDED = int(VmFlags.SHARED | VmFlags.MAYSHARE | VmFlags.IO | VmFlags.PFNMAP
                    | VmFlags.MIXEDMAP) | _NEVER


@dataclass(frozen=True)
class CowPteProfile:
    """One version of the series: its accounting, core rule bits, span rule and opt-in."""
    name: str
    accounting: str         # "deferred" (owner counts a shared table) or "eager"
    rules: int              # COW_RULE_* bits for the core
    spans: str              # "odf" | "vma" (v1/v2) | "span" (v3-v5)
    opt_in: str             # "procfs" (odf) | "clone" (v1) | "sysctl" (v2) | "prctl" (v3-v5)
    exclude_brk: bool = False   # v1's cover letter rule (its code has no such test)

    def blocked_spans(self, mm) -> np.ndarray:
        """PMD spans (addr >> 21, sorted) whose PTE table fork copies instead of sharing.

        odf: every span not covered entirely by one anonymous, private, non-heap VMA
        (rssys/on-demand-fork paper-version-kernel-v5.6.19 mm/memory.c copy_pmd_range's
        ODF test). v1/v2: none (v1 copy_pmd_range shares every PMD of a VMA that passes
        vma_needs_copy), or the heap's with exclude_brk. v3-v5: none but for VM_DONTCOPY
        (v5 copy_cow_pte_range -> recover_pte_range). All: a span touching a VM_DONTCOPY
        or VM_WIPEONFORK VMA is copied (docs). A table holding swap entries is copied by
        odf, v1 and v2 (v1 would share it without swap_duplicate: its "TODO: Handle the
        swap"; RFC v2 and ODF: not modelled) and shared by v3-v5, which duplicate each
        swap entry at fork (copy_cow_pte_range -> copy_nonpresent_pte with dst == src) and
        break the table on a swap fault (handle_cow_pte_fault before do_swap_page)."""
        from ._core.task_mmu import pte_tables
        spans = []
        for v in mm.vmas:
            tables = pte_tables(mm.core, v.start, v.end) >> PMD_SHIFT
            if self.spans == "odf":
                if v.flags & _ODF_EXCLUDED or not v.is_anonymous or _is_heap(mm, v):
                    spans.append(tables)
                else:       # only spans the VMA covers whole
                    inside = (tables * _SPAN >= v.start) & ((tables + 1) * _SPAN <= v.end)
                    spans.append(tables[~inside])
            elif v.flags & _NEVER or (self.exclude_brk and _is_heap(mm, v)):
                spans.append(tables)
        if mm.core.rss[MM_SWAPENTS] and self.spans != "span":
            from ._core.swap import swap_spans
            spans.append(swap_spans(mm.core))
        spans = [s for s in spans if len(s)]
        if not spans:
            return np.empty(0, dtype=np.int64)
        return np.unique(np.concatenate(spans)).astype(np.int64)

    # ---- opt-in ----
    def clone_flag_allowed(self) -> bool:
        """Does this kernel know CLONE_COW_PGTABLE (v1 only)?"""
        return self.opt_in == "clone"

    def after_cow_fork(self, parent) -> None:
        """v1 (20220519183127.3909598-6, copy_process): CLONE_COW_PGTABLE sets
        MMF_COW_PGTABLE on the parent's mm, sticky and inherited: later plain forks share."""
        if self.opt_in == "clone":
            parent.mm.cow_pgtable = True

    def prctl(self, proc, option: int, args) -> Optional[int]:
        """prctl(PR_SET_COW_PTE / PR_GET_COW_PTE) under this version; None: mmemu's own.
        v3-v5 (v4 20230207035139.272707 "mm: Add PR_SET_COW_PTE"): PR_SET_COW_PTE sets
        MMF_COW_PTE_READY, EINVAL if it is set already; there is no getter. v1/v2 have no
        such prctl (EINVAL). odf keeps mmemu's switch (its /proc/<pid>/use_odf stand-in)."""
        if self.opt_in == "procfs" or option not in (PR_SET_COW_PTE, PR_GET_COW_PTE):
            return None
        if self.opt_in != "prctl" or option == PR_GET_COW_PTE:
            raise einval(f"this kernel ({self.name}) has no such prctl option")
        if proc.mm.cow_pgtable:
            raise einval("PR_SET_COW_PTE: COW page tables are already enabled for this process")
        proc.mm.cow_pgtable = True
        return 0


def _is_heap(mm, v) -> bool:
    return v.name == "[heap]" or (mm.brk > mm.start_brk and v.start < mm.brk and v.end > mm.start_brk)


_V1 = COW_RULE_OWNER_NULL | COW_RULE_NO_BREAK_FLUSH | COW_RULE_V1_EXIT_FALLBACK
_V5 = dict(accounting="eager", spans="span", opt_in="prctl",
           rules=COW_RULE_READ_FAULT_SHARED | COW_RULE_MKOLD_AT_FORK | COW_RULE_FLUSH_EVERY_BREAK)
PROFILES = {
    "odf": CowPteProfile("odf", "deferred", 0, "odf", "procfs"),
    "v1": CowPteProfile("v1", "deferred", _V1, "vma", "clone"),
    "v1-nobrk": CowPteProfile("v1-nobrk", "deferred", _V1, "vma", "clone", exclude_brk=True),
    "v2": CowPteProfile("v2", "deferred", COW_RULE_OWNER_NULL | COW_RULE_NO_BREAK_FLUSH, "vma", "sysctl"),
    "v3": CowPteProfile("v3", **_V5),
    "v4": CowPteProfile("v4", **_V5),
    "v5": CowPteProfile("v5", **_V5),
}


def cow_pte_profile(version, accounting) -> tuple:
    """(profile or None, accounting) for Machine's arguments; ValueError (before anything is
    made) for an unknown version, an unknown accounting, or an accounting the version
    contradicts."""
    if accounting is not None and accounting not in ("deferred", "eager"):
        raise ValueError("cow_pte_accounting must be 'deferred' or 'eager'")
    if version is None:
        return None, accounting or "deferred"
    if not isinstance(version, str) or version not in PROFILES:
        raise ValueError(f"unknown cow_pte_version {version!r} (use None or one of {sorted(PROFILES)})")
    prof = PROFILES[version]
    if accounting is not None and accounting != prof.accounting:
        raise ValueError(f"cow_pte_version {version!r} accounts {prof.accounting}, "
                         f"not {accounting}")
    return prof, prof.accounting


class Sysctl:
    """``Machine.sysctl``: the /proc/sys knobs the modelled kernel has. Only RFC v2's
    ``vm.cow_pte`` (20220927162957.270460, mm/cow_pte.c ``cow_pte_handler`` ->
    ``set_cow_pte_task``): writing a pid enables COW page tables for that process's later
    forks; the value reads back as -1 (the handler resets it after every write)."""

    def __init__(self, machine):
        self._machine = machine

    def _knob(self, key):
        prof = self._machine.cow_pte_profile
        if key != "vm.cow_pte" or prof is None or prof.opt_in != "sysctl":
            raise MMError(errno.ENOENT, f"no sysctl {key!r} in this kernel")

    def __getitem__(self, key):
        self._knob(key)
        return -1           # sysctl_cow_pte_pid: -1 at boot and after every write

    def __setitem__(self, key, pid) -> None:
        """The handler: a pid no live process has is not an error; set_cow_pte_task logs
        "pid N does not exist" (pr_info) and changes nothing."""
        self._knob(key)
        if not isinstance(pid, int) or isinstance(pid, bool):
            raise TypeError(f"vm.cow_pte takes a pid (int), not {type(pid).__name__}")
        proc = self._machine._procs.get(pid)
        if proc is None:
            self._machine._dmesg.append(f"pid {pid} does not exist")
        else:
            proc.mm.cow_pgtable = True
