"""The trace file: a versioned, checksummed container of numpy structured arrays, built
with the same care as machine snapshots (mmemu.snapshot).

File layout (integers little-endian)::

    offset  size  field
    0       10    magic b"\\x89MMTRACE\\n\\x1a" (PNG-style: text-mode and 7-bit damage show)
    10      4     format version, uint32 (FORMAT_VERSION)
    14      4     flags, uint32, 0
    18      8     header length H, uint64
    26      32    SHA-256 of the H header bytes
    58      H     header: UTF-8 JSON {"format": "mmemu-trace", "version", "mmemu_version",
                  "file_size", "sections": [{"name", "offset", "length", "codec",
                  "raw_length", "dtype", "shape", "sha256"}, ...]}
    58+H    ...   the sections, back to back in header order, each zlib-compressed (or
                  stored raw) and checked by the SHA-256 of its stored bytes

Sections: ``meta`` (JSON), ``events``, ``checkpoints``, ``maps`` (structured arrays of the
dtypes in mmemu.trace.events, checked field by field), and optionally ``snapshot`` (an
mmemu machine snapshot file, the traced tree's starting state). ``load`` checks the
preamble, header, file size and every checksum before it decodes anything, bounds each
section by what its stored bytes can decode to, and returns nothing half-built: any
fault is a TraceError saying what.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zlib

import numpy as np

from ..snapshot import PREAMBLE, PREAMBLE_SIZE, ZLIB_MAX_RATIO
from .events import CHECKPOINT_DTYPE, EVENT_DTYPE, MAP_DTYPE


class TraceError(ValueError):
    """A trace file that cannot be read: not a trace, truncated, corrupted, reordered, or
    of a version this mmemu does not read."""


MAGIC = b"\x89MMTRACE\n\x1a"
FORMAT_VERSION = 1
_ARRAYS = {"events": EVENT_DTYPE, "checkpoints": CHECKPOINT_DTYPE, "maps": MAP_DTYPE}
_REQUIRED = ("meta", "events", "checkpoints", "maps")


def _descr(dt: np.dtype) -> list:
    return [[name, dt.fields[name][0].str] for name in dt.names]


def save(path, meta: dict, arrays: dict, snapshot: bytes = None, compress: bool = True) -> None:
    """Write a trace atomically: a temporary file in the same directory, fsynced, renamed."""
    sections = [("meta", "json", [], json.dumps(meta, sort_keys=True).encode())]
    for name, dt in _ARRAYS.items():
        a = np.ascontiguousarray(arrays[name], dtype=dt)
        sections.append((name, _descr(dt), [len(a)], a.tobytes()))
    if snapshot is not None:
        sections.append(("snapshot", "bytes", [len(snapshot)], bytes(snapshot)))
    stored = []
    for name, dtype, shape, raw in sections:
        data = zlib.compress(raw, 1) if compress else raw
        stored.append((name, dtype, shape, raw, data, "zlib" if compress else "none"))
    hdr, hlen = None, 0
    for _ in range(3):          # the header's length moves the offsets it lists
        pos = PREAMBLE_SIZE + hlen
        recs = []
        for name, dtype, shape, raw, data, codec in stored:
            recs.append({"name": name, "offset": pos, "length": len(data), "codec": codec,
                         "raw_length": len(raw), "dtype": dtype, "shape": shape,
                         "sha256": hashlib.sha256(data).hexdigest()})
            pos += len(data)
        from .. import __version__ as mmver
        hdr = json.dumps({"format": "mmemu-trace", "version": FORMAT_VERSION,
                          "mmemu_version": mmver, "file_size": pos, "sections": recs},
                         sort_keys=True).encode()
        if len(hdr) == hlen:
            break
        hlen = len(hdr)
    pre = PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, len(hdr), hashlib.sha256(hdr).digest())
    d = os.path.dirname(os.path.abspath(os.fspath(path)))
    fd, tmp = tempfile.mkstemp(prefix=".mmemu-trace-", dir=d)
    umask = os.umask(0o22)
    os.umask(umask)
    try:
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(pre)
            f.write(hdr)
            for s in stored:
                f.write(s[4])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read(path):
    """(meta, arrays, snapshot bytes or None) of a trace file; TraceError if it is not a
    whole, intact trace of a version this mmemu reads."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except IsADirectoryError:
        raise TraceError(f"{path}: is a directory, not a trace") from None
    except OSError as e:
        raise TraceError(f"cannot read {path}: {e.strerror}") from None
    size = len(blob)
    if size == 0:
        raise TraceError("not an mmemu trace: the file is empty")
    pre = blob[:PREAMBLE_SIZE]
    if pre[:len(MAGIC)] != MAGIC[:len(pre)]:
        raise TraceError(f"not an mmemu trace: the file starts with {pre[:10]!r}, not the "
                         f"magic {MAGIC!r}")
    if size < PREAMBLE_SIZE:
        raise TraceError(f"truncated trace: the file ends at byte {size}, inside the "
                         f"{PREAMBLE_SIZE}-byte preamble")
    _, version, flags, hlen, hsum = PREAMBLE.unpack(pre)
    if version != FORMAT_VERSION:
        raise TraceError(f"unsupported trace format version {version} (this mmemu reads "
                         f"version {FORMAT_VERSION})")
    if flags:
        raise TraceError(f"unsupported trace flags {flags:#x}")
    if PREAMBLE_SIZE + hlen > size:
        raise TraceError(f"truncated trace: the file ends at byte {size}, inside the header")
    raw = blob[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen]
    if hashlib.sha256(raw).digest() != hsum:
        raise TraceError("checksum mismatch in the header: the file is corrupted")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise TraceError("bad trace: the header is not JSON") from None
    if not isinstance(header, dict) or header.get("format") != "mmemu-trace" \
            or header.get("version") != version:
        raise TraceError("bad trace: the header does not describe an mmemu trace of this version")
    secs = header.get("sections")
    fsize = header.get("file_size")
    if not isinstance(secs, list) or not isinstance(fsize, int):
        raise TraceError("bad trace: the header lacks its sections or file size")
    pos, byname = PREAMBLE_SIZE + hlen, {}
    for i, s in enumerate(secs):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise TraceError(f"bad trace: header section {i} is malformed")
        name = s["name"]
        for k in ("offset", "length", "raw_length"):
            if not isinstance(s.get(k), int) or isinstance(s.get(k), bool) or s[k] < 0:
                raise TraceError(f"bad trace: section {name!r} has a bad {k}")
        if s["offset"] != pos:
            raise TraceError(f"bad trace: section {name!r} starts at byte {s['offset']}, "
                             f"expected {pos}")
        if name in byname:
            raise TraceError(f"bad trace: section {name!r} appears twice")
        if s.get("codec") not in ("zlib", "none"):
            raise TraceError(f"bad trace: section {name!r} has an unknown codec")
        limit = s["length"] if s["codec"] == "none" else ZLIB_MAX_RATIO * s["length"] + 1024
        if s["raw_length"] > limit:
            raise TraceError(f"bad trace: section {name!r}: {s['length']} stored bytes "
                             f"cannot hold {s['raw_length']}")
        byname[name] = s
        pos += s["length"]
    missing = [n for n in _REQUIRED if n not in byname]
    if missing:
        raise TraceError(f"bad trace: missing sections: {', '.join(missing)}")
    if pos != fsize:
        raise TraceError(f"bad trace: sections end at byte {pos}, the header says {fsize}")
    if size < fsize:
        for s in secs:
            if s["offset"] <= size < s["offset"] + s["length"]:
                raise TraceError(f"truncated trace: the file ends at byte {size}, inside "
                                 f"section {s['name']!r}; expected {fsize} bytes")
    if size != fsize:
        raise TraceError(f"bad trace: {size - fsize} bytes after the end of the trace")
    for s in secs:
        if hashlib.sha256(blob[s["offset"]:s["offset"] + s["length"]]).hexdigest() != s.get("sha256"):
            raise TraceError(f"checksum mismatch in section {s['name']!r}: the file is corrupted")

    def decoded(s) -> bytes:
        data = blob[s["offset"]:s["offset"] + s["length"]]
        if s["codec"] == "zlib":
            try:
                d = zlib.decompressobj()
                data = d.decompress(data, s["raw_length"] + 1)
                if not d.eof or d.unused_data:
                    raise zlib.error("malformed stream")
            except zlib.error as e:
                raise TraceError(f"bad trace: section {s['name']!r}: {e}") from None
        if len(data) != s["raw_length"]:
            raise TraceError(f"bad trace: section {s['name']!r} decodes to {len(data)} bytes, "
                             f"expected {s['raw_length']}")
        return data

    try:
        meta = json.loads(decoded(byname["meta"]).decode("utf-8"))
    except (ValueError, RecursionError):
        raise TraceError("bad trace: section 'meta' is not JSON") from None
    if not isinstance(meta, dict):
        raise TraceError("bad trace: section 'meta' is not an object")
    arrays = {}
    for name, dt in _ARRAYS.items():
        s = byname[name]
        if s.get("dtype") != _descr(dt):
            raise TraceError(f"bad trace: section {name!r} has dtype {s.get('dtype')!r}, "
                             f"expected {_descr(dt)!r}")
        data = decoded(s)
        if s.get("shape") != [len(data) // dt.itemsize] or len(data) % dt.itemsize:
            raise TraceError(f"bad trace: section {name!r}: shape {s.get('shape')!r} does not "
                             f"match its {len(data)} bytes")
        arrays[name] = np.frombuffer(data, dt).copy()
    snap = decoded(byname["snapshot"]) if "snapshot" in byname else None
    return meta, arrays, snap
