"""Compiled mechanism of mmemu (built from cython_core/mmemu/_core)."""
