"""Run a sweep on Dask: cells batched into tasks, a LocalCluster of worker processes unless
a scheduler address is given, a progress bar, each finished batch saved at once (so an
interrupted sweep resumes where it stopped), failed cells kept as rows with their error."""
from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .cells import run_batch
from .grid import make_cells


def dask_modules():
    """(pandas, Client, LocalCluster, as_completed); ValueError naming the extra if absent."""
    try:
        import pandas as pd
        from distributed import Client, LocalCluster, as_completed
        import pyarrow  # noqa: F401  (Parquet)
    except ImportError as e:
        raise ValueError(f"sweeps need the sweep extra (pip install 'mmemu[sweep]'): {e}") from None
    return pd, Client, LocalCluster, as_completed


@dataclass
class SweepResult:
    """The table (one row per cell), and how many cells ran now, were reused, failed."""
    table: object
    computed: int
    reused: int
    failed: int
    seconds: float


def _parts(output: Path) -> Path:
    return output.with_name(output.name + ".parts")


def _done_rows(pd, output):
    """Rows saved by earlier runs (the table and the parts of an interrupted run)."""
    frames = []
    if output is not None:
        if output.exists():
            frames.append(pd.read_parquet(output))
        if _parts(output).is_dir():
            frames += [pd.read_parquet(p) for p in sorted(_parts(output).glob("*.parquet"))]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True).drop_duplicates("key", keep="last")
    return df[df["error"].isna()]


def _table(pd, rows):
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c.startswith("n_"):
            df[c] = df[c].astype("Int64")
    return df


def batches(cells, workers: int, batch=None) -> list:
    """Cells dealt into tasks: `batch` cells a task, or by default about four tasks per
    worker; the largest cells are dealt first, round-robin, so tasks weigh about the same."""
    if not cells:
        return []
    n = math.ceil(len(cells) / batch) if batch else min(len(cells), 4 * max(1, workers))
    order = sorted(cells, key=lambda c: -c.size)
    return [b for b in (order[i::n] for i in range(n)) if b]


def _bar(enabled):
    tty = sys.stderr.isatty()

    def show(done, total):
        if not enabled or (not tty and done < total):
            return
        fill = 30 * done // total if total else 30
        line = f"sweep [{'#' * fill}{'.' * (30 - fill)}] {done}/{total} cells"
        sys.stderr.write(("\r\033[K" if tty else "") + line + ("\n" if done >= total else ""))
        sys.stderr.flush()
    return show


def sweep(config: dict, output=None, scheduler=None, workers: int = 2, profile=None,
          progress: bool = True, batch=None, on_batch=None) -> SweepResult:
    """Run the grid of `config` (see grid.make_cells) and return its table; with `output`
    (a .parquet path) done cells are skipped and the table is saved. `scheduler`: the address
    of an existing Dask scheduler (default: a LocalCluster of `workers` processes).
    `on_batch(rows)` is called after each finished batch."""
    from ..costmodel.profile import load
    pd, Client, LocalCluster, as_completed = dask_modules()
    t0 = time.perf_counter()
    prof = load(profile or config.get("profile"))
    output = Path(output) if output is not None else None
    cells = make_cells(config)
    done = _done_rows(pd, output)
    done_keys = set(done["key"]) if len(done) else set()
    todo = [c for c in cells if c.key not in done_keys]
    rows, show = [], _bar(progress)
    if todo:
        if output is not None:
            _parts(output).mkdir(parents=True, exist_ok=True)
        cluster = None
        if scheduler is None:
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
        client = Client(scheduler or cluster)
        try:
            nworkers = len(client.scheduler_info()["workers"]) or workers
            tasks = batches(todo, nworkers, batch or config.get("batch"))
            futures = {client.submit(run_batch, b, prof, pure=False): b for b in tasks}
            show(0, len(todo))
            for fut in as_completed(futures):
                try:
                    got = fut.result()
                except Exception as e:          # the task as a whole (a worker died): its cells
                    got = [{"key": c.key, "design": c.design, "size": c.size, "workload": c.workload,
                            "stride": c.stride, "version": c.version, "commit": c.commit,
                            "error": f"{type(e).__name__}: {e}"} for c in futures[fut]]
                rows += got
                if output is not None:
                    name = hashlib.sha256("".join(r["key"] for r in got).encode()).hexdigest()[:16]
                    _table(pd, got).to_parquet(_parts(output) / f"{name}.parquet")
                show(len(rows), len(todo))
                if on_batch:
                    on_batch(got)
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    new = _table(pd, rows)
    table = pd.concat([done, new], ignore_index=True) if len(done) else new
    if len(table):
        table = table.drop_duplicates("key", keep="last").sort_values(
            ["design", "size", "workload", "stride"]).reset_index(drop=True)
    for c in table.columns:
        if c.startswith("n_"):
            table[c] = table[c].astype("Int64")
    if output is not None:
        table.to_parquet(output)
        shutil.rmtree(_parts(output), ignore_errors=True)
    failed = int(new["error"].notna().sum()) if len(new) else 0
    return SweepResult(table, len(rows), len(cells) - len(todo), failed, time.perf_counter() - t0)
