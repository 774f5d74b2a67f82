"""`mmemu reproduce`: the published evaluations of the COW page table series, one small
function per figure (``figures``), each giving the published number, mmemu's emulated work,
its predicted kernel time (mmemu.costmodel) and the ratio, and a plot (``plot``)."""
from .figures import FIGURES, Figure, Row, reproduce

__all__ = ["FIGURES", "Figure", "Row", "reproduce"]
