"""Noise model: profiles, profile tables, sampling, pair fit, blind estimate.

Per colour channel ``var(x) = a[c] * x + b[c]`` in normalised units
(DESIGN.md section 1).  darktable's table is ~12x below raw scale:
:data:`DARKTABLE_RAW_SCALE`.
"""
from kpnt.noise.blind import BlindConfig, estimate_blind
from kpnt.noise.fit import fit_pair
from kpnt.noise.profile import DARKTABLE_RAW_SCALE, NoiseProfile
from kpnt.noise.sampling import add_noise, add_noise_torch
from kpnt.noise.table import ProfileTable, load_profile_table

__all__ = [
    "BlindConfig",
    "DARKTABLE_RAW_SCALE",
    "NoiseProfile",
    "ProfileTable",
    "add_noise",
    "add_noise_torch",
    "estimate_blind",
    "fit_pair",
    "load_profile_table",
]
