"""A live Linux process that runs memory syscalls sent to it: the real side of mmemu's
oracle and of the import tests. Python standard library only (ctypes); run by path or as
``python -m mmemu.oracle.helper``.

Protocol: one JSON object per line on the command stream, one JSON reply per line.
Syscalls reply {"ret": value} or {"err": errno}. Accesses go through process_vm_readv /
process_vm_writev on the helper itself, so a bad address comes back as a short count
(the fault address) instead of killing the helper; the driver names the signal the
access would have raised. ``fill``, ``touch`` and ``load`` use plain loads/stores (memset,
memcpy) and are only sent for ranges known to be accessible (a read through
process_vm_readv pins, and so unshares, COW-shared anonymous pages: ``load`` does not).

Every mapping the helper makes gets MADV_NOHUGEPAGE unless the driver asks for
MADV_HUGEPAGE (``thp_advice``: the oracle's THP regions), so the helper never makes a
transparent huge page anywhere else, and files are written page by page (ext4 otherwise
caches them in large folios, which the kernel maps whole).
"""
import ctypes
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.mremap.restype = ctypes.c_void_p
libc.mremap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_int,
                        ctypes.c_void_p]


class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.POINTER(iovec), ctypes.c_ulong,
                                  ctypes.POINTER(iovec), ctypes.c_ulong, ctypes.c_ulong]
libc.process_vm_writev.restype = ctypes.c_ssize_t
libc.process_vm_writev.argtypes = libc.process_vm_readv.argtypes

MAP_FAILED = ctypes.c_void_p(-1).value
MADV_NOHUGEPAGE = 15
PG = 4096


def _ret(v, failed=-1):
    if v == failed or (v is None and failed == MAP_FAILED):
        return {"err": ctypes.get_errno()}
    return {"ret": v}


def write_file(path, data):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for off in range(0, len(data), PG):      # page by page: order-0 folios
            os.write(fd, data[off:off + PG])
    finally:
        os.close(fd)


class Helper:
    def __init__(self, rd, wr):
        self.rd, self.wr = rd, wr
        self.pid = os.getpid()

    def reply(self, obj):
        self.wr.write(json.dumps(obj) + "\n")
        self.wr.flush()

    def vm_io(self, addr, n, data=None):
        """(count, bytes): how much of [addr, addr+n) could be read (or written)."""
        buf = ctypes.create_string_buffer(n) if data is None else ctypes.create_string_buffer(data, n)
        local = iovec(ctypes.addressof(buf), n)
        done = 0
        # page by page, so the count stops at the first bad page
        while done < n:
            step = min(n - done, PG - ((addr + done) % PG))
            local = iovec(ctypes.addressof(buf) + done, step)
            remote = iovec(addr + done, step)
            fn = libc.process_vm_readv if data is None else libc.process_vm_writev
            r = fn(self.pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            if r != step:
                break
            done += step
        return done, buf.raw[:done]

    def op(self, c):
        op = c["op"]
        if op == "mmap":
            fd = -1
            if c.get("path"):
                fd = os.open(c["path"], os.O_RDWR if c.get("rw", True) else os.O_RDONLY)
            try:
                a = libc.mmap(c.get("addr", 0), c["len"], c["prot"], c["flags"], fd, c.get("offset", 0))
            finally:
                if fd >= 0:
                    os.close(fd)
            if a is None or a == MAP_FAILED:
                return {"err": ctypes.get_errno()}
            libc.madvise(a, c["len"], c.get("thp_advice", MADV_NOHUGEPAGE))
            return {"ret": a}
        if op == "munmap":
            return _ret(libc.munmap(c["addr"], c["len"]))
        if op == "mprotect":
            return _ret(libc.mprotect(c["addr"], c["len"], c["prot"]))
        if op == "madvise":
            return _ret(libc.madvise(c["addr"], c["len"], c["advice"]))
        if op == "mremap":
            a = libc.mremap(c["addr"], c["old"], c["new"], c.get("flags", 0), c.get("to", 0))
            if a is None or a == MAP_FAILED:
                return {"err": ctypes.get_errno()}
            return {"ret": a}
        if op == "write_file":
            write_file(c["path"], bytes.fromhex(c["data"]) if "data" in c
                       else bytes([c.get("byte", 0)]) * c["len"])
            return {"ret": 0}
        if op == "fill":            # plain stores: memset, or one byte every stride bytes
            if c.get("stride", PG) == PG and "stride" not in c:
                ctypes.memset(c["addr"], c.get("byte", 1), c["len"])
                return {"ret": 0}
            for off in range(0, c["len"], c.get("stride", PG)):
                ctypes.memset(c["addr"] + off, c.get("byte", 1), 1)
            return {"ret": 0}
        if op == "touch":           # plain loads, one per page
            s = 0
            for off in range(0, c["len"], c.get("stride", PG)):
                s += ctypes.c_ubyte.from_address(c["addr"] + off).value
            return {"ret": s}
        if op == "load":            # plain loads: only for ranges known to be readable
            return {"ret": c["len"], "data": ctypes.string_at(c["addr"], c["len"]).hex()}
        if op == "read":
            n, data = self.vm_io(c["addr"], c["len"])
            return {"ret": n, "data": data.hex()}
        if op == "write":
            data = bytes.fromhex(c["data"]) if "data" in c else bytes([c.get("byte", 0)]) * c["len"]
            n, _ = self.vm_io(c["addr"], len(data), data)
            return {"ret": n}
        if op == "fork":
            fifo = c.get("fifos")
            pid = os.fork()
            if pid == 0:
                if not fifo:
                    os._exit(0)
                rd = open(fifo[0], "r")
                wr = open(fifo[1], "w")
                Helper(rd, wr).serve()
                os._exit(0)
            if not fifo:
                os.waitpid(pid, 0)
            return {"ret": pid}
        if op == "wait":
            _, st = os.waitpid(c["pid"], 0)
            return {"ret": st}
        if op == "exit":
            self.reply({"ret": 0})
            os._exit(c.get("status", 0))
        if op == "ping":
            return {"ret": os.getpid()}
        return {"err": 22}

    def serve(self):
        for line in self.rd:
            if not line.strip():
                continue
            c = json.loads(line)
            try:
                out = self.op(c)
            except OSError as e:
                out = {"err": e.errno or 5}
            self.reply(out)


if __name__ == "__main__":
    Helper(sys.stdin, sys.stdout).serve()
