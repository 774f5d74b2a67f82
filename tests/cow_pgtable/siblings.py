"""Load another test module of the suite as a module of its own, so that a whole-table COW
test can run its machinery with other designs (tests/cow_pgtable only)."""
import importlib.util
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def load(relpath: str):
    """tests/<relpath> as a fresh module (not the one pytest collected)."""
    name = "_cow_pgtable_" + relpath.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, TESTS / relpath)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
