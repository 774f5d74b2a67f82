"""Run a THP scenario on the live kernel (thp_scenario.c, built here with cc) and on an
emulated machine, and return what /proc says after every step on both sides.

A scenario is a list of steps, each a tuple: ("map", off, length, advice) (an anonymous
private read-write mapping at BASE + off, then madvise(advice) unless 0), ("smap", off,
length, advice) (the same, MAP_SHARED|MAP_ANONYMOUS: shmem), ("w", off), ("r", off),
("fork",) (a child that does nothing until ("reap",) but ("cr", off) / ("cw", off): it
reads / writes a byte), ("unmap", off, length),
("prot", off, length, prot), ("madv", off, length, advice), ("remap", off, length, new_off),
("collapse", off, length) (MADV_COLLAPSE, which may fail), and for files:
("file", k, size, how) (create file k and write size bytes of b"a" into it: how "one" is one
write, "pages" one write per 4 KiB), ("fmap", off, length, prot, shared, k, file_off) (map
file k at BASE + off, MAP_SHARED if shared else MAP_PRIVATE), ("trunc", k, size) (ftruncate)
and ("fwrite", k, off, length) (pwrite of length bytes b"a"); ("tfile", k, size, how) is
("file", ...) in /dev/shm (tmpfs).
Each side gives per step: its errno (0 but for a failed collapse), VmPTE and RssAnon (kB),
the thp_* vmstat counters with nr_anon_transparent_hugepages, the VMAs of the region as (start, end, Rss,
AnonHugePages, THPeligible) offsets from BASE, and each VMA's pagemap as runs
(flags, pages) of flags = present << 3 | swap << 2 | file << 1 | exclusive. A scenario
with a file step also has RssFile, the file THP counters (FILE_COUNTERS) and each VMA's
FilePmdMapped (a sixth member of its tuple). The live files are O_TMPFILEs in
FILE_DIR (ext4 here: large folios in the page cache). A scenario with an smap step also has
RssShmem, the child's VmPTE and RssShmem over the steps it lives through on both ends, the
shmem THP counters (SHMEM_COUNTERS) and each VMA's ShmemPmdMapped (a seventh member).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import mmemu

BASE = 0x300000000000
HERE = os.path.dirname(os.path.abspath(__file__))
COUNTERS = ("thp_fault_alloc", "thp_fault_fallback", "thp_split_pmd", "thp_deferred_split_page",
            "nr_anon_transparent_hugepages", "thp_collapse_alloc", "thp_collapse_alloc_failed")
FILE_COUNTERS = ("thp_file_mapped", "nr_file_hugepages", "nr_file_pmdmapped")
FILE_STEPS = ("file", "tfile", "fmap", "trunc", "fwrite")
SHMEM_COUNTERS = ("thp_file_mapped", "nr_shmem_hugepages", "nr_shmem_pmdmapped", "thp_split_page")
CHILD_KEYS = ("cVmPTE", "cRssShmem")
FILE_DIR = "/var/tmp"


def live_unavailable() -> str:
    """Why the live side cannot run here ('' if it can)."""
    if shutil.which("cc") is None:
        return "no C compiler"
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            mode = f.read()
    except OSError:
        return "no /sys/kernel/mm/transparent_hugepage"
    if "[never]" in mode:
        return "THP disabled on this kernel"
    return ""


_BINARY = []


def _binary() -> str:
    if not _BINARY:
        d = tempfile.mkdtemp(prefix="mmemu-thp-")
        out = os.path.join(d, "thp_scenario")
        subprocess.run(["cc", "-O1", "-Wall", "-Werror", "-o", out, os.path.join(HERE, "thp_scenario.c")], check=True)
        _BINARY.append(out)
    return _BINARY[0]


def _argv(steps):
    out = []
    for s in steps:
        out.append(s[0])
        out += [hex(x) if isinstance(x, int) and x >= 4096 else str(x) for x in s[1:]]
    return out


def has_files(steps) -> bool:
    """Whether the scenario has file steps (and so compares the file numbers too)."""
    return any(s[0] in FILE_STEPS for s in steps)


def has_shmem(steps) -> bool:
    """Whether the scenario maps shmem (and so compares the shmem numbers too)."""
    return any(s[0] in ("smap", "tfile") for s in steps)


def run_live(steps):
    """The scenario on the kernel: a list of per-step dicts (the first is before any step)."""
    files, shmem = has_files(steps), has_shmem(steps)
    text = subprocess.run([_binary()] + _argv(steps), check=True, capture_output=True,
                          text=True, timeout=60,
                          env=dict(os.environ, MMEMU_THP_DIR=FILE_DIR)).stdout
    out, cur = [], None
    for line in text.splitlines():
        k, _, rest = line.partition(" ")
        if k == "step":
            cur = {"step": rest, "vmas": []}
        elif k == "end":
            out.append(cur)
        elif k == "vma":
            s, e, rss, ahp, el, fpmd, spmd = rest.split()
            cur["vmas"].append((int(s, 16), int(e, 16), int(rss), int(ahp), int(el))
                               + ((int(fpmd),) if files else ()) + ((int(spmd),) if shmem else ()))
        elif k == "pm":
            cur.setdefault("pagemap", []).append(
                [tuple(int(x) for x in r.split("*")) for r in rest.split()])
        else:
            cur[k] = int(rest)
    return out


def run_emulated(steps, machine=None):
    """The same scenario on an emulated machine (THP madvise mode by default)."""
    m = machine or mmemu.Machine("1G")
    p = m.spawn()
    child = None
    files = {}
    withfiles, shmem = has_files(steps), has_shmem(steps)
    out = [_observe(m, p, None, "start", withfiles, shmem)]
    for s in steps:
        op = s[0]
        err = 0
        if op in ("file", "tfile"):
            files[s[1]] = m.create_file(f"/f{s[1]}", tmpfs=op == "tfile")
            piece = max(s[2], 1) if s[3] == "one" else 4096
            for off in range(0, s[2], piece):
                m.write_file(files[s[1]], off, b"a" * min(piece, s[2] - off))
        elif op == "fmap":
            p.mmap(BASE + s[1], s[2], s[3], (mmemu.MAP_SHARED if s[4] else mmemu.MAP_PRIVATE)
                   | mmemu.MAP_FIXED_NOREPLACE, file=files[s[5]], offset=s[6])
        elif op == "trunc":
            files[s[1]].truncate(s[2])
        elif op == "fwrite":
            m.write_file(files[s[1]], s[2], b"a" * s[3])
        elif op in ("map", "smap"):
            p.mmap(BASE + s[1], s[2], mmemu.PROT_READ | mmemu.PROT_WRITE,
                   (mmemu.MAP_SHARED if op == "smap" else mmemu.MAP_PRIVATE)
                   | mmemu.MAP_ANONYMOUS | mmemu.MAP_FIXED_NOREPLACE)
            if s[3]:
                p.madvise(BASE + s[1], s[2], s[3])
        elif op == "w":
            p.write(BASE + s[1], b"x")
        elif op == "r":
            p.read(BASE + s[1], 1)
        elif op == "fork":
            child = p.fork()
        elif op == "cr":
            child.read(BASE + s[1], 1)
        elif op == "cw":
            child.write(BASE + s[1], b"y")
        elif op == "reap":
            child.exit()
            child = None
        elif op == "unmap":
            p.munmap(BASE + s[1], s[2])
        elif op == "prot":
            p.mprotect(BASE + s[1], s[2], s[3])
        elif op == "madv":
            p.madvise(BASE + s[1], s[2], s[3])
        elif op == "remap":
            p.mremap(BASE + s[1], s[2], s[2], mmemu.MREMAP_MAYMOVE | mmemu.MREMAP_FIXED,
                     BASE + s[3])
        elif op == "collapse":
            try:
                p.madvise(BASE + s[1], s[2], mmemu.MADV_COLLAPSE)
            except mmemu.MMError as e:
                err = e.errno
        else:
            raise ValueError(op)
        m.check()
        out.append(_observe(m, p, child, op, withfiles, shmem))
        out[-1]["errno"] = err
    return out


def _observe(m, p, child, step, files, shmem):
    st, vm = p.status(), m.vmstat()
    d = {"step": step, "VmPTE": st["VmPTE"], "RssAnon": st["RssAnon"], "RssFile": st["RssFile"],
         "RssShmem": st["RssShmem"],
         "vmas": [(e["start"] - BASE, e["end"] - BASE, e["Rss"], e["AnonHugePages"],
                   e["THPeligible"]) + ((e["FilePmdMapped"],) if files else ())
                  + ((e["ShmemPmdMapped"],) if shmem else ())
                  for e in p.smaps() if BASE <= e["start"] and e["end"] <= BASE + (1 << 30)]}
    if child is not None:
        cst = child.status()
        d.update(cVmPTE=cst["VmPTE"], cRssShmem=cst["RssShmem"])
    d.update((k, vm[k]) for k in COUNTERS + FILE_COUNTERS + SHMEM_COUNTERS)
    if d["vmas"]:
        d["pagemap"] = [_runs(p.pagemap(BASE + s, (e - s) >> 12)) for s, e, *_ in d["vmas"]]
    return d


def _runs(entries):
    """pagemap entries as runs (flags, pages), flags as thp_scenario.c prints them."""
    out = []
    for x in entries.tolist():
        f = (x >> 63 & 1) << 3 | (x >> 62 & 1) << 2 | (x >> 61 & 1) << 1 | (x >> 56 & 1)
        if out and out[-1][0] == f:
            out[-1] = (f, out[-1][1] + 1)
        else:
            out.append((f, 1))
    return out


def deltas(obs, first=1, files=False, shmem=False):
    """Per step from `first` on: the change of VmPTE, RssAnon and the counters (with
    `files`: RssFile and FILE_COUNTERS too; with `shmem`: RssShmem, SHMEM_COUNTERS and the
    child's numbers, None where it does not live at both ends) since the step before, and
    the region's VMAs."""
    keys = ("VmPTE", "RssAnon") + COUNTERS + (("RssFile",) + FILE_COUNTERS if files else ()) \
        + (("RssShmem",) + SHMEM_COUNTERS if shmem else ())
    return [{"step": b["step"], "errno": b.get("errno", 0), "vmas": b["vmas"],
             "pagemap": b.get("pagemap"),
             **{k: b[k] - a[k] for k in keys},
             **({k: b[k] - a[k] if k in a and k in b else None for k in CHILD_KEYS}
                if shmem else {})}
            for a, b in zip(obs[first - 1:], obs[first:])]


def agree(steps):
    """The kernel's and mmemu's step deltas, from a run where they agree (or the last).
    The thp_* counters are system-wide: another process making THPs at the same moment
    shows in the kernel's numbers, so a run that differs is made again (up to eight times,
    waiting longer each time for the other process's burst to pass); a difference of
    mmemu's own is in every run. The first step of an anonymous scenario (its map) is not
    compared; a file scenario's is (the write that makes the page cache's folios)."""
    files, shmem = has_files(steps), has_shmem(steps)
    emu = deltas(run_emulated(steps), first=_first(steps), files=files, shmem=shmem)
    for attempt in range(8):
        got = deltas(run_live(steps), first=_first(steps), files=files, shmem=shmem)
        if got == emu:
            break
        time.sleep(0.1 * 2 ** attempt)
    return got, emu


def _first(steps) -> int:
    return 1 if has_files(steps) else 2


def assert_steps_agree(steps):
    """Every step's deltas the kernel's (agree), naming the first step that differs."""
    live_steps, emu_steps = agree(steps)
    assert len(live_steps) == len(emu_steps)
    for k, (a, b) in enumerate(zip(live_steps, emu_steps)):
        n = k + _first(steps) - 1
        assert a == b, f"step {n} ({steps[n]}): kernel {a}, mmemu {b}"
