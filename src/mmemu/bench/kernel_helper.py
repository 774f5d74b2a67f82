"""The real-kernel baseline: a stdlib-only script, run as a separate process.

    python kernel_helper.py SIZE ROUNDS [--no-cow]

maps SIZE bytes of private anonymous memory, advises MADV_NOHUGEPAGE, writes one byte to
every page, then ROUNDS times: times os.fork() in the parent; the child times writing one
byte to every page (one COW fault per page, unless --no-cow) and reports it through a
pipe, then exits. Round 0 is cold (the child's copies land on memory the machine may not
have touched for a while); later rounds are warm (they reuse what the previous child
freed). Prints one JSON object. Uses nothing outside the standard library.
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
    fork_s, cow_s = [], []
    child_pte_kb = None
    for r in range(rounds):
        rfd, wfd = os.pipe()
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            os.close(rfd)
            t = 0.0
            if cow:
                t1 = time.perf_counter()
                m[::PAGE] = b"\x02" * npages    # one COW fault per page
                t = time.perf_counter() - t1
            os.write(wfd, json.dumps([t, _vm_kb("VmPTE")]).encode())
            os._exit(0)
        dt = time.perf_counter() - t0
        os.close(wfd)
        data = b""
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            data += chunk
        os.close(rfd)
        os.waitpid(pid, 0)
        t, child_pte_kb = json.loads(data)
        fork_s.append(dt)
        cow_s.append(t)
    json.dump({
        "size": size, "pages": npages, "rounds": rounds, "madv_nohugepage": nohuge,
        "populate_s": populate, "fork_s": fork_s, "cow_s": cow_s if cow else None,
        "child_VmPTE_kb": child_pte_kb, "VmHWM_kb": _vm_kb("VmHWM"),
        "kernel": os.uname().release,
    }, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
