"""Mosaic (CFA) layouts and the full-resolution front level."""
from kpnt.mosaic.cfa import CFA, CFAError, BAYER_PHASES, D4

__all__ = ["CFA", "CFAError", "BAYER_PHASES", "D4"]
