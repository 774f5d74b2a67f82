"""Predicted kernel time from mmemu's work counters.

- ``profile``: unit costs measured on a live kernel (``default_profile.json`` ships with mmemu)
- ``calibrate``: ``mmemu calibrate``, the measurement and the fits, with held-out validation
- ``predict``: counters x unit costs = predicted kernel seconds, one row per cost term
- ``emulate``: the emulated twins of the calibrated scenarios
"""
from .predict import TERMS, Prediction, predict
from .profile import Profile, load as load_profile

__all__ = ["predict", "Prediction", "Profile", "load_profile", "TERMS"]
