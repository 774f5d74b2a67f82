"""The ``workloads`` mark: the real workloads of benchmarks/workloads (Redis, AFL++, a
multiprocessing pool) run for minutes and install packages; the default run deselects
them. Run them with ``pytest -m workloads`` (or MMEMU_WORKLOADS=1)."""
import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "workloads: a long real workload (deselected unless "
                                       "-m workloads or MMEMU_WORKLOADS=1)")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("MMEMU_WORKLOADS") or "workloads" in (config.getoption("-m") or ""):
        return
    keep = [i for i in items if i.get_closest_marker("workloads") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
