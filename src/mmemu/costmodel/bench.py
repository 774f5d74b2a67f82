"""The cost model in `mmemu bench`: for every size where the bench measured the kernel's
fork (and the child's COW faults), mmemu's counters for the same work priced by the default
profile, beside the kernel's time and the emulator's own. Tracked as error factors
max(predicted / measured, measured / predicted) (1 is perfect; lower is better)."""
from __future__ import annotations

from ..bench.report import fmt_time
from ..bench.runner import size_name
from . import emulate
from .predict import predict
from .profile import load


def predictions(results: dict, profile=None) -> list:
    """One row per kernel fork measurement of the run: measured (the helper's CPU time,
    minimum of its rounds; fork-then-write over the warm rounds), predicted, emulator time."""
    prof = load(profile)
    own = prof.meta.get("helper_layout", {}).get("fork", {})    # the helper's own fork work
    rows = []
    for key, r in results.items():
        if r.get("kind") != "kernel" or r.get("op") != "fork" or "skipped" in r:
            continue
        s, write = r["size"], bool(r.get("cow_s"))
        em = emulate.fork_then_write(s, "classic", write=write)
        row = {"size": s, "fork_measured_s": min(r["fork_cpu_s"]),
               "fork_predicted_s": predict(emulate.add(em["fork"], own), prof).seconds,
               "fork_emulated_s": em["fork_s"]}
        if write:
            row["fork_write_measured_s"] = min(
                f + c for f, c in zip(r["fork_cpu_s"][1:], r["cow_cpu_s"][1:]))
            row["fork_write_predicted_s"] = predict(emulate.add(em["fork"], own, em["write"]), prof).seconds
            row["fork_write_emulated_s"] = em["fork_s"] + em["write_s"]
        rows.append(row)
    return rows


def _factor(p, m):
    return max(p / m, m / p)


def ratios(rows: list) -> dict:
    out = {}
    for r in rows:
        s = size_name(r["size"])
        out[f"kernel.fork.{s}.predicted/kernel.fork.{s}"] = _factor(r["fork_predicted_s"], r["fork_measured_s"])
        if "fork_write_measured_s" in r:
            out[f"kernel.fork_write.{s}.predicted/kernel.fork_write.{s}"] = _factor(
                r["fork_write_predicted_s"], r["fork_write_measured_s"])
    return out


def lines(rows: list, profile=None) -> list:
    """The text block printed after the bench table."""
    out = ["", f"predicted kernel time (cost profile: {load(profile).name}; measured = minimum "
               "of the kernel's rounds, CPU time; error = predicted / measured - 1):"]
    for r in rows:
        s = size_name(r["size"])
        for what, k in (("classic fork", "fork"), ("fork + child writes every page", "fork_write")):
            if f"{k}_measured_s" not in r:
                continue
            p, m = r[f"{k}_predicted_s"], r[f"{k}_measured_s"]
            out.append(f"  {what + ' ' + s:<40} kernel {fmt_time(m):>9}  predicted {fmt_time(p):>9} "
                       f"({p / m - 1:+.1%})  mmemu {fmt_time(r[f'{k}_emulated_s']):>9}")
    return out
