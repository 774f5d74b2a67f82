"""One cell of a sweep, run in mmemu: its work counters, emulated time and predicted kernel
time, as one flat row (a failed cell is a row with its error)."""
from __future__ import annotations

import time

from ..costmodel import emulate
from ..costmodel.predict import predict


def run_cell(cell, profile) -> dict:
    """The row of one cell: identity, then counters, times and /proc numbers, or `error`."""
    row = {"key": cell.key, "design": cell.design, "size": cell.size, "workload": cell.workload,
           "stride": cell.stride, "version": cell.version, "commit": cell.commit, "error": None}
    t0 = time.perf_counter()
    try:
        em = emulate.fork_then_write(cell.size, cell.design, write=cell.workload == "fork_write",
                                     stride=cell.stride, exit_child=cell.workload == "fork_exit")
    except (ValueError, OSError, MemoryError) as e:
        row["error"] = f"{type(e).__name__}: {e}"
        return row
    work = emulate.add(em["fork"], em["write"], em["exit"])
    row.update({f"n_{k}": int(v) for k, v in sorted(work.items())})
    row.update({
        "emulated_s": em["fork_s"] + em["write_s"] + em["exit_s"],
        "emulated_fork_s": em["fork_s"],
        "predicted_s": predict(work, profile).seconds,
        "predicted_fork_s": predict(em["fork"], profile).seconds,
        "PageTables_kB": em["meminfo"]["PageTables"],
        "child_VmPTE_kB": em["child"]["VmPTE"],
        "cell_s": time.perf_counter() - t0,
    })
    return row


def run_batch(cells, profile) -> list:
    """A Dask task: several cells one after the other (task overhead stays small)."""
    return [run_cell(c, profile) for c in cells]
