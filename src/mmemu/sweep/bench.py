"""The sweep in `mmemu bench`: a CPU-bound grid run serially in this process and then on a
LocalCluster of 2 worker processes (started and warmed up before the clock starts), in the
same run; the ratio parallel / serial (target <= 1/1.6)."""
from __future__ import annotations

import time

# one page in four written, page by page: interpreter and emulator work, little host memory
GRID = {"designs": ["classic", "deferred", "eager"], "sizes": ["128M", "256M", "384M", "512M"],
        "workloads": [{"name": "fork_write", "stride": 4}]}


def speedup(workers: int = 2, grid=None) -> dict:
    """{"serial_s", "parallel_s", "ratio", "cells"}; ValueError without the sweep extra."""
    from ..costmodel.profile import load
    from .cells import run_batch
    from .grid import make_cells
    from .run import dask_modules, sweep
    _, Client, LocalCluster, _ = dask_modules()
    grid = grid or GRID
    prof = load()
    cells = make_cells(grid)
    t0 = time.perf_counter()
    run_batch(cells, prof)
    serial = time.perf_counter() - t0
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        client.run(lambda: __import__("mmemu.sweep.cells"))          # import on every worker
        t0 = time.perf_counter()
        res = sweep(grid, scheduler=cluster.scheduler_address, profile=prof, progress=False)
        parallel = time.perf_counter() - t0
    if res.failed:
        raise RuntimeError(f"{res.failed} cells of the bench grid failed")
    return {"serial_s": serial, "parallel_s": parallel, "ratio": parallel / serial,
            "cells": len(cells), "workers": workers}


def report() -> str:
    """The bench's lines: the grid's times and the speedup against its target."""
    try:
        r = speedup()
    except ValueError as e:
        return f"\nsweep on 2 workers: not measured ({e})"
    met = "met" if r["ratio"] <= 1 / 1.6 else "MISSED"
    return (f"\nsweep: {r['cells']} CPU-bound cells serially {r['serial_s']:.2f} s, on a LocalCluster "
            f"of {r['workers']} workers {r['parallel_s']:.2f} s: x{1 / r['ratio']:.2f}\n"
            f"  {met:<7}a sweep on 2 workers >= 1.6x faster than serially (ratio {r['ratio']:.3g}, "
            f"limit {1 / 1.6:.3g})")
