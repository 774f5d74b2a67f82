"""The Examples sections of the public docstrings run as doctests, with the names of
``mmemu.__all__`` and ``mmemu`` itself in scope."""
import doctest
import importlib

import pytest

import mmemu

MODULES = ["mmemu.args", "mmemu.machine", "mmemu.process", "mmemu.stats", "mmemu.file",
           "mmemu.errors", "mmemu.forktable"]
pytestmark = pytest.mark.one_design


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    mod = importlib.import_module(name)
    globs = {**vars(mod), "mmemu": mmemu, **{k: getattr(mmemu, k) for k in mmemu.__all__}}
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, name, globs=globs) if t.examples]
    for t in tests:
        runner.run(t)
    res = runner.summarize(verbose=False)
    assert res.failed == 0


def test_public_api_examples_exist():
    """The main entry points show an example (and so are doctested above)."""
    for obj in (mmemu.Machine, mmemu.Process.fork, mmemu.parse_size, mmemu.stats.Counters,
                mmemu.Process.mmap, mmemu.Process.status):
        assert ">>> " in (obj.__doc__ or ""), obj


KERNEL_SIDE = {"copy_process", "do_exit", "shmem_zero_setup", "release_backing", "dump_state",
               "from_state"}      # called by Process and mmemu.snapshot, not by users


def test_public_methods_have_numpydoc_sections():
    """Every public method of Machine and Process documents its Parameters, Returns,
    Yields or Raises in numpydoc form (properties: a one-line summary)."""
    import re
    missing = []
    for cls in (mmemu.Machine, mmemu.Process):
        for name, v in vars(cls).items():
            if name.startswith("_") or name in KERNEL_SIDE:
                continue
            if isinstance(v, property):
                assert v.__doc__ and v.__doc__.strip(), f"{cls.__name__}.{name}"
                continue
            f = getattr(v, "__func__", v)
            if callable(f) and not re.search(r"\n\s*(Parameters|Returns|Yields|Raises)\n\s*-{6,}\n",
                                              f.__doc__ or ""):
                missing.append(f"{cls.__name__}.{name}")
    assert missing == []
