"""The page cache's radix tree (mmemu._core.filemap.PageCache) against a dict: random
stores and erases over the whole int64 index range, lookups, ordered iteration of any
range, and nodes that go back to none when the pages go (host memory follows use)."""
import random

import pytest

from mmemu._core.filemap import MAX_INDEX, NODE_BYTES, PageCache

pytestmark = pytest.mark.one_design


def _index(rng):
    return rng.choice([rng.randrange(1 << 10), rng.randrange(1 << 20), rng.randrange(1 << 40),
                       rng.randrange(MAX_INDEX + 1), 0, 511, 512, MAX_INDEX])


@pytest.mark.parametrize("seed", range(4))
def test_page_cache_is_a_sparse_map(seed):
    rng = random.Random(seed)
    c, ref = PageCache(), {}
    for _ in range(4000):
        i = _index(rng)
        if rng.random() < 0.6:
            p = rng.randrange(1 << 40)
            assert c.store(i, p)
            ref[i] = p
        else:
            assert c.erase(i) == ref.pop(i, -1)
        assert len(c) == len(ref)
        j = _index(rng)
        assert c[j] == ref.get(j, -1)
    keys = sorted(ref)
    idx, pfn = c.entries()
    assert idx.tolist() == keys and pfn.tolist() == [ref[k] for k in keys]
    for _ in range(50):
        lo, hi = sorted((_index(rng), _index(rng)))
        want = [k for k in keys if lo <= k < hi]
        assert c.count(lo, hi) == len(want)
        assert c.entries(lo, hi)[0].tolist() == want
    # a node per 512-index run in use, at most 7 levels: never more nodes than 7 per page
    assert 0 < c.nodes <= 7 * len(c)
    idx, pfn = c.pop(keys[len(keys) // 2])
    assert idx.tolist() == keys[len(keys) // 2:] and len(c) == len(keys) // 2
    c.pop()
    assert len(c) == 0 and c.nodes == 0 and c[keys[0]] == -1


def test_page_cache_host_memory_follows_pages():
    """Three pages at the far ends of a 2**51-page (MAX_LFS_FILESIZE) file: a handful of
    nodes; 512 consecutive pages: one leaf (plus the nodes above it)."""
    c = PageCache()
    for i in (0, 1 << 40, (1 << 51) - 1):
        assert c.store(i, i & 0xFFFF)
    assert len(c) == 3 and c.nodes <= 3 * 6 and c.nodes * NODE_BYTES < 100 << 10
    d = PageCache()
    for i in range(512, 1024):
        d.store(i, i)
    assert d.nodes == 2 and d[700] == 700 and d[1024] == -1 and d[511] == -1


def test_page_cache_refuses_bad_indexes():
    c = PageCache()
    for bad in (-1, MAX_INDEX + 1):
        with pytest.raises(IndexError):
            c.store(bad, 1)
        with pytest.raises(IndexError):
            c[bad]
    with pytest.raises(ValueError):
        c.store(0, -1)
    with pytest.raises(TypeError):
        c["0"]
    assert len(c) == 0 and c.nodes == 0
