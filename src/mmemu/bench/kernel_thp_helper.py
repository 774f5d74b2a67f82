"""The real kernel's transparent huge pages, for `mmemu bench`: a stdlib-only script run as
a separate process.

    python kernel_thp_helper.py SIZE ROUNDS

maps SIZE bytes (2 MiB aligned) of private anonymous memory with MADV_HUGEPAGE, times the
first touch (one write per 4 KiB page: a THP fault per 2 MiB), then ROUNDS forks (the
child exits at once), then the split of every huge PMD by an mprotect of one page in each
2 MiB. Prints one JSON object (times in seconds, AnonHugePages of the region before the
splits). Needs THP in madvise or always mode.
"""
import ctypes
import json
import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE
HUGE = 2 << 20


def _region_kb(addr, field):
    on, val = False, 0
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                s, e = (int(x, 16) for x in head.split("-"))
                on = s <= addr < e
            elif on and head == field + ":":
                val += int(line.split()[1])
    return val


def main(argv):
    size, rounds = int(argv[0]), int(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    m = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    off = (-base) % HUGE
    m.madvise(mmap.MADV_HUGEPAGE, off, size)
    view = memoryview(m)[off:off + size]
    t0 = time.perf_counter()
    view[::PAGE] = b"\x01" * (size // PAGE)
    touch = time.perf_counter() - t0
    ahp = _region_kb(base + off, "AnonHugePages")
    fork_s = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        fork_s.append(time.perf_counter() - t0)
        os.waitpid(pid, 0)
    t0 = time.perf_counter()
    for a in range(base + off, base + off + size, HUGE):
        if libc.mprotect(a, PAGE, mmap.PROT_READ):
            raise OSError(ctypes.get_errno(), "mprotect")
    split = time.perf_counter() - t0
    view.release()
    json.dump({"size": size, "pages": size // PAGE, "rounds": rounds, "touch_s": touch,
               "fork_s": fork_s, "split_s": split, "AnonHugePages_kb": ahp,
               "kernel": os.uname().release}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
