"""Redis taking a snapshot while it serves writes: redis-server (Debian package) is
recorded from its start; N keys are loaded, then BGSAVE forks the snapshot child while a
client keeps updating random keys; when the child is done the server shuts down.

    python benchmarks/workloads/redis.py [--keys 200000] [--value 256]

The per-design rows: the page tables the fork adds, the COW faults parent and child take
during the snapshot, the COW page-table breaks. Writes results/redis.json."""
import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time

from common import RESULTS, Skip, apt_install, main, tracefs_or_skip


def _cmd(*args) -> bytes:
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Client:
    """A minimal RESP client: pipelined commands, replies read and counted."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def pipeline(self, cmds) -> list:
        self.s.sendall(b"".join(cmds))
        out = []
        while len(out) < len(cmds):
            out.append(self._reply())
        return out

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def _reply(self):
        line = self._line()
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.s.recv(1 << 16)
            v, self.buf = self.buf[:n], self.buf[n + 2:]
            return v
        if line[:1] == b"-":
            raise RuntimeError(line.decode())
        return line[1:]


def run():
    a = argparse.ArgumentParser()
    a.add_argument("--keys", type=int, default=200000)
    a.add_argument("--value", type=int, default=256)
    args = a.parse_args()
    tracefs_or_skip()
    apt_install(["redis-server"], ["redis-server"])
    from mmemu.trace.record import record
    RESULTS.mkdir(exist_ok=True)
    d = tempfile.mkdtemp(prefix="mmemu-redis-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = RESULTS / "redis.mmt"
    summary = {}
    rec = threading.Thread(target=lambda: summary.update(record(
        out, command=["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", d, "--daemonize", "no",
                      "--io-threads", "1", "--loglevel", "warning"], interval=0.5)))
    rec.start()
    deadline = time.time() + 30
    while True:
        try:
            c = Client(port)
            c.pipeline([_cmd("PING")])
            break
        except OSError:
            if time.time() > deadline or not rec.is_alive():
                rec.join(5)
                raise Skip("redis-server did not start under the recorder")
            time.sleep(0.05)
    value = b"v" * args.value
    for lo in range(0, args.keys, 2000):                     # load N keys
        c.pipeline([_cmd("SET", f"key:{i}", value) for i in range(lo, min(args.keys, lo + 2000))])
    stop, updates = threading.Event(), [0]

    def writer():
        w, rnd = Client(port), random.Random(1)
        while not stop.is_set():
            w.pipeline([_cmd("SET", f"key:{rnd.randrange(args.keys)}", value) for _ in range(500)])
            updates[0] += 500
    wt = threading.Thread(target=writer)
    wt.start()
    time.sleep(0.3)
    c.pipeline([_cmd("BGSAVE")])
    t0 = time.time()
    while b"rdb_bgsave_in_progress:1" in c.pipeline([_cmd("INFO", "persistence")])[0]:
        time.sleep(0.02)
    snap_s = time.time() - t0
    time.sleep(0.2)
    stop.set()
    wt.join()
    try:
        c.pipeline([_cmd("SHUTDOWN", "NOSAVE")])
    except (ConnectionError, OSError):
        pass
    rec.join(60)
    return out, (f"{args.keys} keys of {args.value} bytes; BGSAVE took {snap_s:.2f} s while a "
                 f"client made {updates[0]} updates")


if __name__ == "__main__":
    sys.exit(main("redis", run))
