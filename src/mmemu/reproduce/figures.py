"""The registry of reproduced figures: NAME -> a function(profile) returning a Figure.
Designs: classic fork, COW page tables deferred / eager, and the series' published versions
(mmemu.profiles: odf, v2, v5 ...)."""
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
    skipped: str = ""                                       # why it could not run here

    def __str__(self) -> str:
        if self.skipped:
            return f"{self.name}: {self.title}\n  skipped: {self.skipped}"
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


LATENCY_SIZES = [s * MIB for s in (4, 32, 64, 128, 192, 256, 320, 384, 448, 512)]


def _fork_ms(size: int, design: str, profile) -> float:
    """Predicted kernel time (ms) of the measured fork of a bare process of `size` bytes."""
    return predict(emulate.fork_then_write(size, design, write=False)["fork"], profile).seconds * 1e3


def v2_fork_latency(profile) -> Figure:
    """RFC v2's fork latency over 0-512 MB: classic rising to about 10 ms, COW page tables
    flat at about 0.625 ms after 200 MB."""
    sizes = LATENCY_SIZES
    series = {}
    for design, label in (("classic", "classic"), ("deferred", "COW PTE")):
        series[f"{label} (predicted)"] = {"x": sizes, "y": [_fork_ms(s, design, profile) for s in sizes]}
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


def v5_fork_latency(profile) -> Figure:
    """v3-v5's fork latency: classic and COW PTE "both about 10 ms at 512 MB" (eager
    accounting: fork counts every entry of every shared table), over 0-512 MB."""
    sizes, series = LATENCY_SIZES, {}
    for design, label in (("classic", "classic"), ("v5", "COW PTE v5")):
        series[f"{label} (predicted)"] = {"x": sizes, "y": [_fork_ms(s, design, profile) for s in sizes]}
    series["COW PTE v5 (predicted)"]["dashed"] = True       # it lies on classic's line
    series["both (v3-v5 letters)"] = {"x": [512 * MIB], "y": [10.0], "marker": True}
    cl, v5 = series["classic (predicted)"]["y"], series["COW PTE v5 (predicted)"]["y"]
    w = emulate.fork_then_write(512 * MIB, "v5", write=False)["fork"]
    rows = [Row("classic fork at 512 MB", "ms", 10.0, cl[-1]),
            Row("COW PTE v5 fork at 512 MB", "ms", 10.0, v5[-1], _work(w, ("cow_pte_tables_shared",
                                                                           "fork_ptes_accounted"))),
            Row("v5 / classic at 512 MB (same: 1)", "x", 1.0, v5[-1] / cl[-1])]
    return Figure("v5-fork-latency", "fork latency against size, classic and COW PTE v5 (v3-v5)",
                  "v3, v4, v5 cover letters (QEMU): fork latency of classic and COW PTE both "
                  "about 10 ms at 512 MB", rows, series, "size", "fork (ms)")


def odf_65x(profile) -> Figure:
    """On-Demand-Fork (EuroSys'21): fork of a 1 GB process 65x faster than classic fork."""
    sizes = [s * MIB for s in (64, 256, 1024, 4096)]
    cl = [_fork_ms(s, "classic", profile) for s in sizes]
    odf = [_fork_ms(s, "odf", profile) for s in sizes]
    at = sizes.index(1024 * MIB)
    w = emulate.fork_then_write(1024 * MIB, "odf", write=False)["fork"]
    rows = [Row("classic fork at 1 GB", "ms", None, cl[at]),
            Row("On-Demand-Fork fork at 1 GB", "ms", None, odf[at], _work(w, ("cow_pte_tables_shared",))),
            Row("classic / On-Demand-Fork at 1 GB", "x", 65.0, cl[at] / odf[at])]
    series = {"classic / odf (predicted)": {"x": sizes, "y": [c / o for c, o in zip(cl, odf)]},
              "ODF paper": {"x": [1024 * MIB], "y": [65.0], "marker": True}}
    return Figure("odf-65x", "fork speed-up of On-Demand-Fork over classic fork",
                  "ODF paper (EuroSys'21, doi 10.1145/3447786.3456258): fork of a 1 GB process "
                  "65x faster", rows, series, "size", "classic fork / ODF fork (x)")


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


AFL_EXECS = 300          # executions recorded when no trace is given
# published execs/s, classic -> COW PTE (AFL in LLVM mode on SQLite, QEMU)
AFL_PUBLISHED = {"v2": (53.86, 503.67), "v5": (53.50, 52.15)}


def fork_server_rates(trace, results: dict, profile) -> dict:
    """Per design of a replayed fork-server trace: the predicted memory-management kernel
    time per execution (one execution = one fork of the server: its fork, its child's
    faults and exit), and the predicted executions per second with the rest of an
    execution (user time, the fuzzer's side, the recorder) held at what the recording
    measured: the time between the server's first and last fork / (forks - 1), minus
    classic's predicted time. {"exec_s", "rest_s", "designs": {d: {"mm_s", "execs_per_s"}}}."""
    from ..trace.cli import predicted
    from ..trace.events import FORK
    ts = trace.events["ts"][trace.events["kind"] == FORK].astype(np.int64)
    if len(ts) < 2:
        raise ValueError("the trace holds fewer than 2 forks of the fork server")
    out = {"exec_s": (ts[-1] - ts[0]) / 1e9 / (len(ts) - 1), "designs": {}}
    for d, r in results.items():
        out["designs"][d] = {"mm_s": predicted(r, profile)["total_s"] / r.forks}
    out["rest_s"] = max(0.0, out["exec_s"] - out["designs"]["classic"]["mm_s"])
    for v in out["designs"].values():
        v["execs_per_s"] = 1 / (out["rest_s"] + v["mm_s"])
    return out


def afl_sqlite(profile, trace=None) -> Figure:
    """AFL on SQLite, executions per second: RFC v2 9.3x over classic (53.86 to 503.67),
    v3-v5 1.03x (53.50 to 52.15); from an AFL++ fork-server trace (`trace`: a file, or None
    to record AFL_EXECS executions here) replayed under classic, v2 and v5."""
    from ..trace import load as load_trace
    from ..trace.replay import replay
    name, title = "afl-sqlite", "AFL++ on SQLite: executions per second, classic vs COW PTE"
    source = ("RFC v2: 53.86 -> 503.67 execs/s (9.3x); v3-v5: 53.50 -> 52.15 (TriforceAFL "
              "102.30 -> 105.54, 1.03x)")
    if trace is None:
        import tempfile
        from .afl import Unavailable, record_afl
        with tempfile.TemporaryDirectory(prefix="mmemu-reproduce-") as d:
            try:
                record_afl(f"{d}/afl.mmt", AFL_EXECS)
            except Unavailable as e:
                return Figure(name, title, source, [], skipped=str(e))
            t = load_trace(f"{d}/afl.mmt")
    else:
        t = load_trace(trace)
    results = replay(t, ("classic", "v2", "v5"))
    rates = fork_server_rates(t, results, profile)
    d = rates["designs"]
    rows = [Row("time per execution, recorded (classic)", "ms", None, rates["exec_s"] * 1e3),
            *(Row(f"{k}: predicted mm kernel time per execution", "ms", None, d[k]["mm_s"] * 1e3,
                  _work(results[k].vmstat, ("fork_ptes_copied", "fork_pte_tables_copied",
                                            "cow_pte_tables_shared", "cow_pte_tables_duplicated",
                                            "cow_pte_entries_copied", "fork_ptes_accounted", "cow_fault")))
              for k in ("classic", "v2", "v5"))]
    for v, (pub_c, pub_v) in AFL_PUBLISHED.items():
        rows += [Row(f"{v} / classic execs/s", "x", pub_v / pub_c,
                     d[v]["execs_per_s"] / d["classic"]["execs_per_s"]),
                 Row(f"{v} / classic, if an execution were its mm work", "x", pub_v / pub_c,
                     d["classic"]["mm_s"] / d[v]["mm_s"])]
    series = {"published": {"x": ["RFC v2 / classic", "v5 / classic"],
                            "y": [pub_v / pub_c for pub_c, pub_v in AFL_PUBLISHED.values()]},
              "mmemu (predicted)": {"x": ["RFC v2 / classic", "v5 / classic"],
                                    "y": [d[v]["execs_per_s"] / d["classic"]["execs_per_s"]
                                          for v in AFL_PUBLISHED]}}
    return Figure(name, title, source + f"; mmemu: a trace of {len(t.events)} events, "
                  f"{results['classic'].forks} executions", rows, series, "",
                  "execs/s, COW PTE / classic (x)")


FIGURES: Dict[str, Callable] = {
    "seed-meminfo": seed_meminfo,
    "v2-fork-latency": v2_fork_latency,
    "v2-fault-latency": v2_fault_latency,
    "v5-fork-latency": v5_fork_latency,
    "odf-65x": odf_65x,
    "afl-sqlite": afl_sqlite,
}
TRACED = ("afl-sqlite",)         # figures that replay a trace (reproduce's `trace`)


def reproduce(names=None, profile=None, trace=None) -> List[Figure]:
    """The figures named (all by default), predicted under `profile` (default profile);
    `trace`: a recorded trace file for the figures replaying one (afl-sqlite)."""
    names = list(FIGURES) if not names else list(names)
    unknown = [n for n in names if n not in FIGURES]
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    prof = load(profile)
    return [FIGURES[n](prof, trace=trace) if n in TRACED else FIGURES[n](prof) for n in names]
