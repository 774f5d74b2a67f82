"""Live helper processes with the layouts the import tests and benchmarks need
(tests/test_import_sparse.py, benchmarks/bench_import.py): a Python process that maps
what ``body`` says with ctypes, prints READY and waits for a line on stdin."""
import subprocess
import sys
import textwrap

RESERVED = 0x100000000000        # 16 TiB from 16 TiB: a sanitizer-style shadow reservation
PAGES_AT = 0x300000000000

HELPER = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                      ctypes.c_int, ctypes.c_long]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_PRIVATE_ANON, MAP_NORESERVE, MAP_FIXED_NOREPLACE = 0x22, 0x4000, 0x100000
def mmap(addr, length, prot, flags=0):
    r = libc.mmap(addr, length, prot, MAP_PRIVATE_ANON | MAP_FIXED_NOREPLACE | flags, -1, 0)
    assert r == addr, ctypes.get_errno()
    libc.madvise(addr, length, 15)           # MADV_NOHUGEPAGE: mmemu has no THP
    return addr
{body}
print("READY", flush=True)
sys.stdin.readline()
"""

RESERVATION = f"""
mmap({RESERVED:#x}, 16 << 40, 0, MAP_NORESERVE)          # PROT_NONE: no page can be there
a = mmap({PAGES_AT:#x}, 64 * 4096, 3)
ctypes.memset(a, 7, 64 * 4096)
"""



def one_page_vmas(n: int, dontneed: bool) -> str:
    """n VMAs of one written page, each in its own 2 MiB span from PAGES_AT; with
    dontneed the pages go again (MADV_DONTNEED: the kernel keeps the PTE tables)."""
    return f"""
for i in range({n}):
    a = mmap({PAGES_AT:#x} + i * (2 << 20), 4096, 3)
    ctypes.memset(a, 1, 1)
    {"libc.madvise(a, 4096, 4)" if dontneed else "pass"}
"""


def start_helper(body):
    h = subprocess.Popen([sys.executable, "-c", HELPER.format(body=textwrap.dedent(body))],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if h.stdout.readline().strip() != "READY":
        h.kill()
        h.wait()
        raise RuntimeError("the helper did not start")
    return h


def stop_helper(h):
    h.stdin.write("\n")
    h.stdin.flush()
    h.wait(timeout=30)
