"""PhysMem's public surface cannot crash the interpreter: the arrays it hands out keep
their memory alive, and every public method validates its arguments (ValueError, TypeError
or MMError, with nothing changed) -- issue 11 item 8, issue 12 item 2. The cases that
crashed before run in a subprocess."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mmemu
from mmemu._core.physmem import MAX_FRAMES, PhysMem
from conftest import PG, PRIV, RW

pytestmark = pytest.mark.one_design


def run(code):
    """Run code in a fresh interpreter; its stdout (it must exit 0, not be killed)."""
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_views_outlive_the_machine():
    out = run("""
        import gc, mmemu
        m = mmemu.Machine("64M")
        p = m.spawn()
        a = p.mmap(0, 1 << 20, 3, 0x22)
        p.touch(a, 1 << 20)
        ph = m.phys
        views = {n: getattr(ph, n) for n in ("refcount", "mapcount", "flags", "pt_share", "pt_owner")}
        views.update({"w." + n: v for n, v in ph._frame_arrays().items()})
        expect = {n: int(v.astype("int64").sum()) for n, v in views.items()}
        rc = m.phys.refcount
        del m, p, ph
        gc.collect()
        junk = [bytearray(1 << 20) for _ in range(256)]     # reuse whatever was freed
        print(int(rc.sum()))
        print(all(int(v.astype("int64").sum()) == expect[n] for n, v in views.items()))
    """)
    # 256 data pages, PGD, PUD, PMD, PTE table and the zero page hold one reference each
    assert out.split() == ["261", "True"]


def test_views_are_read_only():
    m = mmemu.Machine("64M")
    for name in ("refcount", "mapcount", "flags", "pt_share", "pt_owner"):
        v = getattr(m.phys, name)
        assert v.base is m.phys and len(v) == 16384
        with pytest.raises(ValueError):
            v[0] = 5
        with pytest.raises(ValueError):
            v.flags.writeable = True
    assert m.phys.refcount[0] == 1
    m.check()


def test_swap_device_outlives_the_machine():
    """An MMCore kept after its machine is gone still reads its swapped page (the swap
    arrays PhysMem points into stay alive with it)."""
    out = run("""
        import gc, mmemu, numpy as np
        from mmemu._core import fault
        m = mmemu.Machine("16M")
        p = m.spawn()
        a = p.mmap(0, 1 << 20, 3, 0x22)
        p.write(a, b"swapped!")
        assert p.swap_out(a, 4096) == 1
        core, vma = p.mm.core, p.mm.vmas[0]
        del m, p
        gc.collect()
        junk = [np.full(1 << 20, 0xEE, np.uint8) for _ in range(256)]
        buf = np.zeros(8, np.uint8)
        print(fault.access(core, vma, a, a + 8, False, buf, 1)[0], bytes(buf))
    """)
    assert out.split() == ["0", "b'swapped!'"]


def test_release_cache_with_a_frame_beyond_memory():
    out = run("""
        import mmemu, numpy as np
        m = mmemu.Machine("64M")
        f = m.create_file("/f", data=b"abc")
        for bad in (1 << 40, 16384, -2):
            cache = np.array([f.cache[0], bad], dtype=np.int64)
            try:
                m.phys.release_cache(cache, False)
            except ValueError as e:
                print("ValueError", "outside memory" in str(e), cache[0] == f.cache[0])
        m.check()
        print(m.read_file(f, 0, 3))
    """)
    assert out.split("\n")[:3] == ["ValueError True True"] * 3
    assert "b'abc'" in out


def test_release_cache_refuses_frames_it_does_not_own():
    m = mmemu.Machine("64M")
    f = m.create_file("/f", data=b"x" * (2 * PG))
    s = m.create_file("/s", data=b"y")
    p = m.spawn()
    a = p.mmap(0, PG, RW, PRIV)
    p.touch(a, PG)
    anon = int(p.pagemap(a, 1)[0]) & ((1 << 55) - 1)
    fm = p.mmap(0, PG, RW, mmemu.MAP_SHARED, file=s)
    p.read(fm, 1)
    c0, c1 = f.cache[0], f.cache[1]
    before = (m.meminfo().to_dict(), m.phys.refcount.copy(), m.buddyinfo())
    for cache, swapbacked, pattern in (
            ([c0, anon], False, "not a file page-cache frame"),
            ([c0, c1], True, "not a shmem page-cache frame"),
            ([c0, c1, c0], False, "appears twice"),
            ([c0, int(s.cache[0])], False, "still mapped"),
            ([m.phys.zero_pfn], False, "not a file page-cache frame")):
        arr = np.array(cache, dtype=np.int64)
        with pytest.raises(ValueError, match=pattern):
            m.phys.release_cache(arr, swapbacked)
        assert arr.tolist() == cache
        after = (m.meminfo().to_dict(), m.phys.refcount.copy(), m.buddyinfo())
        assert after[0] == before[0] and np.array_equal(after[1], before[1]) and after[2] == before[2]
    ro = np.array([c0], dtype=np.int64)
    ro.setflags(write=False)
    with pytest.raises(ValueError):         # a read-only buffer cannot be emptied
        m.phys.release_cache(ro, False)
    m.check()
    assert m.read_file(f, 0, 2) == b"xx"


def test_an_overflowing_reservation_pool():
    """A scope held open while its frames are used and given back, topped up each time:
    the pool's consumed entries used to pile up past its end (a crash after ~500 rounds on
    a 16-frame machine); the pool now squeezes them out."""
    out = run("""
        import mmemu
        m = mmemu.Machine("64K")
        ph = m.phys
        assert ph.reserve(2)
        for i in range(5000):
            assert ph.reserve(2, scope=False)
            q = m.spawn()
            q.exit()
        ph.release()
        m.check()
        print(m.meminfo()["MemFree"], ph.reservation_depth)
    """)
    assert out.split() == [str(15 * 4), "0"]


def test_constructor_and_machine_arguments():
    for bad, err in ((2 ** 63, ValueError), (-1, ValueError), (MAX_FRAMES + 1, ValueError),
                     (15, ValueError), ("16", TypeError), (16.0, TypeError), (None, TypeError)):
        with pytest.raises(err):
            PhysMem(bad)
    m = mmemu.Machine("64M")
    for bad, err in ((2 ** 63, ValueError), (-1, ValueError), (1.5, TypeError)):
        with pytest.raises(err):
            m.fail_page_alloc(bad)
    with pytest.raises(ValueError):
        m.fail_page_alloc(1, times=2 ** 63)
    assert not m.phys.fail_pending
    m.check()


def test_accounting_mode_changes_only_without_processes():
    """Switching deferred/eager under shared tables left PTEs mapping freed frames."""
    m = mmemu.Machine("64M", cow_pgtable=True)
    p = m.spawn()
    a = p.mmap(0, 4 << 20, RW, PRIV)
    p.touch(a, 4 << 20)
    c = p.fork()
    with pytest.raises(ValueError, match="while a process exists"):
        m.phys.cow_pte_accounting = "eager"
    m.phys.cow_pte_accounting = "deferred"          # no change: allowed
    assert m.cow_pte_accounting == "deferred"
    p.exit()
    c.write(a, b"x")
    m.check()
    c.exit()
    m.phys.cow_pte_accounting = "eager"
    assert m.cow_pte_accounting == "eager"
    m.spawn().fork().exit()
    m.check()


SWEEP = r"""
import itertools, json, math
import numpy as np
import mmemu
from mmemu import MMError
from mmemu._core.physmem import PhysMem

HOSTILE = [-1, -2**63, 2**63, 2**64, 10**30, 1.5, float("nan"), "7", None, b"x", [1], (1, 2),
           {}, np.int64(-1), np.uint64(2**64 - 1), np.array([2**40], np.int64),
           np.array([-5], np.int64), np.array([1.5]), np.zeros((2, 2), np.int64),
           np.zeros(3, np.uint8), True, 16383, 16384]
ALLOWED = (ValueError, TypeError, MMError)

m = mmemu.Machine("64M")
p = m.spawn()
a = p.mmap(0, 16 * 4096, 3, 0x22)
p.write(a, b"data" * 1000)
f = m.create_file("/f", data=b"file" * 3000)
ph = m.phys
cpfn = int(f.cache[0])

def digest():
    lists = ph.free_lists()
    return (json.dumps(ph.counters()), ph.events().tobytes(), tuple(ph.buddyinfo()),
            ph.refcount.tobytes(), ph.mapcount.tobytes(), ph.flags.tobytes(),
            [x.tobytes() for x in lists["pcp"]], [x.tobytes() for x in lists["blocks"]],
            lists["gap"], ph.used_ranges(), ph.alloc_calls, ph.fail_pending,
            ph.cow_pte_accounting, ph.pcp_limits, ph.frame(cpfn), ph.reservation_depth)

# method -> valid arguments; each position is swept over HOSTILE with the others valid,
# and for methods of one or two arguments every combination is tried
VALID = {
    "frame": (1,), "table": (16383,), "read_frames": (np.array([1], np.int64),),
    "release_cache": (np.array([-1], np.int64), False), "cache_write": (cpfn, 0, np.zeros(3, np.uint8), True),
    "fail_page_alloc": (0, 1), "counters": (), "events": (), "used_ranges": (),
    "free_lists": (), "buddyinfo": (), "drain_pages": (), "dump_state": (),
}
bad, calls, cache_frames = [], 0, []

def attempt(name, fn, args):
    global calls
    calls += 1
    before = digest()
    try:
        r = fn(*args)
    except ALLOWED:
        if digest() != before:
            bad.append(f"{name}{args!r}: failed but changed state")
        return
    except BaseException as e:
        bad.append(f"{name}{args!r}: {type(e).__name__}: {e}")
        return
    if name == "cache_alloc" and isinstance(r, int) and r >= 0:
        cache_frames.append((r, bool(args[0])))
    ph.fail_page_alloc(0)

for name, valid in VALID.items():
    fn = getattr(ph, name)
    n = len(valid)
    for i in range(n):
        for h in HOSTILE:
            attempt(name, fn, valid[:i] + (h,) + valid[i + 1:])
    if n == 2:
        for combo in itertools.product(HOSTILE, repeat=2):
            attempt(name, fn, combo)
    if n == 0:
        for h in HOSTILE:
            attempt(name, fn, (h,))
for h in HOSTILE:
    attempt("cache_alloc", ph.cache_alloc, (h,))
    attempt("PhysMem", PhysMem, (h,))
    for prop in ("cow_pte_accounting", "pcp_limits"):
        attempt(prop, lambda v, prop=prop: setattr(ph, prop, v), (h,))
    attempt("pcp_limits", lambda v: setattr(ph, "pcp_limits", v), ((h, 1),))
    attempt("pcp_limits", lambda v: setattr(ph, "pcp_limits", v), ((100, h),))
    attempt("fail_page_alloc", m.fail_page_alloc, (h,))

# restore_state on a fresh PhysMem: every scalar and array of a real dump made hostile
# (the frame contents stay those of the real dump)
scalars, arrays = ph.dump_state()
frames = [ph.read_frames(arrays["data_pfns"]).tobytes()]
def fresh_state(x):
    return (x.used_ranges(), tuple(x.buddyinfo()), json.dumps(x.counters()), x.free_lists()["gap"])
def restore(s, a):
    global calls
    calls += 1
    fresh = PhysMem(ph.nframes)
    before = fresh_state(fresh)
    try:
        fresh.restore_state(s, a, frames)
    except ALLOWED:
        if fresh_state(fresh) != before:
            bad.append(f"restore_state: failed but changed state")
    except BaseException as e:
        bad.append(f"restore_state: {type(e).__name__}: {e}")
for key in list(scalars):
    for h in HOSTILE + [[h] * 2 for h in HOSTILE[:10]]:
        restore(dict(scalars, **{key: h}), arrays)
    s = dict(scalars)
    del s[key]
    restore(s, arrays)
for key in list(arrays):
    for h in HOSTILE:
        restore(scalars, dict(arrays, **{key: h}))
    a = dict(arrays)
    del a[key]
    restore(scalars, a)
for h in HOSTILE:
    restore(h, arrays)
    restore(scalars, h)
restore(scalars, arrays)            # the real dump loads

for pfn, swapbacked in cache_frames:
    ph.release_cache(np.array([pfn], np.int64), swapbacked)
ph.cow_pte_accounting = "deferred"
m.check()
print(calls)
print("\n".join(bad) or "clean")
"""


def test_hostile_arguments_to_every_public_method():
    out = run(SWEEP)
    calls, verdict = out.split("\n", 1)
    assert int(calls) > 2000
    assert verdict.strip() == "clean", verdict
