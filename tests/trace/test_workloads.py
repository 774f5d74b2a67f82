"""The real workloads, recorded and replayed (``pytest -m workloads``): each script runs or
records why it was skipped; a run must replay with the classic fork faithfully."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.workloads, pytest.mark.one_design]
HERE = Path(__file__).resolve().parents[2] / "benchmarks" / "workloads"


@pytest.mark.parametrize("name,args", [("pool", ["--mib", "64"]), ("redis", ["--keys", "50000"]),
                                       ("afl", ["--execs", "300"])])
def test_workload(name, args):
    r = subprocess.run([sys.executable, str(HERE / f"{name}.py"), *args], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((HERE / "results" / f"{name}.json").read_text())
    if "skipped" in res:
        pytest.skip(res["skipped"])
    fid = res["fidelity"]
    assert res["lost_events"] == 0
    assert fid["syscall_mismatches"] == 0
    assert fid["checkpoints"] >= 2 and fid["exact"] >= 0.98 * fid["checkpoints"], fid
    assert res["designs"]["classic"]["forks"] >= 1
