"""`mmemu bench`'s Redis-under-recording scenario (trace.record_redis): redis-server
recorded from its start by mmemu record while redis-benchmark loads it, alternated with
plain runs. Skipped, with the reason, without redis-server/redis-benchmark or tracefs
(benchmarks/workloads/redis.py installs them)."""
import shutil
import statistics

import pytest

from mmemu.bench.runner import kernel_skip
from mmemu.trace.bench import record_redis_overhead

pytestmark = pytest.mark.one_design


def test_redis_throughput_plain_and_recorded():
    if not all(shutil.which(c) for c in ("redis-server", "redis-benchmark", "redis-cli")):
        pytest.skip("redis-server/redis-benchmark not installed (apt-get install redis-server)")
    try:
        r = record_redis_overhead(rounds=2, requests=20000)
    except kernel_skip as e:
        pytest.skip(str(e))
    assert len(r["times"]) == len(r["plain"]) == 2
    assert all(0 < t < 1e-3 for t in r["times"] + r["plain"])   # over 1000 requests/s
    assert r["plain_s"] == statistics.median(r["plain"])
    assert r["lost"] == 0
    assert r["events"] > 1000       # the server's start-up faults and mmaps were recorded
