"""Sweeps: a grid of designs x sizes x workloads run as Dask tasks (a LocalCluster of worker
processes by default, or an existing scheduler), one tidy pandas table saved as Parquet.

- ``grid``: the configuration, the cells and their content keys
- ``cells``: one cell's work in mmemu, counters and emulated / predicted time (no Dask)
- ``run``: batching, the cluster, resuming and failed cells (needs the ``sweep`` extra)
- ``plot``: the figures from the table (needs matplotlib)
"""
from .grid import Cell, load_config, make_cells

__all__ = ["Cell", "load_config", "make_cells"]
