from typing import List, Optional, Tuple

import numpy.typing as npt

from .pagetable import MMCore

def count_fork_tables(src: MMCore, ranges: List[Tuple[int, int]], cow: bool = ...,
                      blocked: Optional[npt.ArrayLike] = ...) -> int: ...
def fork_copy_ranges(dst: MMCore, src: MMCore, spans: List[Tuple[int, int, int]], cow: bool = ...,
                     blocked: Optional[npt.ArrayLike] = ...) -> int: ...
