"""The real-kernel baseline: a stdlib-only script, run as a separate process.

    python kernel_helper.py SIZE ROUNDS [--no-cow]

maps SIZE bytes of private anonymous memory, advises MADV_NOHUGEPAGE, writes one byte to
every page, then ROUNDS times: times os.fork() in the parent; the child times writing one
byte to every page (one COW fault per page, unless --no-cow) and reports it through a
pipe, then exits. Every time is taken twice: wall (perf_counter: fork_s, cow_s) and CPU
time of the process (process_time: fork_cpu_s, cow_cpu_s; it leaves out the time the
process waited for a CPU on a shared machine). Round 0 is cold (the child's copies land on memory the machine may not
have touched for a while); later rounds are warm (they reuse what the previous child
freed). Prints one JSON object. Uses nothing outside the standard library.

    python kernel_helper.py --layout

waits (see layout_main) while the calibration imports its own layout.

    python kernel_helper.py --op OP SIZE REPEATS [STRIDE]

times one kernel operation REPEATS times on a region of SIZE bytes of which one page in
every STRIDE is populated (the calibration of mmemu.costmodel): fork (the parent's
os.fork(), the child exits at once), first_touch (write faults on a fresh mapping),
zero_read (read faults on a fresh mapping), mprotect (PROT_READ over a populated region),
munmap (of a populated region), exit (from telling a child that populated its own
region to exit until waitpid returns). Prints {"times": [...], "cpu_times": [...], "ptes":
..., "tables": ...}: wall and CPU time (process_time; for exit, the child's CPU time from
wait4 after it stopped counting its own).
"""
import json
import mmap
import os
import sys
import time

PAGE = mmap.PAGESIZE


def _vm_kb(field, pid="self"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv):
    size, rounds = int(argv[0]), int(argv[1])
    cow = "--no-cow" not in argv
    npages = size // PAGE
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
    nohuge = hasattr(mmap, "MADV_NOHUGEPAGE")
    if nohuge:
        m.madvise(mmap.MADV_NOHUGEPAGE)
    t0 = time.perf_counter()
    m[::PAGE] = b"\x01" * npages            # one write fault per page, in C
    populate = time.perf_counter() - t0
    fork_s, cow_s, fork_cpu_s, cow_cpu_s = [], [], [], []
    child_pte_kb = None
    for r in range(rounds):
        rfd, wfd = os.pipe()
        c0 = time.process_time()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            t = tc = 0.0
            if cow:
                c1 = time.process_time()
                t1 = time.perf_counter()
                m[::PAGE] = b"\x02" * npages    # one COW fault per page
                t = time.perf_counter() - t1
                tc = time.process_time() - c1
            os.write(wfd, json.dumps([t, _vm_kb("VmPTE"), tc]).encode())
            os._exit(0)
        dt = time.perf_counter() - t0
        fork_cpu_s.append(time.process_time() - c0)
        os.close(wfd)
        data = b""
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            data += chunk
        os.close(rfd)
        os.waitpid(pid, 0)
        t, child_pte_kb, tc = json.loads(data)
        fork_s.append(dt)
        cow_s.append(t)
        cow_cpu_s.append(tc)
    json.dump({
        "size": size, "pages": npages, "rounds": rounds, "madv_nohugepage": nohuge,
        "populate_s": populate, "fork_s": fork_s, "cow_s": cow_s if cow else None,
        "fork_cpu_s": fork_cpu_s, "cow_cpu_s": cow_cpu_s if cow else None,
        "child_VmPTE_kb": child_pte_kb, "VmHWM_kb": _vm_kb("VmHWM"),
        "kernel": os.uname().release,
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0


TABLE = 512 * PAGE                          # bytes mapped by one PTE table (x86-64)


def _region(size, stride, populate=True):
    """A private anonymous region, MADV_NOHUGEPAGE, one page in every `stride` written."""
    m = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                  prot=mmap.PROT_READ | mmap.PROT_WRITE)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        m.madvise(mmap.MADV_NOHUGEPAGE)
    if populate:
        m[::PAGE * stride] = b"\x01" * len(range(0, size, PAGE * stride))
    return m


def _address(m):
    import ctypes
    buf = ctypes.c_char.from_buffer(m)
    addr = ctypes.addressof(buf)
    del buf
    return addr


def _tables(addr, size):
    return (addr + size - 1) // TABLE - addr // TABLE + 1


def _clocks():
    return time.perf_counter(), time.process_time()


def _since(start):
    w, c = _clocks()
    return w - start[0], c - start[1]


def _time_fork():
    t0 = _clocks()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    dt = _since(t0)
    os.waitpid(pid, 0)
    return dt


def _time_fresh(size, stride, write):
    m = _region(size, stride, populate=False)
    n = len(range(0, size, PAGE * stride))
    t0 = _clocks()
    if write:
        m[::PAGE * stride] = b"\x01" * n
    else:
        m[::PAGE * stride]
    dt = _since(t0)
    m.close()
    return dt


def _time_mprotect(size, stride):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    m = _region(size, stride)
    addr = _address(m)
    t0 = _clocks()
    rc = libc.mprotect(ctypes.c_void_p(addr), ctypes.c_size_t(size), mmap.PROT_READ)
    dt = _since(t0)
    if rc != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    m.close()
    return dt


def _time_munmap(size, stride):
    m = _region(size, stride)
    t0 = _clocks()
    m.close()
    return _since(t0)


def _time_exit(size, stride):
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        m = _region(size, stride)
        os.write(ready_w, json.dumps(time.process_time()).encode())
        os.read(go_r, 1)
        os._exit(0)
    cpu_before = json.loads(os.read(ready_r, 64))
    t0 = time.perf_counter()
    os.write(go_w, b"g")
    _, _, ru = os.wait4(pid, 0)
    dt = time.perf_counter() - t0
    for fd in (ready_r, ready_w, go_r, go_w):
        os.close(fd)
    return dt, ru.ru_utime + ru.ru_stime - cpu_before


def op_main(argv):
    op, size, repeats = argv[0], int(argv[1]), int(argv[2])
    stride = int(argv[3]) if len(argv) > 3 else 1
    times = []
    probe = _region(size, stride, populate=False)
    addr = _address(probe)          # where a region of this size lands (for its table count)
    probe.close()
    if op == "fork":
        m = _region(size, stride)
        addr = _address(m)
        times = [_time_fork() for _ in range(repeats)]
        m.close()
    elif op in ("first_touch", "zero_read"):
        times = [_time_fresh(size, stride, op == "first_touch") for _ in range(repeats)]
    elif op == "mprotect":
        times = [_time_mprotect(size, stride) for _ in range(repeats)]
    elif op == "munmap":
        times = [_time_munmap(size, stride) for _ in range(repeats)]
    elif op == "exit":
        times = [_time_exit(size, stride) for _ in range(repeats)]
    else:
        raise SystemExit(f"unknown op {op!r}")
    json.dump({"op": op, "size": size, "stride": stride, "times": [t[0] for t in times],
               "cpu_times": [t[1] for t in times],
               "ptes": len(range(0, size, PAGE * stride)), "tables": _tables(addr, size),
               "kernel": os.uname().release}, sys.stdout)
    sys.stdout.write("\n")
    return 0


def layout_main():
    """--layout: stop with the modules of --op loaded (ctypes too) and no region mapped, so
    the calibration can import this process's own layout (its VMAs, tables and PTEs, which
    every fork and exit of the helper copies and tears down besides the region); prints
    "ready" and waits for its stdin to close."""
    import ctypes  # noqa: F401  (loaded by --op's _address: part of the layout)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--layout"]:
        sys.exit(layout_main())
    if sys.argv[1:2] == ["--op"]:
        sys.exit(op_main(sys.argv[2:]))
    sys.exit(main(sys.argv[1:]))
