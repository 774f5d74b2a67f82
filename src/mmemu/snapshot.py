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

This module is the file format only: each stateful class saves and restores its own state
(``Machine.dump_state`` / ``Machine.from_state``, which call those of PhysMem, MMCore, the
swap device, File, ShmemFile, Process, MM and VMA; mmemu.state reads their fields back).

``load`` trusts nothing in the file. Before it builds anything it checks the preamble, the
header checksum, the header, the file size and every section's checksum, and that no
section claims more bytes than its stored bytes can decode to (zlib expands at most
1032:1; the JSON state, which costs the host up to ~20 bytes a byte to parse, at most what
save's zlib level 1 gives, 256:1). Once the state names the machine's size, every array
section is held to the entries that machine can have (per-frame arrays: one per frame ever
used; free lists, page caches, data_pfns: one per frame; swap slots in use: 512 per frame)
before it is decoded, in bounded pieces into one allocation; frame contents and swap data
are streamed into place, and version 1's dense page caches and swap map are read in
pieces, keeping only what they hold. The classes then check their own state and the
references between objects (``from_state``), and the invariant checker runs on the result
(``Machine.check``: it proves the page tables safe to walk before it walks them). Anything
wrong raises SnapshotError saying what -- never MemoryError, RecursionError, an abort or a
machine that fails later -- and the half-built machine is torn down at once.
No pickle: a foreign file cannot run code.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zlib

import numpy as np

from ._core.physmem import MAX_FRAMES, MAX_ORDER, default_pcp_limits
from .errors import SnapshotError
from .state import bad, field, integer, is_int, show
from .swap import MAX_SWAP
from .vma import PAGE_SIZE

MAGIC = b"\x89MMEMU\r\n\x1a\n"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)                  # version 1: no buddy free lists
_PRE = struct.Struct("<10sIIQ32s")          # magic, version, flags, header length, SHA-256
PREAMBLE_SIZE = _PRE.size                   # 58
_FRAME_CHUNK = 4096                         # frames (or swap slots) read or written at a time
_IO_CHUNK = 1 << 22
_ZLIB_LEVEL = 1
_ZLIB_MAX_RATIO = 1032                      # deflate's best: 258 bytes from 2 bits
# The JSON state, parsed whole, costs the host up to ~20 bytes per byte ("[]," -> a list):
# it may decode to no more than save's zlib level 1 ever gives (at most ~230:1, on zeros).
_STATE_MAX_RATIO = 256
PREAMBLE, ZLIB_MAX_RATIO = _PRE, _ZLIB_MAX_RATIO    # shared with mmemu.trace.format

_ARRAY_DTYPES = {"free_data": "<i8", "free_table": "<i8", "free_blocks": "<i8",
                 "page_cache_index": "<i8", "page_cache_pfn": "<i8", "data_pfns": "<i8",
                 "swap_slots": "<i8", "swap_counts": "<i4", "swap_data": "|u1",
                 "page_caches": "<i8", "swap_map": "<i4"}        # the last two: version 1
_STREAMED = {"swap_data", "page_caches", "swap_map"}    # read in pieces, never whole


# ---------------------------------------------------------------------------- save
def _le(a: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.dtype(dtype))


def save(machine, path, compress: bool = True) -> None:
    """Write a snapshot of machine to path (atomically: a temporary file is renamed)."""
    state, arrays = machine.dump_state()
    codec = "zlib" if compress else "none"
    phys, device = machine.phys, machine.swap_device
    pfns = _le(arrays.pop("data_pfns"), "<i8")
    slots = arrays["swap_slots"]
    # (name, dtype, shape, payload: bytes or a generator of bytes)
    sections = [("state", "json", [], json.dumps(state, sort_keys=True,
                                                  separators=(",", ":")).encode())]
    for name in sorted(k for k in arrays if k.startswith("frame.")):
        a = arrays[name]
        dt = a.dtype.newbyteorder("<").str
        sections.append((name, dt, [len(a)], _le(a, dt).tobytes()))
    for name in ("free_data", "free_table", "free_blocks", "page_cache_index", "page_cache_pfn",
                 "swap_slots", "swap_counts"):
        dt = _ARRAY_DTYPES[name]
        sections.append((name, dt, [len(arrays[name])], _le(arrays[name], dt).tobytes()))

    def swap_data():
        for i in range(0, len(slots), _FRAME_CHUNK):
            yield device.read_slots(slots[i:i + _FRAME_CHUNK]).tobytes()
    sections.append(("swap_data", "|u1", [len(slots) * PAGE_SIZE], swap_data()))
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
def load(path, cls=None):
    """Read a snapshot written by save(); return a new Machine (or cls instance) built and
    checked by cls.from_state. SnapshotError for anything wrong in the file."""
    from .machine import Machine
    with open(path, "rb") as f:
        try:
            return _load(f, Machine if cls is None else cls)
        except MemoryError:
            raise bad("the machine it describes does not fit in this host's memory") from None
        except RecursionError:
            raise bad("the state is nested too deeply") from None
        except (KeyError, TypeError, ValueError, IndexError, OverflowError) as e:
            if isinstance(e, SnapshotError):
                raise
            raise bad(f"inconsistent contents: {type(e).__name__}: {show(str(e))}") from None


def _load(f, cls):
    size = os.fstat(f.fileno()).st_size
    header = _read_header(f, size)
    secs = {s["name"]: s for s in header["sections"]}
    for s in header["sections"]:
        _verify(f, s)
    # every byte is what save() wrote: decode no more than the machine can hold
    st = secs["state"]
    if st["codec"] == "zlib" and st["raw_length"] > _STATE_MAX_RATIO * st["length"] + (1 << 20):
        raise bad(f"section 'state': {st['length']} stored bytes decoding to {st['raw_length']}: "
                  f"more than a snapshot's state compresses (at most {_STATE_MAX_RATIO}:1)")
    try:
        text = b"".join(_chunks(f, secs["state"])).decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"state is not JSON: {e}") from None
    state = _json(text, "state")
    caps = _caps(state)
    arrays = {}
    for name, s in secs.items():
        if name.startswith("frame."):
            arrays[name] = _array(f, s, None, caps["used"])
        elif name in _ARRAY_DTYPES and name not in _STREAMED:
            arrays[name] = _array(f, s, _ARRAY_DTYPES[name], caps.get(name, caps["frames"]))
    fs = secs["frames"]
    if fs["shape"] != [len(arrays["data_pfns"]), PAGE_SIZE] or \
            fs["raw_length"] != len(arrays["data_pfns"]) * PAGE_SIZE:
        raise bad("section 'frames' does not match 'data_pfns'")
    if header["version"] == 1:
        swap_data = _upgrade_v1(f, secs, state, arrays, caps)
    else:
        sd = secs["swap_data"]
        if sd["shape"] != [len(arrays["swap_slots"]) * PAGE_SIZE] or \
                sd["raw_length"] != len(arrays["swap_slots"]) * PAGE_SIZE:
            raise bad("section 'swap_data' does not match 'swap_slots'")
        swap_data = _whole_rows(_chunks(f, sd, _FRAME_CHUNK * PAGE_SIZE))
    frames = _whole_rows(_chunks(f, fs, _FRAME_CHUNK * PAGE_SIZE))
    return cls.from_state(state, arrays, frames, swap_data)


def _json(text: str, what: str):
    """The JSON of the header or the state; SnapshotError if it is not JSON or nests deeper
    than the interpreter's recursion limit (no value is walked recursively after it)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise bad(f"{what} is nested too deeply") from None
    except ValueError as e:
        raise bad(f"{what} is not JSON: {show(str(e))}") from None


def _caps(state) -> dict:
    """The most entries each array section can hold, from the machine the state describes:
    no section is decoded or allocated beyond them. The per-frame arrays cover the frames
    ever used (its used ranges); every free list, page cache and data_pfns holds at most
    one entry per frame; a swap slot in use is named by a swap entry, in a PTE table: at
    most 512 per frame (the device's own bounds are its restore's to check)."""
    if not isinstance(state, dict):
        raise bad("state is not an object")
    scalars = field(state, "physmem", dict, "state")
    n = integer(scalars, "nframes", "physmem", 16, MAX_FRAMES)
    d1, t0 = scalars.get("data_hwm"), scalars.get("table_lwm")
    used = d1 + n - t0 if is_int(d1) and is_int(t0) and 0 <= d1 <= t0 <= n else n
    field(state, "machine", dict, "state")
    return {"frames": n, "used": used, "swap_slots": 512 * n, "swap_counts": 512 * n}


def _check_shape(sec, dtype: str):
    """The dtype and entry count of a 1-d integer section (its shape agrees with its raw
    length)."""
    dt = sec["dtype"]
    if dtype is not None and dt != dtype:
        raise bad(f"section {sec['name']!r} has dtype {show(dt)}, expected {dtype}")
    try:
        np_dtype = np.dtype(dt)
    except TypeError:
        raise bad(f"section {sec['name']!r}: unknown dtype {show(dt)}") from None
    if np_dtype.kind not in "iu" or np_dtype.itemsize not in (1, 2, 4, 8):
        raise bad(f"section {sec['name']!r}: dtype {show(dt)} is not an integer type")
    shape = sec["shape"]
    if len(shape) != 1 or shape[0] * np_dtype.itemsize != sec["raw_length"]:
        raise bad(f"section {sec['name']!r}: shape {show(shape)} and dtype {dt} do not "
                  f"match its {sec['raw_length']} bytes")
    return np_dtype, shape[0]


def _array(f, sec, dtype, cap: int) -> np.ndarray:
    """A whole section (1-d integers, at most cap of them) as a native array, decoded in
    bounded pieces into its one allocation."""
    np_dtype, n = _check_shape(sec, dtype)
    if n > cap:
        raise bad(f"section {sec['name']!r}: {n} entries, more than the machine can have ({cap})")
    out = np.empty(n, dtype=np_dtype)
    raw, pos = out.view(np.uint8), 0
    for piece in _chunks(f, sec):
        raw[pos:pos + len(piece)] = np.frombuffer(piece, np.uint8)
        pos += len(piece)
    return out.astype(np_dtype.newbyteorder("="), copy=False)


def _held(f, sec, dtype: str, keep, cap: int):
    """(positions, values) of the entries of a dense 1-d section for which keep(values) is
    true, read in pieces; more than cap of them is an error."""
    np_dtype, n = _check_shape(sec, dtype)
    pos, vals, start, count, tail = [], [], 0, 0, b""
    for piece in _chunks(f, sec, 1 << 22):
        piece = tail + piece
        whole = len(piece) // np_dtype.itemsize * np_dtype.itemsize
        a = np.frombuffer(piece[:whole], np_dtype)
        tail = piece[whole:]
        held = np.flatnonzero(keep(a))
        count += len(held)
        if count > cap:
            raise bad(f"section {sec['name']!r} holds more than the machine can have ({cap})")
        pos.append(held + start)
        vals.append(a[held].astype(np_dtype.newbyteorder("=")))
        start += len(a)
    if not pos:
        return np.zeros(0, np.int64), np.zeros(0, np_dtype.newbyteorder("="))
    return np.concatenate(pos).astype(np.int64), np.concatenate(vals)


def _whole_rows(pieces):
    """Pieces of decoded bytes regrouped at 4096-byte boundaries (frames, swap slots)."""
    buf = bytearray()
    for piece in pieces:
        if not buf and len(piece) % PAGE_SIZE == 0:
            yield piece
            continue
        buf += piece
        k = len(buf) // PAGE_SIZE * PAGE_SIZE
        if k:
            yield bytes(buf[:k])
            del buf[:k]
    if buf:
        raise bad("a section of 4096-byte rows ends inside a row")


def _upgrade_v1(f, secs, state, arrays, caps):
    """A version-1 snapshot as version 2 (state and arrays are changed in place); returns
    the data of the swap slots in use (pieces of whole slots).

    Its two free stacks are the per-cpu-pages lists (with a new machine's limits; longer
    ones shrink at their next free), its never-used frames the gap, and no buddy free list
    has a block. Its dense page caches (-1 for a hole) give the pages they hold, its dense
    swap map the slots in use (its swap data holds theirs) on a device of the size it had
    (SwapTotal as it was); both are read in pieces, and a hole or an unused slot costs no
    host memory."""
    scalars, ms = state["physmem"], state["machine"]
    scalars["gap"] = [scalars.get("data_hwm"), scalars.get("table_lwm")]
    scalars["pcp"] = list(default_pcp_limits(scalars["nframes"]))
    scalars["free_blocks"] = [0] * (2 * (MAX_ORDER + 1))
    arrays["free_blocks"] = np.zeros(0, np.int64)
    at, vals = _held(f, secs["page_caches"], "<i8", lambda a: a >= 0, caps["frames"])
    index, pfns, pos = [], [], 0
    for b in state.get("backings") if isinstance(state.get("backings"), list) else []:
        rng = b.get("cache") if isinstance(b, dict) else None
        if isinstance(rng, list) and len(rng) == 2 and all(is_int(x) and x >= 0 for x in rng):
            lo, hi = np.searchsorted(at, [rng[0], rng[0] + rng[1]])
            index.append(at[lo:hi] - rng[0])
            pfns.append(vals[lo:hi])
            b["cache"] = [pos, int(hi - lo)]
            pos += int(hi - lo)
        if isinstance(b, dict) and b.get("kind") == "file":
            b.setdefault("swapbacked", False)       # version 1 had no tmpfs files
    arrays["page_cache_index"] = np.concatenate(index) if index else np.zeros(0, np.int64)
    arrays["page_cache_pfn"] = np.concatenate(pfns) if pfns else np.zeros(0, np.int64)
    slots, counts = _held(f, secs["swap_map"], "<i4", lambda a: a > 0, caps["swap_slots"])
    nslots = secs["swap_map"]["shape"][0]
    ms.setdefault("swap", min(nslots * PAGE_SIZE, MAX_SWAP))
    arrays["swap_slots"], arrays["swap_counts"] = slots, counts.astype(np.int32)
    sd = secs["swap_data"]
    if sd["raw_length"] != len(slots) * PAGE_SIZE:
        raise bad("section 'swap_data' does not match 'swap_map'")
    return _whole_rows(_chunks(f, sd, _FRAME_CHUNK * PAGE_SIZE))



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
        header = _json(raw.decode("utf-8"), "header")
    except UnicodeDecodeError as e:
        raise bad(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or header.get("format") != "mmemu-snapshot":
        raise bad("header does not describe an mmemu snapshot")
    if header.get("version") != version:
        raise bad(f"header version {header.get('version')!r} differs from the preamble's {version}")
    fsize = integer(header, "file_size", "header", 0)
    secs = field(header, "sections", list, "header")
    pos = PREAMBLE_SIZE + hlen
    names = set()
    for i, s in enumerate(secs):
        where = f"header section {i}"
        name = field(s, "name", str, where)
        where = f"section {name!r}"
        if name in names:
            raise bad(f"{where} appears twice")
        names.add(name)
        off = integer(s, "offset", where, 0)
        length = integer(s, "length", where, 0)
        raw = integer(s, "raw_length", where, 0)
        if off != pos:
            raise bad(f"{where} starts at byte {off}, expected {pos}")
        codec = field(s, "codec", str, where)
        if codec not in ("zlib", "none"):
            raise bad(f"{where}: unknown codec {show(codec)}")
        # what the stored bytes can describe: themselves, or what zlib expands them to
        # (1032:1 at most)
        if raw > (length if codec == "none" else _ZLIB_MAX_RATIO * length + 1024):
            raise bad(f"{where}: {length} stored bytes cannot hold {raw} bytes")
        field(s, "dtype", str, where)
        shape = field(s, "shape", list, where)
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
            raise bad(f"{where}: bad shape {shape!r}")
        sha = field(s, "sha256", str, where)
        if len(sha) != 64:
            raise bad(f"{where}: bad sha256")
        pos += length
    if version >= 2:
        want = {"state", "free_data", "free_table", "free_blocks", "page_cache_index",
                "page_cache_pfn", "data_pfns", "frames", "swap_slots", "swap_counts", "swap_data"}
    else:
        want = {"state", "free_data", "free_table", "page_caches", "data_pfns", "frames",
                "swap_map", "swap_data"}
    if not want <= names:
        raise bad(f"missing sections: {', '.join(sorted(want - names))}")
    if pos != fsize:
        raise bad(f"sections end at byte {pos}, header says the file has {fsize} bytes")
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
                if total > sec["raw_length"]:
                    raise bad(f"section {sec['name']!r} holds more than its "
                              f"{sec['raw_length']} bytes")
                yield buf
                continue
            while buf:
                out = d.decompress(buf, block)
                buf = d.unconsumed_tail
                total += len(out)
                if total > sec["raw_length"]:
                    raise bad(f"section {sec['name']!r} decodes to more than its "
                               f"{sec['raw_length']} bytes")
                yield out
        if d is not None:
            out = d.flush()
            total += len(out)
            yield out
            if not d.eof or d.unused_data:
                raise bad(f"section {sec['name']!r}: the compressed stream is malformed")
    except zlib.error as e:
        raise bad(f"section {sec['name']!r}: {e}") from None
    if total != sec["raw_length"]:
        raise bad(f"section {sec['name']!r} decodes to {total} bytes, expected "
                   f"{sec['raw_length']}")
