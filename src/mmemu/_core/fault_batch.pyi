from typing import Any, List

import numpy as np

from .pagetable import MMCore

def access_batch(mmc: MMCore, vmas: List[Any], vma_index: np.ndarray, addrs: np.ndarray,
                 writes: np.ndarray, rc_out: np.ndarray) -> List[bool]: ...
