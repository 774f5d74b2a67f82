"""A multiprocessing pool (fork start method) mapping work over a large array the parent
built before forking: the workers read all of it and write a small part (COW faults).

    python benchmarks/workloads/pool.py [--mib 256] [--workers 4]

Records the pool with ``mmemu record`` (as root, with tracefs), replays it under every
design, writes results/pool.json and prints one row per design."""
import argparse
import sys
import tempfile
from pathlib import Path

from common import RESULTS, Skip, main, tracefs_or_skip

PROGRAM = r'''
import multiprocessing as mp, sys
import numpy as np
(getattr(np, "_core", None) or np.core).multiarray._set_madvise_hugepage(False)  # no THP: exact fidelity
MIB, WORKERS = int(sys.argv[1]), int(sys.argv[2])
data = np.ones(MIB << 17, dtype=np.float64)       # MIB MiB, every page written

def work(i):
    n = len(data) // (4 * WORKERS)
    lo = i * n
    s = float(data[lo:lo + n].sum())
    data[lo:lo + n:512] = i                       # one write per page of a slice: COW
    return s

if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(WORKERS) as pool:
        print(sum(pool.map(work, range(4 * WORKERS), chunksize=1)))
'''


def run():
    from mmemu.trace.record import record
    a = argparse.ArgumentParser()
    a.add_argument("--mib", type=int, default=256)
    a.add_argument("--workers", type=int, default=4)
    args = a.parse_args()
    try:
        import numpy  # noqa: F401
    except ImportError:
        raise Skip("needs numpy")
    tracefs_or_skip()
    RESULTS.mkdir(exist_ok=True)
    prog = Path(tempfile.mkdtemp(prefix="mmemu-pool-")) / "pool_prog.py"
    prog.write_text(PROGRAM)
    out = RESULTS / "pool.mmt"
    s = record(out, command=[sys.executable, str(prog), str(args.mib), str(args.workers)],
               interval=0.25)
    return out, (f"{args.mib} MiB array, {args.workers} workers (fork), numpy hugepage "
                 f"madvise off; recorded in {s['elapsed']:.1f} s")


if __name__ == "__main__":
    sys.exit(main("pool", run))
