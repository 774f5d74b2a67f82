"""The registry of reproduced figures: NAME -> a function(profile) returning a Figure.
Only designs mmemu has today (classic fork, COW page tables deferred / eager)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import numpy as np

from ..bench.runner import MIB
from ..costmodel import emulate
from ..costmodel.predict import predict
from ..costmodel.profile import load



@dataclass
class Row:
    """One compared quantity: the published value, mmemu's (work or predicted time), ratio."""
    quantity: str
    unit: str
    published: Optional[float]
    mmemu: float
    work: str = ""

    @property
    def ratio(self) -> Optional[float]:
        return self.mmemu / self.published if self.published else None


@dataclass
class Figure:
    name: str
    title: str
    source: str
    rows: List[Row]
    series: Dict[str, dict] = field(default_factory=dict)   # for the plot: label -> {x, y, ...}
    xlabel: str = ""
    ylabel: str = ""

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.title}", f"  published: {self.source}",
                 f"  {'quantity':<48}{'published':>14}{'mmemu':>14}{'ratio':>8}  emulated work"]
        for r in self.rows:
            pub = "-" if r.published is None else f"{r.published:.4g} {r.unit}"
            rat = "-" if r.ratio is None else f"{r.ratio:.2f}"
            lines.append(f"  {r.quantity:<48}{pub:>14}{f'{r.mmemu:.4g} {r.unit}':>14}{rat:>8}  {r.work}")
        return "\n".join(lines)


def _work(c: dict, keys=("fork_ptes_copied", "fork_pte_tables_copied", "cow_pte_tables_shared",
                         "cow_fault", "cow_pte_tables_duplicated", "cow_pte_entries_copied")) -> str:
    return ", ".join(f"{k}={c[k]}" for k in keys if c.get(k))


def seed_meminfo(profile) -> Figure:
    """RFC v1's /proc/meminfo table at 1 GB (PageTables after fork - before), with the
    child's VmPTE of the later cover letters, and the predicted fork time of each column."""
    from ..forktable import SEED_DELTA, run
    rows = []
    for design, pub, vmpte in (("classic", "classic", 2096), ("deferred", "cow", 44)):
        r = run(design, 1 << 30, 32 << 30, "typical", False, False, 1)
        work = {"forks": 1, **r["work"]}
        rows += [Row(f"{design}: PageTables delta", "kB", SEED_DELTA[pub]["PageTables"],
                     r["delta"]["PageTables"], _work(work)),
                 Row(f"{design}: child VmPTE (v2-v5 letters)", "kB", vmpte, r["child"]["VmPTE"]),
                 Row(f"{design}: predicted kernel fork", "ms", None,
                     predict(work, profile).seconds * 1e3)]
    series = {"published": {"x": ["classic", "COW PTE"], "y": [SEED_DELTA["classic"]["PageTables"],
                                                               SEED_DELTA["cow"]["PageTables"]]},
              "mmemu": {"x": ["classic", "COW PTE"], "y": [rows[0].mmemu, rows[3].mmemu]}}
    return Figure("seed-meminfo", "PageTables growth at fork of a 1 GB process (RFC v1)",
                  "RFC v1 cover letter, May 2022: +2076 kB classic, +92 kB COW PTE", rows,
                  series, "design", "PageTables delta (kB)")


def v2_fork_latency(profile) -> Figure:
    """RFC v2's fork latency over 0-512 MB: classic rising to about 10 ms, COW page tables
    flat at about 0.625 ms after 200 MB."""
    sizes = [s * MIB for s in (4, 32, 64, 128, 192, 256, 320, 384, 448, 512)]
    series = {}
    for design, label in (("classic", "classic"), ("deferred", "COW PTE")):
        ys = [predict(emulate.fork_then_write(s, design, write=False)["fork"], profile).seconds * 1e3
              for s in sizes]
        series[f"{label} (predicted)"] = {"x": sizes, "y": ys}
    cl, cw = series["classic (predicted)"]["y"], series["COW PTE (predicted)"]["y"]
    series["classic (RFC v2)"] = {"x": [512 * MIB], "y": [10.0], "marker": True}
    series["COW PTE (RFC v2)"] = {"x": [256 * MIB, 512 * MIB], "y": [0.625, 0.625], "marker": True}
    w512 = emulate.fork_then_write(512 * MIB, "classic", write=False)["fork"]
    rows = [Row("classic fork at 512 MB", "ms", 10.0, cl[-1], _work(w512)),
            Row("COW PTE fork at 512 MB", "ms", 0.625, cw[-1]),
            Row("COW PTE fork 512 MB / 256 MB (flat: 1)", "x", 1.0, cw[-1] / cw[5]),
            Row("classic / COW PTE at 512 MB", "x", 10.0 / 0.625, cl[-1] / cw[-1])]
    return Figure("v2-fork-latency", "fork latency against size, classic and COW PTE (RFC v2)",
                  "RFC v2 (6.0-rc5, QEMU): classic to about 10 ms at 512 MB, COW PTE about "
                  "0.625 ms flat after 200 MB (-93% at 512 MB)", rows, series, "size", "fork (ms)")


def _random_pages(n_writes: int, pages: int, seed: int = 0) -> np.ndarray:
    """The distinct pages hit by n_writes uniform random writes (only first writes fault)."""
    return np.unique(np.random.default_rng(seed).integers(0, pages, n_writes))


def _fault_latency(design: str, size: int, random_writes: int, profile):
    """Predicted time per write of the child's writes after fork, and the write counters."""
    from ..bench.scenarios import PRIV, RW, machine_for
    accounting, cow = emulate.DESIGNS[design]
    m = machine_for(size, accounting)
    p = m.spawn()
    a = p.mmap(0, size, RW, PRIV)
    p.touch(a, size, write=True)
    child = p.fork(cow_pgtable=cow)
    v0 = m.vmstat()
    if random_writes:
        for pg in _random_pages(random_writes, size // 4096):
            child.touch(a + int(pg) * 4096, 4096, write=True)
        writes = random_writes
    else:
        child.touch(a, size, write=True)
        writes = size // 4096
    work = {k: v for k, v in (m.vmstat() - v0).items() if v and not k.startswith("nr_")}
    return predict(work, profile).seconds / writes * 1e3, work


def v2_fault_latency(profile) -> Figure:
    """RFC v2's per-fault latency after fork: a sequential 512 MB write (fork 0.000742 ms,
    COW 0.000045 ms per fault) and 1 million random writes (0.000028 vs 0.000027 ms)."""
    size, rows = 512 * MIB, []
    published = {("classic", 0): 0.000742, ("deferred", 0): 0.000045,
                 ("classic", 10 ** 6): 0.000028, ("deferred", 10 ** 6): 0.000027}
    series = {}
    for (design, rnd), pub in published.items():
        ms, work = _fault_latency(design, size, rnd, profile)
        what = "1M random writes" if rnd else "sequential 512 MB write"
        rows.append(Row(f"{design}: {what}, per write", "ms", pub, ms, _work(work)))
        series.setdefault(f"{design} (predicted)", {"x": [], "y": []})
        series[f"{design} (predicted)"]["x"].append(what)
        series[f"{design} (predicted)"]["y"].append(ms)
        series.setdefault(f"{design} (RFC v2)", {"x": [], "y": []})
        series[f"{design} (RFC v2)"]["x"].append(what)
        series[f"{design} (RFC v2)"]["y"].append(pub)
    return Figure("v2-fault-latency", "per-write latency in the child after fork of 512 MB (RFC v2)",
                  "RFC v2: sequential write per fault fork 0.000742 ms, COW 0.000045 ms; "
                  "1 million random writes 0.000028 / 0.000027 ms", rows, series, "",
                  "time per write (ms)")


FIGURES: Dict[str, Callable] = {
    "seed-meminfo": seed_meminfo,
    "v2-fork-latency": v2_fork_latency,
    "v2-fault-latency": v2_fault_latency,
}


def reproduce(names=None, profile=None) -> List[Figure]:
    """The figures named (all by default), predicted under `profile` (default profile)."""
    names = list(FIGURES) if not names else list(names)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    prof = load(profile)
    return [FIGURES[n](prof) for n in names]
