from typing import Any, List, Optional

import numpy as np

from .pagetable import MMCore

def access_batch(mmc: MMCore, vmas: List[Any], vma_index: np.ndarray, addrs: np.ndarray,
                 writes: np.ndarray, rc_out: np.ndarray,
                 thp: Optional[List[bool]] = None) -> List[bool]: ...
