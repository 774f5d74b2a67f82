"""Build mmemu's Cython core with MMEMU_DEBUG=1 and run the reliability tests against it.

    python tools/debug_build_check.py [--all] [pytest args...]

The debug build turns on Cython bounds and wraparound checks, C asserts and the checks of
the entry writers (cython_core/mmemu/_core/pgtable.pxd: a write into a COW-shared page
table, or of an entry pointing outside memory, aborts) and of the rmap helpers. The sources are copied to a temporary directory and built there, so the
checkout's own (release) build is untouched; the tests then import that copy
(PYTHONPATH) and conftest refuses to run unless the debug build is the one loaded.
Needs Cython, numpy and setuptools in the environment (the [test] extra has them).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the fuzzing, the bad-input catalogue, out-of-memory sweeps, the COW page-table tests and
# the page allocator's
RELIABILITY = ["properties/test_fuzz*.py", "properties/test_bad_input*.py", "properties/test_oom.py",
               "properties/test_all_or_nothing.py", "properties/test_error_types.py",
               "machine/test_foreign_objects.py",
               "cow_pte/test_cow_pte.py", "cow_pte/test_designs_agree.py", "cow_pgtable/test_*.py",
               "cow_pte/test_series_versions.py", "cow_pte/test_v1_bugs.py",
               "machine/test_snapshot.py", "machine/test_snapshot_hostile.py",
               "properties/test_snapshot_mutations.py", "machine/test_check.py",
               "machine/test_sparse.py", "machine/test_filemap.py",
               "machine/test_page_alloc.py", "machine/test_physmem_api.py", "thp/test_thp.py",
               "thp/test_thp_collapse.py", "thp/test_thp_oom_order9.py",
               "cow_pte/test_swap_versions.py", "machine/test_write_whole_pages.py",
               "thp/test_thp_file.py", "thp/test_thp_fuzz.py", "thp/test_thp_shmem_collapse.py"]


def main(argv: list[str]) -> int:
    run_all = "--all" in argv
    extra = [a for a in argv if a != "--all"]
    tmp = Path(tempfile.mkdtemp(prefix="mmemu-debug-"))
    try:
        for name in ("setup.py", "pyproject.toml", "README.md"):
            shutil.copy2(ROOT / name, tmp / name)
        ignore = shutil.ignore_patterns("*.so", "*.c", "__pycache__", "build")
        for name in ("src", "cython_core"):
            shutil.copytree(ROOT / name, tmp / name, ignore=ignore)
        env = dict(os.environ, MMEMU_DEBUG="1")
        t0 = time.perf_counter()
        print(f"building the debug core in {tmp} ...", flush=True)
        build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                               cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
        if build.returncode != 0:
            print(build.stdout)
            print("debug build failed", file=sys.stderr)
            return build.returncode
        print(f"built in {time.perf_counter() - t0:.0f} s", flush=True)
        if run_all:
            targets = ["tests"]
        else:
            missing = [pat for pat in RELIABILITY if not list((ROOT / "tests").glob(pat))]
            if missing:
                print(f"no test file matches {missing} (moved?)", file=sys.stderr)
                return 2
            targets = sorted({str(p.relative_to(ROOT)) for pat in RELIABILITY
                              for p in (ROOT / "tests").glob(pat)})
        env = dict(os.environ, PYTHONPATH=str(tmp / "src"), MMEMU_REQUIRE_DEBUG_BUILD="1")
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets, *extra]
        print("+ " + " ".join(cmd), flush=True)
        return subprocess.run(cmd, cwd=ROOT, env=env).returncode
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
