"""Predicted kernel time from mmemu's work counters: each cost term is a unit cost measured
on a live kernel (a profile, see calibrate.py) times one work counter (a vmstat delta, or
the process events ``forks`` / ``exits`` that vmstat does not count)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple

# (term, what it stands for in the kernel, counter it multiplies, counters subtracted from
# it, profile unit). Every counter is priced by at most one term.
TERMS: List[Tuple[str, str, str, Tuple[str, ...], str]] = [
    ("fork", "fork(): dup_mm, the fixed part", "forks", (), "fork_fixed"),
    ("fork.table", "copy_pte_range: one PTE table allocated and walked", "fork_pte_tables_copied", (),
     "fork_table"),
    ("fork.pte", "copy_present_pte: one PTE copied (page ref, rmap, write-protect)",
     "fork_ptes_copied", (), "fork_pte"),
    ("fork.share_table", "COW PTE fork: one PTE table shared (priced as fork.table)",
     "cow_pte_tables_shared", (), "fork_table"),
    ("fork.account_pte", "COW PTE fork, eager accounting (v3-v5): copy_present_pte's page "
     "reference, mapcount and RSS per entry of a shared table (priced as fork.pte)",
     "fork_ptes_accounted", (), "fork_pte"),
    ("cow_pte.table", "break COW PTE: one shared table duplicated (priced as fork.table)",
     "cow_pte_tables_duplicated", (), "fork_table"),
    ("cow_pte.pte", "break COW PTE: one entry copied (priced as fork.pte)",
     "cow_pte_entries_copied", (), "fork_pte"),
    ("fault.anon", "do_anonymous_page: first write, a zeroed page", "fault_anon", (), "anon_fault"),
    ("fault.zero", "do_anonymous_page: first read, the zero page", "fault_zero_page", (), "zero_fault"),
    ("fault.cow", "wp_page_copy: COW fault with a 4 KiB copy (warm)", "cow_fault", (), "cow_fault_warm"),
    ("fault.cow_zero", "wp_page_copy from the zero page (priced as a warm COW fault)",
     "cow_zero_fault", (), "cow_fault_warm"),
    ("pgtable.alloc", "__pte_alloc and upper levels outside fork's table copies",
     "pgtable_alloc", ("fork_pte_tables_copied", "cow_pte_tables_duplicated"), "pgtable_alloc"),
    ("zap.pte", "zap_present_ptes: one PTE unmapped and its page released", "ptes_zapped", (),
     "zap_pte"),
    ("zap.table", "free_pgtables: one page-table page freed", "pgtable_free", (), "pgtable_free"),
    ("mprotect.pte", "change_pte_range: one PTE changed", "ptes_protected", (), "mprotect_pte"),
    ("exit", "do_exit / exit_mmap, the fixed part", "exits", (), "exit_fixed"),
]
# counters whose cost is inside a priced term (not priced twice) or that count no work
INCLUDED = {
    "pgfault": "each kind of fault is priced by its own term",
    "pgalloc": "inside the fault terms", "pgfree": "inside zap.pte",
    "pages_zeroed": "inside fault.anon", "fork_ptes_wrprotected": "inside fork.pte",
    "tlb_flush": "inside the terms that flush",
}
STATE = ("nr_",)


@dataclass
class Prediction:
    """Predicted kernel seconds, with one row per cost term and the counters left unpriced."""
    seconds: float
    terms: Dict[str, dict] = field(default_factory=dict)
    unpriced: Dict[str, int] = field(default_factory=dict)
    profile: str = ""

    def __str__(self) -> str:
        lines = [f"predicted kernel time {_fmt(self.seconds)} (profile: {self.profile})"]
        for name, t in self.terms.items():
            lines.append(f"  {name:<18} {t['count']:>12} x {_fmt(t['unit_s']):>9} = "
                         f"{_fmt(t['seconds']):>9}   ({t['counter']})")
        if self.unpriced:
            lines.append("  not priced by the profile: " +
                         ", ".join(f"{k}={v}" for k, v in self.unpriced.items()))
        return "\n".join(lines)


def _fmt(s: float) -> str:
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def predict(counters: Mapping[str, int], profile=None) -> Prediction:
    """Predicted kernel time of the work in `counters` (a vmstat delta as a mapping, plus
    optional ``forks`` and ``exits``) under `profile` (a Profile, a path, or None for the
    default profile shipped with mmemu)."""
    from .profile import load
    prof = load(profile)
    counts = {k: int(v) for k, v in dict(counters).items()}
    bad = [k for k, v in counts.items() if v < 0 and not k.startswith(STATE)]
    if bad:
        raise ValueError(f"negative work counters {bad}: pass a delta of later minus earlier")
    out = Prediction(0.0, profile=prof.name)
    priced = set()
    for name, what, counter, minus, unit in TERMS:
        n = counts.get(counter, 0) - sum(counts.get(c, 0) for c in minus)
        priced.add(counter)
        if n <= 0:
            continue
        u = prof.units[unit]
        out.terms[name] = {"counter": counter + "".join(f" - {c}" for c in minus), "count": n,
                           "unit": unit, "unit_s": u, "seconds": n * u, "what": what}
        out.seconds += n * u
    out.unpriced = {k: v for k, v in counts.items()
                    if v and k not in priced and k not in INCLUDED and not k.startswith(STATE)}
    return out
