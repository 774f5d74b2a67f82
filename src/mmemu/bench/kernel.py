"""The real kernel under the benchmark, measured by a helper process (kernel_helper.py,
standard library only): fork of a populated private anonymous region, and the child's
COW faults, cold (round 0) and warm (later rounds)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).with_name("kernel_helper.py")


def mem_available() -> int:
    """MemAvailable of this machine in bytes (0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) << 10
    except OSError:
        pass
    return 0


def can_measure(size: int, cow: bool) -> bool:
    """Whether the host has room: the region, plus the child's copies when it writes,
    with half of MemAvailable left over for everyone else on the machine."""
    need = size * (2 if cow else 1)
    return need <= mem_available() // 2


def measure(size: int, rounds: int = 5, cow: bool = True, timeout: float = 600) -> dict:
    """Run the helper; returns its JSON (fork_s, cow_s per round, populate_s, ...)."""
    cmd = [sys.executable, "-I", str(HELPER), str(size), str(rounds)]
    if not cow:
        cmd.append("--no-cow")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"kernel baseline helper failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def measure_op(op: str, size: int, repeats: int, stride: int = 1, timeout: float = 600) -> dict:
    """Time one kernel operation with the helper (`--op`, see kernel_helper.py): returns its
    JSON (times, ptes, tables, kernel)."""
    cmd = [sys.executable, "-I", str(HELPER), "--op", op, str(size), str(repeats), str(stride)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"kernel helper --op {op} failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)
