"""Ratios, targets and the text table of a benchmark run.

Every ratio is mmemu's median over a baseline's median measured in the same run (lower is
better), except the reference model's, printed as a speedup (reference / mmemu).
"""
from __future__ import annotations

import os
import platform
import statistics
import textwrap
import time

from .runner import size_name

LABELS = {
    "fork": "fork {design}",
    "touch": "first-touch write faults",
    "zero_read": "zero-page read faults",
    "cow_data": "COW breaks with data",
    "fork_write": "fork, child writes every page, {design}",
    "break_cow_pte": "break_cow_pte, one write per 2 MiB, {design}",
    "cow_rewrite": "a second write per 2 MiB after the breaks, {design}",
    "munmap": "munmap",
    "exit": "exit",
    "read": "read (page-table walks + copy)",
    "two_machines": "2 machines on 2 threads (fork+COW+DONTNEED)",
    "thp_touch": "first touch with THP (MADV_HUGEPAGE)",
    "thp_fork": "fork of THP-backed memory {design}",
    "thp_split": "split every huge PMD (mprotect 1 page)",
}
# THP scenarios: the kernel helper's field each is compared with (kernel.thp.SIZE)
THP_KERNEL_FIELD = {"thp_touch": "touch_s", "thp_fork": "median_s", "thp_split": "split_s"}
LOWER_BOUND_OF = {"fork": "fork", "touch": "touch", "zero_read": "touch", "cow_data": "cow_data",
                  "munmap": "munmap", "exit": "munmap", "read": "read", "break_cow_pte": "fork"}


def fmt_time(s) -> str:
    if s is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if s >= scale or unit == "ns":
            v = s / scale
            return f"{v:.3g} {unit}" if v < 1000 else f"{v:.0f} {unit}"


def fmt_ratio(r) -> str:
    """Every ratio one way: mmemu / baseline as a decimal, 3 significant digits."""
    if r is None:
        return "-"
    return f"{r:.3g}"


def spread(times) -> str:
    """The interquartile range of a scenario's rounds ("-" below 4 rounds)."""
    if not times or len(times) < 4:
        return "-"
    q = statistics.quantiles(times, n=4, method="inclusive")
    return fmt_time(q[2] - q[0])


def _get(results, key, field="median_s"):
    r = results.get(key)
    if not r or "skipped" in r:
        return None
    return r.get(field)


def _div(a, b):
    return a / b if a is not None and b else None


def ratios(results: dict) -> dict:
    """Every same-run ratio this run can form: {name: mmemu / baseline}."""
    out = {}
    for key, r in results.items():
        if r.get("kind") != "mmemu" or "skipped" in r:
            continue
        s = size_name(r["size"])
        op, design = r["op"], r["design"]
        tag = f"{op}.{design}.{s}" if design else f"{op}.{s}"
        if op == "fork":
            out[f"{tag}/kernel.fork"] = _div(r["median_s"], _get(results, f"kernel.fork.{s}"))
            out[f"{tag}/numpy.fork"] = _div(r["median_s"], _get(results, f"numpy.fork.{s}"))
            out[f"{tag}/reference.fork"] = _div(r["median_s"], _get(results, f"reference.fork.{s}"))
        elif op == "cow_data":
            out[f"{tag}.warm/kernel.cow.warm"] = _div(r["warm_s"], _get(results, f"kernel.fork.{s}", "cow_warm_s"))
            out[f"{tag}.cold/kernel.cow.cold"] = _div(r["cold_s"], _get(results, f"kernel.fork.{s}", "cow_cold_s"))
            out[f"{tag}.warm/numpy.cow_data"] = _div(r["warm_s"], _get(results, f"numpy.cow_data.{s}"))
            out[f"{tag}.cold/host.first_touch"] = _div(r["cold_s"], _get(results, f"numpy.first_touch.{s}"))
        elif op in THP_KERNEL_FIELD:
            out[f"{op}.{s}/kernel.{op}"] = _div(r["median_s"], _get(results, f"kernel.thp.{s}",
                                                                   THP_KERNEL_FIELD[op]))
        elif op == "fork_write":
            out[f"{tag}/reference.fork_write"] = _div(r["median_s"], _get(results, f"reference.fork_write.{s}"))
        elif op == "two_machines":      # in parallel / one after the other, in one process
            out[f"{tag}/{tag}.serial"] = _div(r["median_s"], r["serial_s"])
            ceiling = results.get(f"numpy.two_machines.{s}")
            if ceiling and "skipped" not in ceiling:
                out[f"numpy.two_machines.{s}/numpy.two_machines.{s}.serial"] = _div(
                    ceiling["median_s"], ceiling["serial_s"])
        if op in LOWER_BOUND_OF and op not in ("fork", "cow_data"):
            lb = LOWER_BOUND_OF[op]
            out[f"{tag}/numpy.{lb}"] = _div(r["median_s"], _get(results, f"numpy.{lb}.{s}"))
        if r.get("must_hold"):
            out[f"{tag}.host/must_hold"] = r["host_peak"] / r["must_hold"]
    for num, den in UPPER_RATIOS:       # whole-table COW against PTE tables, same run
        out[f"{num}/{den}"] = _div(_get(results, num), _get(results, den))
    for key, r in results.items():          # mmemu record / replay
        if r.get("kind") != "trace" or "skipped" in r:
            continue
        if r["op"] in ("record", "record_redis"):
            out[f"{key}/plain"] = _div(r["median_s"], r["plain_s"])
        elif r["op"] == "replay":
            s = size_name(r["size"])
            out[f"{key}/trace.direct.{r['design']}.{s}"] = _div(
                r["median_s"], _get(results, f"trace.direct.{r['design']}.{s}"))
    return {k: v for k, v in out.items() if v is not None}


# the whole-table COW targets: PMD-level fork against PTE-level, PUD-level fork at
# two sizes, and the writes that follow (the first one per table, then the next)
UPPER_RATIOS = [("fork.cow-pmd-deferred.16G", "fork.deferred.16G"),
                ("fork.cow-pud-deferred.16G", "fork.cow-pud-deferred.1G"),
                ("break_cow_pte.cow-pmd-deferred.1G", "break_cow_pte.deferred.1G"),
                ("cow_rewrite.cow-pmd-deferred.1G", "cow_rewrite.deferred.1G")]


def targets(results: dict, rs: dict) -> list:
    """The issue's targets, at 1 GiB / 16 GiB when measured (64 MiB in a quick run)."""
    s = "1G" if "fork.classic.1G" in results else "64M"
    big = "16G" if "fork.classic.16G" in results else s
    one, sixteen = (s, "1G"), (big, "16G")     # (measured at, defined at)
    rows = [
        (f"classic fork {s} <= 1/10 of the kernel's fork", rs.get(f"fork.classic.{s}/kernel.fork"), 0.1, one),
        (f"classic fork {s} <= 3x the numpy lower bound", rs.get(f"fork.classic.{s}/numpy.fork"), 3.0, one),
        (f"COW page-table fork (deferred) {s} <= 1/300 of the kernel's fork",
         rs.get(f"fork.deferred.{s}/kernel.fork"), 1 / 300, one),
        (f"COW fault with 4 KiB copy {s}, warm <= 1/10 of the kernel's",
         rs.get(f"cow_data.{s}.warm/kernel.cow.warm"), 0.1, one),
        (f"COW fault with 4 KiB copy {s}, cold <= 1/10 of the kernel's",
         rs.get(f"cow_data.{s}.cold/kernel.cow.cold"), 0.1, one),
        (f"COW fault with 4 KiB copy {s}, warm <= 1.5x the host's copy of the same bytes",
         rs.get(f"cow_data.{s}.warm/numpy.cow_data"), 1.5, one),
        ("fork-then-write 64M >= 100x faster than the reference model",
         rs.get("fork_write.classic.64M/reference.fork_write"), 0.01, None),
        ("(fork alone, classic, 64M >= 100x faster than the reference model)",
         rs.get("fork.classic.64M/reference.fork"), 0.01, None),
        (f"classic fork of {big} < 0.5 s (seconds)", _get(results, f"fork.classic.{big}"), 0.5, sixteen),
        ("fork of 1G of THP-backed memory <= 1/10 of the kernel's",
         rs.get("thp_fork.1G/kernel.thp_fork"), 0.1, None),
        ("first touch of 1G with THP <= 1/10 of the kernel's", rs.get("thp_touch.1G/kernel.thp_touch"),
         0.1, None),
        ("two machines on two threads >= 1.6x faster than one after the other",
         rs.get("two_machines.64M/two_machines.64M.serial"), 1 / 1.6, None),
        ("(host ceiling: numpy, the same data movement, two threads)",
         rs.get("numpy.two_machines.64M/numpy.two_machines.64M.serial"), 1 / 1.6, None),
    ]
    for (num, den), text, lim in zip(UPPER_RATIOS, [
            "COW PMD fork (deferred) 16G <= 1/10 of a COW PTE fork",
            "COW PUD fork (deferred) does not grow: 16G <= 1.5x its 1G fork",
            "first write per table after a COW PMD fork <= 2x after a COW PTE fork",
            "later writes after a COW PMD fork <= 1.25x after a COW PTE fork"], [0.1, 1.5, 2.0, 1.25]):
        if f"{num}/{den}" in rs:
            rows.append((text, rs[f"{num}/{den}"], lim, None))
    for key, r in results.items():
        if r.get("kind") == "trace" and r["op"] == "replay" and "skipped" not in r:
            d, z = r["design"], size_name(r["size"])
            rows.append((f"replay {d} {z}: >= 1 million events/s (seconds per million events)",
                         r["median_s"] / r["pages"] * 1e6, 1.0, None))
            rows.append((f"replay {d} {z} <= 2x the same faults through the API",
                         rs.get(f"{key}/trace.direct.{d}.{z}"), 2.0, None))
    rec = next((k for k in results if k.startswith("trace.record.")), None)
    if rec:
        rows.append(("recording a fault-heavy program: <= 1.5x its plain run time",
                     rs.get(f"{rec}/plain"), 1.5, None))
    for key in results:
        if key.startswith("trace.record_redis."):
            rows.append(("Redis under recording keeps >= 95% of its throughput "
                         "(plain / recorded requests per second)",
                         rs.get(f"{key}/plain"), round(1 / 0.95, 3), None))
    if big != "64M":    # at 64 MiB one 2 MiB host huge page of tables outweighs what they hold
        rows.append((f"host memory of classic fork {big} <= 1.3x page tables + metadata",
                     rs.get(f"fork.classic.{big}.host/must_hold"), 1.3, None))
    out = []
    for t, v, lim, size in rows:
        row = {"target": t, "value": v, "limit": lim, "met": None if v is None else v <= lim}
        if size is not None and size[0] != size[1]:     # a quick run measures 64M only
            row["met"] = None
            row["note"] = f"n/a at {size[0][:-1]} {size[0][-1]}iB"
        out.append(row)
    return out


def meta(quick: bool) -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    import numpy
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "quick": quick,
            "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "python": platform.python_version(), "numpy": numpy.__version__}


def _row_label(r):
    return LABELS[r["op"]].format(design=r["design"] or "")


def table(results: dict, rs: dict, tg: list, info: dict) -> str:
    w = [44, 5, 10, 7, 10, 12, 19, 19, 13, 8, 8, 6]
    head = ["operation", "size", "mmemu", "rounds", "IQR", "per page", "÷ kernel", "÷ lower bound",
            "÷ reference", "host MB", "hold MB", "ratio"]
    legend = ("medians of each scenario's rounds (IQR: their interquartile range, from 4 "
              "rounds); ÷ = mmemu / baseline measured in the same run "
              "(lower is better); lower bound = numpy doing the same data movement (for warm COW: "
              "the host's copy of the same bytes, np.copyto; for cold COW: the host's first "
              "touch of as much fresh memory; for 2 machines on 2 threads: the same work one "
              "after the other); ÷ reference = mmemu / the reference model (every "
              "ratio printed the same way: lower is better); host MB = peak RSS growth of the scenario's own process; hold MB = page "
              "tables + frame metadata (+ frame data) it must hold; ratio = host / hold")
    lines = [f"mmemu bench{' --quick' if info['quick'] else ''}: {info['date']}, Linux "
             f"{info['kernel']}, {info['cpus']} CPUs ({info['cpu']}), Python {info['python']}, "
             f"numpy {info['numpy']}",
             *textwrap.wrap(legend, 120),
             "",
             "".join(h.ljust(w[0]) if i == 0 else h.rjust(w[i]) for i, h in enumerate(head))]
    for key, r in results.items():
        if r.get("kind") != "mmemu":
            continue
        s = size_name(r["size"])
        if "skipped" in r:
            lines.append(f"{_row_label(r):<{w[0]}}{s:>{w[1]}}  skipped: {r['skipped']}")
            continue
        tag = f"{r['op']}.{r['design']}.{s}" if r["design"] else f"{r['op']}.{s}"
        variants = [("", r["median_s"])]
        if r["op"] == "cow_data":
            variants = [(", warm", r["warm_s"]), (", cold", r["cold_s"])]
        for suffix, t in variants:
            kern = numpy_ = ref = None
            kb = nb = None
            if r["op"] == "fork":
                kb, kern = _get(results, f"kernel.fork.{s}"), rs.get(f"{tag}/kernel.fork")
                nb, numpy_ = _get(results, f"numpy.fork.{s}"), rs.get(f"{tag}/numpy.fork")
            elif r["op"] == "cow_data":
                w_ = suffix.strip(", ")
                kb = _get(results, f"kernel.fork.{s}", f"cow_{w_}_s")
                kern = rs.get(f"{tag}.{w_}/kernel.cow.{w_}")
                if w_ == "warm":
                    nb, numpy_ = _get(results, f"numpy.cow_data.{s}"), rs.get(f"{tag}.warm/numpy.cow_data")
                else:   # cold: the host's first touch of as much fresh memory
                    nb, numpy_ = _get(results, f"numpy.first_touch.{s}"), rs.get(f"{tag}.cold/host.first_touch")
            elif r["op"] in THP_KERNEL_FIELD:
                kb = _get(results, f"kernel.thp.{s}", THP_KERNEL_FIELD[r["op"]])
                kern = rs.get(f"{r['op']}.{s}/kernel.{r['op']}")
            elif r["op"] == "two_machines":     # the baseline: the same work serially
                nb, numpy_ = r["serial_s"], rs.get(f"{tag}/{tag}.serial")
            elif r["op"] in LOWER_BOUND_OF:
                lb = LOWER_BOUND_OF[r["op"]]
                nb, numpy_ = _get(results, f"numpy.{lb}.{s}"), rs.get(f"{tag}/numpy.{lb}")
            if r["op"] in ("fork", "fork_write"):
                ref = fmt_ratio(rs.get(f"{tag}/reference.{r['op']}"))
            per_page = t / r["pages"] if r["op"] not in ("break_cow_pte", "cow_rewrite") else None
            rounds = r["times"][1:] if suffix == ", warm" else [t] if suffix == ", cold" else r["times"]
            cells = [
                _row_label(r) + suffix, s, fmt_time(t), str(len(rounds)), spread(rounds),
                fmt_time(per_page) if per_page else f"{fmt_time(t / r['pages'])}/tbl",
                f"{fmt_ratio(kern)} of {fmt_time(kb)}" if kern is not None else "-",
                f"{fmt_ratio(numpy_)} of {fmt_time(nb)}" if numpy_ is not None else "-",
                ref or "-",
                f"{r['host_peak'] / 2**20:.1f}", f"{r['must_hold'] / 2**20:.1f}",
                f"{r['host_peak'] / r['must_hold']:.2f}" if r["must_hold"] else "-",
            ]
            lines.append("".join(c.ljust(w[0]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(cells)))
    lines += ["", "baselines measured in this run:"]
    for key, r in results.items():
        if r.get("kind") == "mmemu":
            continue
        if "skipped" in r:
            lines.append(f"  {key:<28} skipped: {r['skipped']}")
            continue
        extra = ""
        if r["kind"] == "kernel" and r["op"] == "thp":
            extra = (f"THP: first touch {fmt_time(r['touch_s'])}, fork median "
                     f"{fmt_time(r['median_s'])}, split of every huge PMD {fmt_time(r['split_s'])} "
                     f"(AnonHugePages {r['AnonHugePages_kb']} kB)")
        elif r["kind"] == "kernel":
            extra = f"fork median {fmt_time(r['median_s'])}"
            if r.get("cow_s"):
                n = r["pages"]
                extra += (f"; child's COW faults per page: cold {fmt_time(r['cow_cold_s'] / n)}, "
                          f"warm {fmt_time(r['cow_warm_s'] / n)}")
            extra += f"; child VmPTE {r.get('child_VmPTE_kb')} kB (MADV_NOHUGEPAGE)"
        elif r["kind"] == "numpy" and r["op"] == "two_machines":
            extra = (f"one after the other {fmt_time(r['serial_s'])}, on two threads "
                     f"{fmt_time(r['median_s'])} (the host's ceiling: x{r['serial_s'] / r['median_s']:.2f})")
        elif r["kind"] == "reference":
            what = "fork alone" if r["op"] == "fork" else "fork + child writes every page"
            extra = f"{what}: {fmt_time(r['median_s'])} ({r['model']})"
        else:
            extra = f"{fmt_time(r['median_s'])}"
            if r["op"] == "cow_data":
                extra += f" (the host's copy of the same bytes, np.copyto: {fmt_time(r['median_s'] / r['pages'])} a page)"
        lines.append(f"  {key:<28} {extra}")
    lines += ["", "targets:"]
    for t in tg:
        v = t["value"]
        mark = t.get("note") or ("n/a" if t["met"] is None else ("met" if t["met"] else "MISSED"))
        shown = fmt_time(v) if "seconds" in t["target"] else fmt_ratio(v)
        lines.append(f"  {mark:<15}{t['target']:<78} measured {shown}  (limit {fmt_ratio(t['limit'])})")
    return "\n".join(lines)
