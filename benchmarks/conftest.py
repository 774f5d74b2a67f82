"""pytest-benchmark suites, grouped by hot path, over the scenarios of mmemu.bench.

Run with ``python -m pytest benchmarks``. pytest-benchmark times each scenario's ``op``
(``benchmark.pedantic(s.op, setup=s.setup)``), and every test also measures its baselines
in the same run -- the real kernel (a helper process), a numpy lower bound, the reference
model -- and records mmemu / baseline in ``extra_info``: the ratio, not an absolute time,
is what is tracked, because these machines are shared and noisy. ``mmemu bench`` runs the
same scenarios without pytest and prints one table.
"""
import statistics

import pytest

from mmemu.bench import kernel, lower_bound
from mmemu.bench.scenarios import SCENARIOS

MIB, GIB = 1 << 20, 1 << 30


def run_scenario(benchmark, op, size, design=None, rounds=5, warmup=1):
    """Time one scenario with pytest-benchmark; returns (scenario, median seconds)."""
    if benchmark.disabled:
        pytest.skip("timing benchmark: run with benchmarks enabled")
    cls = SCENARIOS[op]
    s = cls(size, design) if design else cls(size)
    benchmark.pedantic(s.op, setup=s.setup, rounds=rounds, warmup_rounds=warmup)
    s.finish()
    median = benchmark.stats.stats.median
    benchmark.extra_info["median_ms"] = round(median * 1e3, 4)
    return s, median


def record_ratio(benchmark, name, mine, baseline):
    r = mine / baseline
    benchmark.extra_info[name] = round(r, 5)
    return r


_kernel_cache = {}


def kernel_baseline(size, cow=True, rounds=5):
    """The kernel helper's result for size (measured once per session), or skip."""
    key = (size, cow)
    if key not in _kernel_cache:
        if not kernel.can_measure(size, cow):
            pytest.skip(f"not enough free host memory for the kernel baseline at {size >> 20} MiB")
        _kernel_cache[key] = kernel.measure(size, rounds, cow)
    return _kernel_cache[key]


def median(xs):
    return statistics.median(xs)


def numpy_bound(op, size, rounds=10):
    return median(lower_bound.LOWER_BOUNDS[op](size, rounds))
