"""Machine snapshots: ``Machine.save(path)`` and ``Machine.load(path)``.

A snapshot holds a whole machine exactly: every frame's metadata ("struct page") over the
used PFN ranges, the page allocator (high/low-water marks, the gap, the per-cpu-pages
lists and every buddy free list in order), the
counters and events, every process with its mm (PGD, rss, pgtables_bytes, mm id, the VMA
list with anon_vma identity) and every file and shmem object with its page cache. Frame
contents are stored only for frames in use whose bytes are not all zero, so a touched but
never written 1 GiB costs nothing but its page tables.

File layout (integers little-endian)::

    offset  size  field
    0       10    magic b"\\x89MMEMU\\r\\n\\x1a\\n" (PNG-style: text-mode and 7-bit damage show)
    10      4     format version, uint32 (FORMAT_VERSION)
    14      4     flags, uint32, 0
    18      8     header length H, uint64
    26      32    SHA-256 of the H header bytes
    58      H     header: UTF-8 JSON, padded with spaces: {"format", "version",
                  "mmemu_version", "file_size", "sections": [{"name", "offset", "length",
                  "codec", "raw_length", "dtype", "shape", "sha256"}, ...]}
    58+H    ...   the sections, back to back in header order, each compressed with its
                  codec ("zlib" or "none") and checked by the SHA-256 of its stored bytes

Sections: ``state`` (JSON: the machine, processes, VMAs, files, and the scalar state of
physical memory and of each mm), one per per-frame metadata array (``frame.refcount``,
...; as listed by ``PhysMem._frame_arrays``), ``free_data``, ``free_table`` (the two
per-cpu-pages lists, coldest first), ``free_blocks`` (every buddy free list in turn, head
first; their lengths are in the state), ``page_cache_index`` and ``page_cache_pfn`` (the pages
of every page cache, one backing object after the other, in index order), ``swap_slots``,
``swap_counts`` and ``swap_data`` (the swap slots in use), ``data_pfns`` and ``frames``
(4096 bytes per PFN in ``data_pfns``).

Version 1 (before the buddy allocator and the sparse caches) has no ``free_blocks``: its two
free stacks load as the per-cpu-pages lists and its never-used frames as the gap, which is the
same allocator state; its dense ``page_caches`` (-1 for a hole) and its dense swap device
(``swap_map``, ``swap_data``) load as the pages and slots they hold.

``load`` checks the preamble, the header checksum, the header, the file size and every
section's checksum before it builds anything; a bad file raises SnapshotError saying what
is wrong, and nothing is half built (the new machine is returned only when complete).
No pickle: a foreign file cannot run code.
"""
from __future__ import annotations

import hashlib
import dataclasses
import itertools
import json
import os
import struct
import tempfile
import zlib

import numpy as np

from ._core import swap as _swap
from ._core.constants import NR_EVENTS
from ._core.pagetable import MMCore
from ._core.physmem import MAX_ORDER, PhysMem, default_pcp_limits
from .errors import SnapshotError
from .file import MAX_LFS_FILESIZE, File
from .locking import new_lock
from .vma import PAGE_SIZE, VMA, AnonVma

MAGIC = b"\x89MMEMU\r\n\x1a\n"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)                  # version 1: no buddy free lists
_PRE = struct.Struct("<10sIIQ32s")          # magic, version, flags, header length, SHA-256
PREAMBLE_SIZE = _PRE.size                   # 58
_FRAME_CHUNK = 4096                         # frames per read_frames/_write_frames call
_IO_CHUNK = 1 << 22
_ZLIB_LEVEL = 1

# The attributes save() knows how to store. Anything else on these objects is state the
# format would lose, so save() refuses it rather than write an inexact snapshot.
_MACHINE_ATTRS = {"_lock", "memory", "swap", "phys", "cow_pgtable", "max_map_count", "_procs",
                  "_next_pid", "_inodes", "_backings", "_files",
                  # not saved: which host frames mmemu.procfs imported pages came from
                  # (meaningless on another host; a later import into a loaded machine
                  # shares no frames with the earlier ones)
                  "_import_registry"}
_PROCESS_ATTRS = {"machine", "pid", "parent", "children", "alive", "mm",
                  "imported_from", "import_report"}     # mmemu.procfs
_MM_INTS = ("total_vm", "data_vm", "exec_vm", "stack_vm", "locked_vm", "hiwater_vm",
            "hiwater_rss", "start_brk", "brk", "start_stack", "start_code", "end_code")
_MM_ATTRS = {"machine", "core", "cow_pgtable", "vmas"} | set(_MM_INTS)
_VMA_ATTRS = {"start", "end", "flags", "pgoff", "backing", "anon_vma", "name", "page_prot"}
_FILE_ATTRS = {"machine", "path", "inode", "dev", "writable", "swapbacked", "size", "cache",
               "users", "unlinked"}
_SHMEM_ATTRS = {"npages", "cache", "users", "inode", "name", "dev"}

_ARRAY_DTYPES = {"free_data": "<i8", "free_table": "<i8", "free_blocks": "<i8",
                 "page_cache_index": "<i8", "page_cache_pfn": "<i8", "data_pfns": "<i8",
                 "swap_slots": "<i8", "swap_counts": "<i4", "swap_data": "|u1",
                 "page_caches": "<i8", "swap_map": "<i4"}        # the last two: version 1


def _check_attrs(obj, known, what):
    extra = set(vars(obj)) - known
    if extra:
        raise SnapshotError(f"cannot save: {what} has state the snapshot format does not "
                            f"know: {', '.join(sorted(extra))}")


def _peek_count(machine, name):
    """The next value of an itertools.count attribute (replaced by an equal counter)."""
    n = next(getattr(machine, name))
    setattr(machine, name, itertools.count(n))
    return n


# ---------------------------------------------------------------------------- save
def _collect(machine):
    """(state dict, {name: array}) of a machine: everything but the frame contents."""
    from .machine import ShmemFile
    _check_attrs(machine, _MACHINE_ATTRS, "the Machine")
    phys = machine.phys
    scalars, arrays = phys.dump_state()
    backings = sorted(machine._backings, key=lambda b: b.inode)
    bidx = {id(b): i for i, b in enumerate(backings)}
    caches, pos, brecs = [], 0, []
    for b in backings:
        c = b.cache.entries()
        caches.append(c)
        if isinstance(b, File):
            _check_attrs(b, _FILE_ATTRS, f"file {b.path!r}")
            brecs.append({"kind": "file", "path": b.path, "inode": b.inode, "dev": list(b.dev),
                          "writable": bool(b.writable), "swapbacked": bool(b.swapbacked),
                          "size": b.size, "unlinked": bool(b.unlinked), "users": b.users,
                          "cache": [pos, len(c[0])]})
        elif isinstance(b, ShmemFile):
            _check_attrs(b, _SHMEM_ATTRS, "a shmem object")
            brecs.append({"kind": "shmem", "inode": b.inode, "npages": b.npages,
                          "name": b.name, "dev": list(b.dev), "users": b.users,
                          "cache": [pos, len(c[0])]})
        else:
            raise SnapshotError(f"cannot save: unknown backing object {b!r}")
        pos += len(c[0])
    for k, name in enumerate(("page_cache_index", "page_cache_pfn")):
        arrays[name] = np.concatenate([c[k] for c in caches]) if caches else np.empty(0, np.int64)
    # the swap device (mmemu.swap): the slots in use, their counts and their data
    arrays["swap_slots"], arrays["swap_counts"] = _swap.used_slots(phys)
    arrays["swap_data"] = _swap.read_slots(phys, arrays["swap_slots"]).ravel()
    files = []
    for path, f in machine._files.items():
        if id(f) not in bidx or f.path != path:
            raise SnapshotError(f"cannot save: file {path!r} is not a known backing object")
        files.append(bidx[id(f)])
    anon_idx, anon = {}, []
    procs = []
    for p in machine._procs.values():
        _check_attrs(p, _PROCESS_ATTRS, f"process {p.pid}")
        mm = p.mm
        _check_attrs(mm, _MM_ATTRS, f"the mm of process {p.pid}")
        vmas = []
        for v in mm.vmas:
            _check_attrs(v, _VMA_ATTRS, f"a VMA of process {p.pid}")
            b = None
            if v.backing is not None:
                if id(v.backing) not in bidx:
                    raise SnapshotError(f"cannot save: a VMA of process {p.pid} maps an "
                                        f"object the machine does not know")
                b = bidx[id(v.backing)]
            a = None
            if v.anon_vma is not None:
                a = anon_idx.get(id(v.anon_vma))
                if a is None:
                    a = anon_idx[id(v.anon_vma)] = len(anon)
                    anon.append(bool(v.anon_vma.forked))
            vmas.append([v.start, v.end, v.flags, v.pgoff, b, a, v.name, v.page_prot])
        rec = {k: int(getattr(mm, k)) for k in _MM_INTS}
        rec.update(core=mm.core.dump_state(), cow_pgtable=bool(mm.cow_pgtable), vmas=vmas)
        rec = {"pid": p.pid, "parent": None if p.parent is None else p.parent.pid,
               "children": [c.pid for c in p.children], "mm": rec}
        if "imported_from" in vars(p):
            rec["imported"] = {"from": int(p.imported_from),
                               "report": dataclasses.asdict(p.import_report)}
        procs.append(rec)
    state = {
        "machine": {"memory": machine.memory, "swap": machine.swap,
                    "max_map_count": machine.max_map_count,
                    "cow_pgtable": bool(machine.cow_pgtable),
                    "next_pid": int(machine._next_pid),
                    "next_inode": _peek_count(machine, "_inodes")},
        "physmem": scalars,
        "backings": brecs,
        "files": files,
        "anon_vmas": anon,
        "processes": procs,
    }
    return state, arrays


def _le(a: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype))


def save(machine, path, compress: bool = True) -> None:
    """Write a snapshot of machine to path (atomically: a temporary file is renamed)."""
    state, arrays = _collect(machine)
    codec = "zlib" if compress else "none"
    phys = machine.phys
    pfns = _le(arrays.pop("data_pfns"), "<i8")
    # (name, dtype, shape, payload: bytes or a generator of bytes)
    sections = [("state", "json", [], json.dumps(state, sort_keys=True,
                                                  separators=(",", ":")).encode())]
    for name in sorted(k for k in arrays if k.startswith("frame.")):
        a = arrays[name]
        dt = a.dtype.newbyteorder("<").str
        sections.append((name, dt, [len(a)], _le(a, dt).tobytes()))
    for name in ("free_data", "free_table", "free_blocks", "page_cache_index", "page_cache_pfn",
                 "swap_slots", "swap_counts", "swap_data"):
        dt = _ARRAY_DTYPES[name]
        sections.append((name, dt, [len(arrays[name])], _le(arrays[name], dt).tobytes()))
    sections.append(("data_pfns", "<i8", [len(pfns)], pfns.tobytes()))

    def frames():
        for i in range(0, len(pfns), _FRAME_CHUNK):
            yield phys.read_frames(pfns[i:i + _FRAME_CHUNK]).tobytes()
    sections.append(("frames", "|u1", [len(pfns), PAGE_SIZE], frames()))
    codecs = {name: codec for name, _, _, _ in sections}
    if compress and len(pfns):
        # page tables compress ~20x, random user data not at all (and zlib would spend
        # ~10 s per GiB on it): a sample of frames decides the codec of the frames section
        sample = phys.read_frames(pfns[np.unique(np.linspace(0, len(pfns) - 1, 64).astype(np.int64))])
        if len(zlib.compress(sample.tobytes(), _ZLIB_LEVEL)) > 0.7 * len(sample):
            codecs["frames"] = "none"

    big = (1 << 64) - 1
    template = _header([{"name": n, "offset": big, "length": big, "codec": codec,
                         "raw_length": big, "dtype": d, "shape": [big] * len(s),
                         "sha256": "0" * 64} for n, d, s, _ in sections], big)
    hlen = len(template)
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".mmemu-snapshot-", dir=d)
    umask = os.umask(0o22)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)        # as open(path, "wb") would create it
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * (PREAMBLE_SIZE + hlen))
            pos = PREAMBLE_SIZE + hlen
            recs = []
            for name, dt, shape, payload in sections:
                h = hashlib.sha256()
                comp = zlib.compressobj(_ZLIB_LEVEL) if codecs[name] == "zlib" else None
                raw = stored = 0
                for chunk in ([payload] if isinstance(payload, bytes) else payload):
                    raw += len(chunk)
                    out = comp.compress(chunk) if comp else chunk
                    h.update(out)
                    f.write(out)
                    stored += len(out)
                if comp:
                    out = comp.flush()
                    h.update(out)
                    f.write(out)
                    stored += len(out)
                recs.append({"name": name, "offset": pos, "length": stored, "codec": codecs[name],
                             "raw_length": raw, "dtype": dt, "shape": shape,
                             "sha256": h.hexdigest()})
                pos += stored
            header = _header(recs, pos)
            header += b" " * (hlen - len(header))
            f.seek(0)
            f.write(_PRE.pack(MAGIC, FORMAT_VERSION, 0, hlen, hashlib.sha256(header).digest()))
            f.write(header)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _header(sections, file_size) -> bytes:
    from . import __version__
    return json.dumps({"format": "mmemu-snapshot", "version": FORMAT_VERSION,
                       "mmemu_version": __version__, "file_size": file_size,
                       "sections": sections}, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- load
def _bad(msg):
    return SnapshotError(f"bad snapshot: {msg}")


def _int(d, key, where, lo=None, hi=None):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, int) or isinstance(v, bool):
        raise _bad(f"{where}: {key!r} must be an integer, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise _bad(f"{where}: {key!r} = {v} out of range")
    return v


def _typed(d, key, types, where):
    v = d.get(key) if isinstance(d, dict) else None
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (
            types if isinstance(types, tuple) else (types,))):
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise _bad(f"{where}: {key!r} must be {names}, got {type(v).__name__}")
    return v


def _read_header(f, size):
    """Check the preamble and header; return the header dict."""
    pre = f.read(PREAMBLE_SIZE)
    if size == 0:
        raise SnapshotError("not an mmemu snapshot: the file is empty")
    if pre[:len(MAGIC)] != MAGIC[:len(pre)]:
        raise SnapshotError(f"not an mmemu snapshot: the file starts with {pre[:10]!r}, "
                            f"not the magic {MAGIC!r}")
    if len(pre) < PREAMBLE_SIZE:
        raise SnapshotError(f"truncated snapshot: the file ends at byte {size}, inside the "
                            f"{PREAMBLE_SIZE}-byte preamble")
    magic, version, flags, hlen, hsum = _PRE.unpack(pre)
    if version not in READABLE_VERSIONS:
        raise SnapshotError(f"unsupported snapshot format version {version} (this mmemu "
                            f"reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    if flags != 0:
        raise SnapshotError(f"unsupported snapshot flags {flags:#x}")
    if PREAMBLE_SIZE + hlen > size:
        raise SnapshotError(f"truncated snapshot: the file ends at byte {size}, inside the "
                            f"header (bytes {PREAMBLE_SIZE}-{PREAMBLE_SIZE + hlen})")
    raw = f.read(hlen)
    if hashlib.sha256(raw).digest() != hsum:
        raise SnapshotError(f"checksum mismatch in the header (bytes {PREAMBLE_SIZE}-"
                            f"{PREAMBLE_SIZE + hlen}): the file is corrupted")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != "mmemu-snapshot":
        raise _bad("header does not describe an mmemu snapshot")
    if header.get("version") != version:
        raise _bad(f"header version {header.get('version')!r} differs from the preamble's {version}")
    fsize = _int(header, "file_size", "header", 0)
    secs = _typed(header, "sections", list, "header")
    pos = PREAMBLE_SIZE + hlen
    names = set()
    for i, s in enumerate(secs):
        where = f"header section {i}"
        name = _typed(s, "name", str, where)
        where = f"section {name!r}"
        if name in names:
            raise _bad(f"{where} appears twice")
        names.add(name)
        off = _int(s, "offset", where, 0)
        length = _int(s, "length", where, 0)
        _int(s, "raw_length", where, 0)
        if off != pos:
            raise _bad(f"{where} starts at byte {off}, expected {pos}")
        if _typed(s, "codec", str, where) not in ("zlib", "none"):
            raise _bad(f"{where}: unknown codec {s['codec']!r}")
        _typed(s, "dtype", str, where)
        shape = _typed(s, "shape", list, where)
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
            raise _bad(f"{where}: bad shape {shape!r}")
        sha = _typed(s, "sha256", str, where)
        if len(sha) != 64:
            raise _bad(f"{where}: bad sha256")
        pos += length
    if version >= 2:
        want = {"state", "free_data", "free_table", "free_blocks", "page_cache_index",
                "page_cache_pfn", "data_pfns", "frames", "swap_slots", "swap_counts", "swap_data"}
    else:
        want = {"state", "free_data", "free_table", "page_caches", "data_pfns", "frames",
                "swap_map", "swap_data"}
    if not want <= names:
        raise _bad(f"missing sections: {', '.join(sorted(want - names))}")
    if pos != fsize:
        raise _bad(f"sections end at byte {pos}, header says the file has {fsize} bytes")
    if size < fsize:
        for s in secs:
            if s["offset"] <= size < s["offset"] + s["length"]:
                raise SnapshotError(f"truncated snapshot: the file ends at byte {size}, inside "
                                    f"section {s['name']!r} (bytes {s['offset']}-"
                                    f"{s['offset'] + s['length']}); expected {fsize} bytes")
    if size != fsize:
        raise SnapshotError(f"bad snapshot: {size - fsize} bytes after the end of the "
                            f"snapshot ({fsize} bytes)")
    return header


def _verify(f, sec):
    """Stream one section's stored bytes through SHA-256."""
    f.seek(sec["offset"])
    h = hashlib.sha256()
    left = sec["length"]
    while left:
        b = f.read(min(_IO_CHUNK, left))
        if not b:
            raise SnapshotError(f"truncated snapshot: file shrank while reading section "
                                f"{sec['name']!r}")
        h.update(b)
        left -= len(b)
    if h.hexdigest() != sec["sha256"]:
        raise SnapshotError(f"checksum mismatch in section {sec['name']!r} (bytes "
                            f"{sec['offset']}-{sec['offset'] + sec['length']}): the file is "
                            f"corrupted")


def _chunks(f, sec, block=1 << 24):
    """The decoded bytes of a section, in pieces of at most ``block`` bytes."""
    f.seek(sec["offset"])
    left = sec["length"]
    total = 0
    d = zlib.decompressobj() if sec["codec"] == "zlib" else None
    try:
        while left:
            buf = f.read(min(_IO_CHUNK, left))
            left -= len(buf)
            if d is None:
                total += len(buf)
                yield buf
                continue
            while buf:
                out = d.decompress(buf, block)
                buf = d.unconsumed_tail
                total += len(out)
                if total > sec["raw_length"]:
                    raise _bad(f"section {sec['name']!r} decodes to more than its "
                               f"{sec['raw_length']} bytes")
                yield out
        if d is not None:
            out = d.flush()
            total += len(out)
            yield out
            if not d.eof or d.unused_data:
                raise _bad(f"section {sec['name']!r}: the compressed stream is malformed")
    except zlib.error as e:
        raise _bad(f"section {sec['name']!r}: {e}") from None
    if total != sec["raw_length"]:
        raise _bad(f"section {sec['name']!r} decodes to {total} bytes, expected "
                   f"{sec['raw_length']}")


def _array(f, sec, dtype=None):
    dt = sec["dtype"]
    if dtype is not None and dt != dtype:
        raise _bad(f"section {sec['name']!r} has dtype {dt}, expected {dtype}")
    try:
        dtype = np.dtype(dt)
    except TypeError:
        raise _bad(f"section {sec['name']!r}: unknown dtype {dt!r}") from None
    if dtype.kind not in "iu" or dtype.itemsize not in (1, 2, 4, 8):
        raise _bad(f"section {sec['name']!r}: dtype {dt!r} is not an integer type")
    n = int(np.prod(sec["shape"], dtype=np.int64)) if sec["shape"] else 1
    if len(sec["shape"]) != 1 or n * dtype.itemsize != sec["raw_length"]:
        raise _bad(f"section {sec['name']!r}: shape {sec['shape']} and dtype {dt} do not "
                   f"match its {sec['raw_length']} bytes")
    data = b"".join(_chunks(f, sec))
    return np.frombuffer(data, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def load(path, cls=None, check: bool = False):
    """Read a snapshot written by save(); return a new Machine (or cls instance)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = _read_header(f, size)
        secs = {s["name"]: s for s in header["sections"]}
        for s in header["sections"]:
            _verify(f, s)
        # every byte is what save() wrote; decode and build
        try:
            state = json.loads(b"".join(_chunks(f, secs["state"])).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            if isinstance(e, SnapshotError):
                raise
            raise _bad(f"state is not JSON: {e}") from None
        arrays = {}
        for name, s in secs.items():
            if name.startswith("frame."):
                arrays[name] = _array(f, s)
            elif name in _ARRAY_DTYPES:
                arrays[name] = _array(f, s, _ARRAY_DTYPES[name])
        if header["version"] == 1:
            _upgrade_v1(state, arrays)
        fs = secs["frames"]
        if fs["shape"] != [len(arrays["data_pfns"]), PAGE_SIZE] or \
                fs["raw_length"] != len(arrays["data_pfns"]) * PAGE_SIZE:
            raise _bad("section 'frames' does not match 'data_pfns'")
        partial = []
        try:
            return _build(f, state, arrays, fs, cls, check, partial)
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            # the half-built machine is unreachable; break its reference cycles (processes
            # point at it and at each other) so its host mappings go now, not at a later gc
            for obj in partial:
                obj.__dict__.clear()
            if isinstance(e, SnapshotError):
                raise
            raise _bad(f"inconsistent contents: {type(e).__name__}: {e}") from None


def _upgrade_v1(state, arrays):
    """A version-1 snapshot as version 2: its free stacks are the per-cpu-pages lists (with
    a new machine's limits; longer ones shrink at their next free), its never-used frames
    the gap, and no buddy free list has a block."""
    scalars = state.get("physmem") if isinstance(state, dict) else None
    if isinstance(scalars, dict):
        n = scalars.get("nframes")
        scalars["gap"] = [scalars.get("data_hwm"), scalars.get("table_lwm")]
        scalars["pcp"] = list(default_pcp_limits(n)) if isinstance(n, int) and n > 0 else None
        scalars["free_blocks"] = [0] * (2 * (MAX_ORDER + 1))
    arrays["free_blocks"] = np.zeros(0, np.int64)
    # dense page caches (-1 for a hole) -> the cached pages, in index order
    dense = arrays.pop("page_caches")
    index, pfns, pos = [], [], 0
    for b in (state.get("backings") or []) if isinstance(state, dict) else []:
        if isinstance(b, dict) and isinstance(b.get("cache"), list) and len(b["cache"]) == 2 \
                and all(isinstance(x, int) and x >= 0 for x in b["cache"]):
            off, n = b["cache"]
            part = dense[off:off + n]
            held = np.flatnonzero(part >= 0)
            index.append(held)
            pfns.append(part[held])
            b["cache"] = [pos, len(held)]
            pos += len(held)
        if isinstance(b, dict) and b.get("kind") == "file":
            b.setdefault("swapbacked", False)       # version 1 had no tmpfs files
    arrays["page_cache_index"] = np.concatenate(index) if index else np.zeros(0, np.int64)
    arrays["page_cache_pfn"] = np.concatenate(pfns) if pfns else np.zeros(0, np.int64)
    # a swap device sized by use: every slot's count -> the slots in use, on a device of
    # the size it had (SwapTotal as it was)
    smap = arrays.pop("swap_map")
    arrays["swap_slots"] = np.flatnonzero(smap > 0).astype(np.int64)
    arrays["swap_counts"] = smap[arrays["swap_slots"]].astype(np.int32)
    ms = state.get("machine") if isinstance(state, dict) else None
    if isinstance(ms, dict) and isinstance(ms.get("memory"), int) and "swap" not in ms:
        from .swap import MAX_SWAP
        ms["swap"] = min(len(smap) * PAGE_SIZE, MAX_SWAP)   # SwapTotal as it was


def _build(f, state, arrays, frames_sec, cls, check, partial):
    from .check import InvariantError
    from .machine import Machine, ShmemFile
    from .mm import MM
    from .process import Process
    if cls is None:
        cls = Machine
    if not isinstance(state, dict):
        raise _bad("state is not an object")
    ms = _typed(state, "machine", dict, "state")
    scalars = _typed(state, "physmem", dict, "state")
    nframes = _int(scalars, "nframes", "physmem", 16, 1 << 40)
    memory = _int(ms, "memory", "machine", 0)
    if memory != nframes * PAGE_SIZE:
        raise _bad(f"memory {memory} bytes but {nframes} frames")
    for k in ("data_hwm", "table_lwm", "zero_pfn", "nr_free", "nr_anon_mapped",
              "nr_file_mapped", "nr_shmem", "nr_file_pages", "nr_pagetable", "cow_eager",
              "next_mm_id", "alloc_calls", "alloc_failed"):
        _int(scalars, k, "physmem")
    ev = _typed(scalars, "events", list, "physmem")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in ev):
        raise _bad("physmem: events must be integers")
    if len(ev) > NR_EVENTS and not any(ev[NR_EVENTS:]):
        scalars["events"] = ev[:NR_EVENTS]     # files written with 32 slots, 2 never used

    m = cls.__new__(cls)
    m._lock = new_lock()
    partial.append(m)
    m.memory = memory
    m.phys = phys = PhysMem(nframes)
    phys.restore_state(scalars, arrays)
    pfns = arrays["data_pfns"]
    d1, t0 = scalars["data_hwm"], scalars["table_lwm"]
    if len(pfns) and (np.any(pfns < 0) or np.any(pfns >= nframes)
                      or np.any((pfns >= d1) & (pfns < t0))):
        raise _bad("data_pfns holds frames outside the used ranges")
    buf, done = bytearray(), 0
    for piece in _chunks(f, frames_sec, _FRAME_CHUNK * PAGE_SIZE):
        if not buf and len(piece) % PAGE_SIZE == 0:
            k = len(piece) // PAGE_SIZE
            phys._write_frames(pfns[done:done + k], piece)
            done += k
            continue
        buf += piece
        k = len(buf) // PAGE_SIZE
        if k:
            phys._write_frames(pfns[done:done + k], bytes(buf[:k * PAGE_SIZE]))
            del buf[:k * PAGE_SIZE]
            done += k
    if buf:
        raise _bad("section 'frames' is not a whole number of frames")
    m.cow_pgtable = bool(_typed(ms, "cow_pgtable", bool, "machine"))
    m.max_map_count = _int(ms, "max_map_count", "machine", 0)
    m._next_pid = _int(ms, "next_pid", "machine", 1)
    m._inodes = itertools.count(_int(ms, "next_inode", "machine", 0))
    m._procs, m._files = {}, {}

    cindex, cpfn = arrays["page_cache_index"], arrays["page_cache_pfn"]
    if len(cindex) != len(cpfn):
        raise _bad("page_cache_index and page_cache_pfn differ in length")
    if len(cpfn) and (np.any(cpfn < 0) or np.any(cpfn >= nframes)):
        raise _bad("a page cache holds a frame outside memory")
    backings = []
    for i, b in enumerate(_typed(state, "backings", list, "state")):
        where = f"backing object {i}"
        off, n = _typed(b, "cache", list, where)
        if not (isinstance(off, int) and isinstance(n, int) and 0 <= off and 0 <= n
                and off + n <= len(cindex)):
            raise _bad(f"{where}: page cache outside the page cache sections")
        kind = _typed(b, "kind", str, where)
        if kind == "file":
            obj = File(m, _typed(b, "path", str, where), _int(b, "inode", where),
                       _typed(b, "writable", bool, where), _typed(b, "swapbacked", bool, where))
            obj.size = _int(b, "size", where, 0, MAX_LFS_FILESIZE)
            obj.unlinked = _typed(b, "unlinked", bool, where)
        elif kind == "shmem":
            obj = ShmemFile(_int(b, "npages", where, 0, 1 << 52), _int(b, "inode", where))
            obj.name = _typed(b, "name", str, where)
        else:
            raise _bad(f"{where}: unknown kind {kind!r}")
        dev = _typed(b, "dev", list, where)
        if len(dev) != 2 or not all(isinstance(x, int) for x in dev):
            raise _bad(f"{where}: 'dev' must be two integers")
        obj.dev = (dev[0], dev[1])
        _load_cache(obj, cindex[off:off + n], cpfn[off:off + n], where)
        obj.users = 0
        backings.append((obj, _int(b, "users", where, 0)))
    m._backings = {obj for obj, _ in backings}
    for i in _typed(state, "files", list, "state"):
        if not isinstance(i, int) or not 0 <= i < len(backings):
            raise _bad(f"files: bad backing index {i!r}")
        obj = backings[i][0]
        if not isinstance(obj, File) or obj.unlinked or obj.path in m._files:
            raise _bad(f"files: backing {i} is not a named file")
        m._files[obj.path] = obj
    anon = _typed(state, "anon_vmas", list, "state")
    if not all(isinstance(x, bool) for x in anon):
        raise _bad("anon_vmas must be booleans")
    anon = [AnonVma(forked=x) for x in anon]

    procs = _typed(state, "processes", list, "state")
    built = []
    for i, pr in enumerate(procs):
        where = f"process {i}"
        p = Process.__new__(Process)
        partial.append(p)
        p.machine = m
        p.pid = _int(pr, "pid", where, 1)
        if p.pid in m._procs:
            raise _bad(f"pid {p.pid} appears twice")
        p.alive = True
        if "imported" in pr:
            _restore_import(p, _typed(pr, "imported", dict, where), where)
        p.parent = None
        p.children = []
        ms_ = _typed(pr, "mm", dict, where)
        mm = MM.__new__(MM)
        mm.machine = m
        mm.core = MMCore(phys)
        core = _typed(ms_, "core", dict, where)
        for k in ("id", "pgd", "pgtables_bytes"):
            _int(core, k, where + " core")
        rss = _typed(core, "rss", list, where + " core")
        if not all(isinstance(x, int) for x in rss):
            raise _bad(f"{where}: rss must be integers")
        if not 1 <= core["id"] <= scalars["next_mm_id"]:
            raise _bad(f"{where}: mm id {core['id']} beyond the id counter")
        mm.core.restore_state(core)
        if mm.core.pgd < 0:
            raise _bad(f"{where}: a live process without a PGD")
        mm.cow_pgtable = _typed(ms_, "cow_pgtable", bool, where)
        for k in _MM_INTS:
            setattr(mm, k, _int(ms_, k, where))
        mm.vmas = []
        prev_end = 0
        for v in _typed(ms_, "vmas", list, where):
            if not isinstance(v, list) or len(v) != 8:
                raise _bad(f"{where}: a VMA record must be a list of 8")
            start, end, flags, pgoff, bi, ai, name, prot = v
            if not all(isinstance(x, int) and not isinstance(x, bool)
                       for x in (start, end, flags, pgoff, prot)):
                raise _bad(f"{where}: VMA fields must be integers")
            if not (prev_end <= start < end <= 1 << 47) or (start | end) & (PAGE_SIZE - 1):
                raise _bad(f"{where}: bad or overlapping VMA {start:#x}-{end:#x}")
            if not (0 <= pgoff < 1 << 52 and 0 <= flags < 1 << 64 and 0 <= prot < 1 << 64):
                raise _bad(f"{where}: VMA {start:#x}-{end:#x} has a field out of range")
            prev_end = end
            if name is not None and not isinstance(name, str):
                raise _bad(f"{where}: VMA name must be a string")
            backing = None
            if bi is not None:
                if not isinstance(bi, int) or not 0 <= bi < len(backings):
                    raise _bad(f"{where}: VMA backing index {bi!r} out of range")
                backing = backings[bi][0]
                backing.users += 1
            av = None
            if ai is not None:
                if not isinstance(ai, int) or not 0 <= ai < len(anon):
                    raise _bad(f"{where}: anon_vma index {ai!r} out of range")
                av = anon[ai]
            vma = VMA(start, end, flags, pgoff, backing, av, name)
            vma.page_prot = prot
            mm.vmas.append(vma)
        p.mm = mm
        m._procs[p.pid] = p
        built.append((p, pr))
    for p, pr in built:
        parent = pr.get("parent")
        if parent is not None:
            if parent not in m._procs:
                raise _bad(f"process {p.pid}: parent {parent!r} is not a live process")
            p.parent = m._procs[parent]
        for c in _typed(pr, "children", list, f"process {p.pid}"):
            if c not in m._procs:
                raise _bad(f"process {p.pid}: child {c!r} is not a live process")
            p.children.append(m._procs[c])
    for p in m._procs.values():
        for c in p.children:
            if c.parent is not p:
                raise _bad(f"process {c.pid} is a child of {p.pid} but names another parent")
    for obj, users in backings:
        if obj.users != users:
            raise _bad(f"backing object (inode {obj.inode}) has {users} users recorded, "
                       f"{obj.users} VMAs map it")
    phys._set_next_mm_id(scalars["next_mm_id"])
    _build_swap(m, ms, arrays)
    for p in m._procs.values():
        p.mm.core.validate_tables()
    if check:
        try:
            m.check()
        except InvariantError as e:
            raise SnapshotError(f"the loaded machine fails Machine.check(): {e}") from None
    return m


def _load_cache(obj, index, pfns, where):
    """Fill obj's (empty) page cache: indexes increasing and inside the object."""
    if len(index) and (index[0] < 0 or index[-1] >= obj.npages or np.any(np.diff(index) <= 0)):
        raise _bad(f"{where}: page cache indexes not increasing inside the object's "
                   f"{obj.npages} pages")
    for i, p in zip(index.tolist(), pfns.tolist()):
        if not obj.cache.store(i, p):
            raise _bad(f"{where}: no host memory for the page cache")


def _build_swap(m, ms, arrays):
    """Re-create the swap device (mmemu.swap) from the machine's swap size and the
    swap_slots, swap_counts and swap_data sections."""
    from .swap import MAX_SWAP, attach
    m.swap = _int(ms, "swap", "machine", 0, MAX_SWAP)
    attach(m, m.swap)
    slots, counts, data = arrays["swap_slots"], arrays["swap_counts"], arrays["swap_data"]
    if len(counts) != len(slots) or len(data) != len(slots) * PAGE_SIZE:
        raise _bad(f"swap sections disagree: {len(slots)} slots, {len(counts)} counts, "
                   f"{len(data)} bytes of data")
    _swap.restore_slots(m.phys, slots, counts, data.reshape(-1, PAGE_SIZE))


def _restore_import(p, rec, where):
    """A process made by mmemu.procfs.import_process: its source pid and ImportReport."""
    from .procfs import ImportReport
    p.imported_from = _int(rec, "from", where + " import", 0)
    report = _typed(rec, "report", dict, where + " import")
    try:
        p.import_report = ImportReport(**report)
    except TypeError as e:
        raise _bad(f"{where}: bad import report: {e}") from None
