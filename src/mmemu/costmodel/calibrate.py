"""`mmemu calibrate`: unit costs of kernel work measured on this machine's live kernel with
the stdlib helper process of `mmemu bench` (bench/kernel_helper.py), several sizes and
densities each, every point repeated; fitted by least squares on relative error.

The machine is shared (2 cores, several busy processes), so every time is the CPU time of
the helper process (process_time: the time it waited for a CPU is left out), every point is
measured in several passes over all points in a shuffled order (so a noisy minute does not
land on one operation or size) and is the MINIMUM of all its repeats (the least-disturbed
run: interference only ever adds time); the median is kept beside it in the profile.
Validation runs at sizes not used by any fit; the held-out forks are measured in the same
shuffled passes as the fitted ones."""
from __future__ import annotations

import os
import platform
import random
import statistics
import time

import numpy as np

from ..bench import kernel
from ..bench.report import meta as bench_meta
from ..bench.runner import GIB, MIB
from . import emulate
from .predict import predict
from .profile import Profile

# op -> (regressors, the unit each coefficient becomes (None: reported only))
FITS = {
    "fork": (("forks", "tables", "ptes"), ("fork_fixed", "fork_table", "fork_pte")),
    "first_touch": (("tables", "ptes"), ("pgtable_alloc", "anon_fault")),
    "zero_read": (("tables", "ptes"), (None, "zero_fault")),
    "mprotect": (("calls", "tables", "ptes"), (None, None, "mprotect_pte")),
    "munmap": (("calls", "tables", "ptes"), (None, "pgtable_free", "zap_pte")),
    "exit": (("exits", "tables", "ptes"), ("exit_fixed", "exit_table", "exit_pte")),
}
FIT_SIZES = (16 * MIB, 32 * MIB, 96 * MIB, 192 * MIB, 384 * MIB, 768 * MIB, 1536 * MIB)
STRIDES = (1, 16, 512)          # one page in every STRIDE written: PTEs vary apart from tables
HELD_OUT = (64 * MIB, 256 * MIB, GIB, 4 * GIB)
QUICK = {"sizes": (2 * MIB, 4 * MIB, 8 * MIB), "strides": (1, 512), "repeats": 3, "passes": 1,
         "held_out": (6 * MIB,), "cow_rounds": 3}
FULL = {"sizes": FIT_SIZES, "strides": STRIDES, "repeats": 5, "passes": 2, "held_out": HELD_OUT,
        "cow_rounds": 5}


def _points(specs, repeats, passes, progress) -> dict:
    """{(op, size, stride): point}: every spec measured `repeats` times in each of `passes`
    passes, each pass in its own shuffled order; min_s over all repeats."""
    times, info = {}, {}
    for n in range(passes):
        order = list(specs)
        random.Random(n).shuffle(order)
        for i, spec in enumerate(order):
            op, size, stride = spec
            progress(f"pass {n + 1}/{passes}, {i + 1}/{len(order)}: {op} {size >> 20}M stride {stride}")
            r = kernel.measure_op(op, size, repeats, stride)
            times.setdefault(spec, []).extend(r["cpu_times"])
            info[spec] = r
    return {spec: {"op": spec[0], "size": spec[1], "stride": spec[2], "ptes": info[spec]["ptes"],
                   "tables": info[spec]["tables"], "forks": 1, "exits": 1, "calls": 1,
                   "min_s": min(t), "median_s": statistics.median(t), "repeats": len(t),
                   "kernel": info[spec]["kernel"]} for spec, t in times.items()}


def fit(points, regressors, units) -> dict:
    """Non-negative least squares on relative error: y / y = sum(coef * x / y). A negative
    coefficient (noise) is fixed at 0 and the rest refitted. Adds fit_s and residual
    (fit / measured - 1) to each point."""
    y = np.array([p["min_s"] for p in points])
    x = np.array([[p[r] for r in regressors] for p in points], dtype=float)
    keep = list(range(len(regressors)))
    coef = np.zeros(len(regressors))
    while keep:
        a = x[:, keep] / y[:, None]
        c, *_ = np.linalg.lstsq(a, np.ones(len(y)), rcond=None)
        if (c >= 0).all():
            coef[keep] = c
            break
        keep.pop(int(np.argmin(c)))
    fitted = x @ coef
    for p, f in zip(points, fitted):
        p["fit_s"] = float(f)
        p["residual"] = float(f / p["min_s"] - 1)
    res = np.array([p["residual"] for p in points])
    return {"regressors": list(regressors), "units": list(units),
            "coef_s": [float(c) for c in coef],
            "rms_residual": float(np.sqrt(np.mean(res ** 2))),
            "max_residual": float(np.max(np.abs(res))), "points": points}


def _cow_points(sizes, rounds, progress):
    """Fork-then-write at the fit sizes: the child's COW faults, cold (round 0) and warm."""
    out = []
    for s in sizes:
        progress(f"cow {s >> 20}M")
        r = kernel.measure(s, rounds, cow=True)
        c = r["cow_cpu_s"]
        out.append({"size": s, "ptes": r["pages"], "cold_s": c[0], "warm_s": min(c[1:]),
                    "warm_median_s": statistics.median(c[1:])})
    return out


def _per_page(points, key):
    """Cost per page through the origin, on relative error: the mean of t / pages."""
    return float(np.mean([p[key] / p["ptes"] for p in points]))


# the helper's own layout: which of its fork / exit counters add to a point's regressors
LAYOUT_REGRESSORS = {"fork": {"tables": "fork_pte_tables_copied", "ptes": "fork_ptes_copied"},
                     "exit": {"tables": "pgtable_free", "ptes": "ptes_zapped"}}


def add_layout(points, layout) -> None:
    """Count the helper's own layout (emulate.helper_layout) in the fork and exit points'
    tables and PTEs: the region's stay as region_tables / region_ptes."""
    for p in points:
        regs = LAYOUT_REGRESSORS.get(p["op"])
        if regs is None:
            continue
        for r, counter in regs.items():
            p["region_" + r] = p[r]
            p[r] += layout[p["op"]].get(counter, 0)


def validate(units_profile: Profile, sizes, rounds, progress, forks=None, layout=None) -> list:
    """Classic fork and fork-then-write at held-out sizes: kernel measured (CPU time, min of
    rounds; fork-then-write over the warm rounds; the fork alone from `forks` {size: point}
    when given) against mmemu's counters, with the helper's own layout's fork (`layout`),
    priced by the profile."""
    rows = []
    forks = forks or {}
    own = (layout or {}).get("fork", {})
    for s in sizes:
        if not kernel.can_measure(s, True):
            rows.append({"size": s, "skipped": f"needs {2 * s >> 20} MiB, more than half of "
                                                f"MemAvailable ({kernel.mem_available() >> 20} MiB)"})
            continue
        progress(f"validate {s >> 20}M")
        k = kernel.measure(s, rounds, cow=True)
        em = emulate.fork_then_write(s, "classic", write=True)
        pf = predict(emulate.add(em["fork"], own), units_profile).seconds
        pw = predict(emulate.add(em["fork"], own, em["write"]), units_profile).seconds
        fork_m = min(k["fork_cpu_s"] + ([forks[s]["min_s"]] if s in forks else []))
        fw_m = min(f + c for f, c in zip(k["fork_cpu_s"][1:], k["cow_cpu_s"][1:]))
        rows.append({"size": s, "fork_measured_s": fork_m, "fork_predicted_s": pf,
                     "fork_error": pf / fork_m - 1, "fork_write_measured_s": fw_m,
                     "fork_write_predicted_s": pw, "fork_write_error": pw / fw_m - 1,
                     "emulated_fork_s": em["fork_s"], "emulated_write_s": em["write_s"]})
    return rows


def calibrate(quick: bool = False, progress=None, validate_sizes=None) -> Profile:
    """Measure, fit and validate; returns the Profile (meta holds fits and validation)."""
    plan = QUICK if quick else FULL
    progress = progress or (lambda label: None)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    fits, units = {}, {}
    sizes = plan["held_out"] if validate_sizes is None else validate_sizes
    held = [("fork", s, 1) for s in sizes if kernel.can_measure(s, False)]
    specs = [(op, s, st) for op in FITS for s in plan["sizes"] for st in plan["strides"]]
    progress("the helper's own layout")
    layout = emulate.helper_layout()
    measured = _points(specs + held, plan["repeats"], plan["passes"], progress)
    add_layout(measured.values(), layout)
    for op, (regs, names) in FITS.items():
        fits[op] = fit([measured[(o, s, st)] for o, s, st in specs if o == op], regs, names)
        for name, c in zip(names, fits[op]["coef_s"]):
            if name:
                units[name] = c
    cow = _cow_points(plan["sizes"], plan["cow_rounds"], progress)
    units["cow_fault_cold"] = _per_page(cow, "cold_s")
    units["cow_fault_warm"] = _per_page(cow, "warm_s")
    info = bench_meta(quick)
    doc = {"_doc": "Unit costs (seconds) of kernel work measured by `mmemu calibrate` on a live "
                   "kernel: each point is the minimum of its repeats (the machine is shared); "
                   "residual = fit / measured - 1.",
           "default": False, "measured": info["date"], "kernel": platform.release(),
           "cpu": info["cpu"], "cpus": info["cpus"], "python": info["python"],
           "statistic": f"minimum of {plan['repeats'] * plan['passes']} repeats of the CPU time in "
                        f"{plan['passes']} shuffled passes (median kept as median_s)",
           "loadavg_before": list(load0), "helper_layout": layout, "fits": fits, "cow": cow}
    prof = Profile("measured " + info["date"], units, doc)
    doc["validation"] = validate(prof, sizes, plan["cow_rounds"], progress,
                                 {s: measured[("fork", s, 1)] for _, s, _ in held}, layout)
    doc["loadavg_after"] = list(os.getloadavg())
    doc["seconds"] = time.perf_counter() - t0
    return prof
