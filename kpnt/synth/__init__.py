"""Synthetic raws: unprocess sRGB photos (Brooks et al. 2019) into clean
camera mosaics, add real-profile noise, write ISO ladders as CFA DNGs with a
truth sidecar (DESIGN.md section 8).

- :mod:`kpnt.synth.unprocess`: photo loading, unprocessing, mosaicing, raw counts.
- :mod:`kpnt.synth.scene`: the ladder plan and its clean frames (shifts,
  exposure offsets, moving object).
- :mod:`kpnt.synth.ladder`: noise, metadata and files.
"""
from kpnt.synth.ladder import dng_name, load_truth, make_ladder, truth_name
from kpnt.synth.scene import LadderPlan, clean_scenes, object_texture, plan_ladder
from kpnt.synth.unprocess import (DEFAULT_HEADROOM, SynthError, load_photo, mosaic, random_wb, to_raw_counts,
                                  unprocess)

__all__ = [
    "DEFAULT_HEADROOM",
    "LadderPlan",
    "SynthError",
    "clean_scenes",
    "dng_name",
    "load_photo",
    "load_truth",
    "make_ladder",
    "mosaic",
    "object_texture",
    "plan_ladder",
    "random_wb",
    "to_raw_counts",
    "truth_name",
    "unprocess",
]
