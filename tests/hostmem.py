"""Host memory of a run: peak RSS growth measured in a fresh interpreter (tests of sparse
objects and of imports, which must cost what they hold, not what they could hold)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

HOST_LIMIT_MB = 100

_PRELUDE = """
import json, mmemu
from mmemu import MAP_SHARED, MAP_PRIVATE, MAP_ANONYMOUS, MAP_NORESERVE, PROT_READ, PROT_WRITE
RW = PROT_READ | PROT_WRITE
TiB, GiB, PG = 1 << 40, 1 << 30, 4096

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
"""


def host_growth(body: str) -> dict:
    """Run body (after _PRELUDE) in a fresh interpreter; it defines run() -> dict. Returns
    that dict plus 'grown_mb': the peak RSS reached during run() above the RSS before it."""
    code = _PRELUDE + textwrap.dedent(body) + """
base = rss("VmRSS")
open("/proc/self/clear_refs", "w").write("5")      # VmHWM := VmRSS
out = run()
out["grown_mb"] = rss("VmHWM") - base
print(json.dumps(out))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


needs_clear_refs = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"),
                                      reason="needs /proc/self/clear_refs (Linux)")
