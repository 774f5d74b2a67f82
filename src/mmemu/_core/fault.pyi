from typing import Any, Optional, Tuple

from .pagetable import MMCore

def access(mmc: MMCore, vma: Any, start: int, end: int, write: bool,
           buf: Optional[Any] = ..., mode: int = ..., thp: bool = ...) -> Tuple[int, int, bool]: ...
