"""/proc text formats, byte for byte against what Linux 6.18 prints."""
import numpy as np

import mmemu
from conftest import PG, PRIV, RW, SHARED, per_design
from mmemu import MAP_FIXED, PROT_EXEC, PROT_READ


def test_meminfo_text_format(m):
    text = str(m.meminfo())
    lines = text.splitlines()
    # show_val_kb: "%-16s%8lu kB" -- e.g. "MemTotal:        1048576 kB"
    assert lines[0] == "MemTotal:        1048576 kB"
    assert lines[1] == "MemFree:         1048572 kB"
    assert all(len(line) == 27 for line in lines)
    assert [line.split(":")[0] for line in lines][:3] == ["MemTotal", "MemFree", "MemAvailable"]


def test_status_text_format(m, p):
    a = p.mmap(0, 3 * PG, RW, PRIV)
    p.touch(a, 2 * PG)
    text = str(p.status())
    # "RssShmem:\t       8 kB" as printed by task_mem (verified on Linux 6.18)
    assert "VmRSS:\t       8 kB\n" in text
    assert "RssAnon:\t       8 kB\n" in text
    assert "VmPTE:\t      12 kB\n" in text
    assert "VmSize:\t      12 kB\n" in text
    assert [line.split(":")[0] for line in text.splitlines()] == [
        "VmPeak", "VmSize", "VmLck", "VmPin", "VmHWM", "VmRSS", "RssAnon", "RssFile",
        "RssShmem", "VmData", "VmStk", "VmExe", "VmLib", "VmPTE", "VmSwap"]


def test_maps_lines(m, p):
    base = 0x7F0000000000
    p.mmap(base, 2 * PG, RW, PRIV | MAP_FIXED)
    p.mmap(base + 4 * PG, PG, PROT_READ | PROT_EXEC, PRIV | MAP_FIXED)
    p.mmap(base + 8 * PG, 3 * PG, RW, SHARED | MAP_FIXED)
    lines = list(p.maps())
    assert lines[0] == "7f0000000000-7f0000002000 rw-p 00000000 00:00 0 "
    assert lines[1] == "7f0000004000-7f0000005000 r-xp 00000000 00:00 0 "
    # a shared anonymous mapping, as Linux 6.18 prints it (name padded to column 73)
    ino = p.mm.vmas[2].backing.inode
    head = f"7f0000008000-7f000000b000 rw-s 00000000 00:01 {ino} "
    assert lines[2] == head + " " * (73 - len(head)) + "/dev/zero (deleted)"
    assert str(p.maps()) == "".join(line + "\n" for line in lines)


def test_smaps_block(m, p, fork_design):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    p.write(a, b"x")
    p.read(a + PG, 1)                       # zero page: not in Rss
    c = p.fork()
    s = p.smaps()[0]
    # deferred COW page tables take no page reference at fork: the page looks private
    assert (s["Size"], s["Rss"], s["Pss"], s["Shared_Dirty"], s["Private_Dirty"]) == \
        per_design(fork_design, (16, 4, 2, 4, 0), deferred=(16, 4, 4, 0, 4))
    assert s["Anonymous"] == 4 and s["Referenced"] == 4
    assert s["VmFlags"] == ["rd", "wr", "mr", "mw", "me", "ac"]     # as Linux 6.18 prints
    text = str(p.smaps())
    assert "\nRss:                   4 kB\n" in text
    assert f"\nPss:                   {s['Pss']} kB\n" in text
    assert text.rstrip("\n").endswith("VmFlags: rd wr mr mw me ac ")
    c.write(a, b"y")
    s = p.smaps()[0]
    assert (s["Rss"], s["Pss"], s["Private_Dirty"], s["Shared_Dirty"]) == (4, 4, 4, 0)


def test_pagemap_bits(m, p):
    a = p.mmap(0, 4 * PG, RW, PRIV)
    s = p.mmap(0, PG, RW, SHARED)
    p.write(a, b"x")
    p.read(a + PG, 1)
    p.read(s, 1)
    e = p.pagemap(a, 4)
    assert e.dtype == np.uint64
    present, excl, filebit = 1 << 63, 1 << 56, 1 << 61
    pfn = lambda v: int(v) & ((1 << 55) - 1)  # noqa: E731
    assert int(e[0]) == present | excl | pfn(e[0])              # exclusive anon page
    assert int(e[1]) == present | m.phys.zero_pfn               # zero page: no flags
    assert int(e[2]) == int(e[3]) == 0                          # never touched
    es = int(p.pagemap(s, 1)[0])
    assert es & (present | filebit | excl) == present | filebit | excl
    c = p.fork()
    assert int(p.pagemap(a, 1)[0]) == present | pfn(e[0])      # now mapped twice
    assert int(c.pagemap(a, 1)[0]) == present | pfn(e[0])
    assert int(c.pagemap(s, 1)[0]) == 0                         # shared VMAs are not copied


def test_statm(m, p):
    """task_statm: size, resident, shared (file + shmem), text, lib 0, data (data_vm +
    stack_vm), dt 0 -- pages, one line, as "765 422 394 5 0 123 0" on Linux 6.18."""
    a = p.mmap(0, 16 * PG, RW, PRIV)
    p.write(a, b"x" * (5 * PG))
    s = p.mmap(0, 4 * PG, RW, SHARED)
    p.write(s, b"s" * (2 * PG))
    st = p.statm()
    assert dict(st) == {"size": 20, "resident": 7, "shared": 2, "text": 0, "lib": 0,
                        "data": 16, "dt": 0}
    assert str(st) == "20 7 2 0 0 16 0\n"


def test_smaps_rollup_sums_pss_before_rounding(m, p, fork_design):
    """show_smaps_rollup: one header line spanning all VMAs with [rollup] at column 73,
    then the smaps fields summed over the VMAs. PSS is summed in fixed point (bytes << 12)
    and rounded once: two VMAs of three pages, each page mapped by three processes, give
    (4096 << 12) // 3 per page; per VMA 3 of those = 4095 bytes = 3 kB, the rollup 6 of
    them = 8191 bytes = 7 kB, not 3 + 3. Deferred COW page tables take no page references
    at fork, so there every page still counts in full for the parent."""
    base = 0x7F0000000000
    for start in (base, base + 4 * PG):
        p.mmap(start, 3 * PG, RW, PRIV | mmemu.MAP_FIXED)
        p.write(start, b"x" * (3 * PG))
    c = p.fork()
    g = c.fork()
    assert [e["Pss"] for e in p.smaps()] == per_design(fork_design, [3, 3], deferred=[12, 12])
    r = p.smaps_rollup()
    head = f"{base:08x}-{base + 7 * PG:08x} ---p 00000000 00:00 0 "
    assert r.header == head + " " * (73 - len(head)) + "[rollup]"
    assert r["Rss"] == r["Anonymous"] == 24
    assert r["Pss"] == r["Pss_Anon"] == r["Pss_Dirty"] == per_design(fork_design, 7, deferred=24)
    assert str(r).startswith(r.header + "\nRss:                  24 kB\nPss:    ")
    assert list(r)[:3] == ["Rss", "Pss", "Pss_Dirty"]
    g.exit()
    c.exit()
