from typing import Any

from .pagetable import MMCore

HUGE_NEW: int
HUGE_ZERO: int

def split_huge_pmd_address(mmc: MMCore, addr: int) -> bool: ...
def install_huge_pmd(core: MMCore, vma: Any, addr: int, head: int, exclusive: bool) -> int: ...
def huge_pmd_head(core: MMCore, addr: int) -> int: ...
