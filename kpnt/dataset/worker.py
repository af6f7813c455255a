"""One scene's work: read and demosaic the reference once, build each of its
pairs, write their arrays.  Runs in the main process (``--jobs 1``) or in a
``spawn`` process-pool worker; takes and returns plain dicts (picklable)."""
from __future__ import annotations

import logging
import time
import traceback
from functools import lru_cache
from pathlib import Path

import numpy as np

from kpnt.dataset.noisefit import reference_profile
from kpnt.dataset.options import BuildOptions
from kpnt.dataset.pair import PairRejected, Reference, process_pair
from kpnt.dataset.targets import demosaic_reference, spread
from kpnt.dataset.writer import write_pair
from kpnt.errors import KpntError

log = logging.getLogger("kpnt.dataset")


@lru_cache(maxsize=4)
def _table(path: str):
    from kpnt.noise import load_profile_table

    return load_profile_table(path)


def _identity(frame: dict) -> dict:
    return {k: frame.get(k) for k in ("sha256", "path", "iso", "exposure_time", "datetime")}


def read_reference(frame: dict, opts: BuildOptions) -> Reference:
    """Read, profile and demosaic a scene's reference."""
    from kpnt.io import read_raw

    t0 = time.perf_counter()
    img = read_raw(frame["path"])
    t1 = time.perf_counter()
    table = _table(opts.profiles) if opts.profiles else None
    prof, source = reference_profile(img.mosaic, img.cfa, img.saturated, img.meta.noise_profile, img.meta.make,
                                     img.meta.model, img.meta.iso, table, opts.raw_scale)
    t2 = time.perf_counter()
    target, clipped = demosaic_reference(img.mosaic, img.cfa, img.meta.wb)
    bad = spread(img.saturated) | clipped
    t3 = time.perf_counter()
    timing = {"read": round(t1 - t0, 3), "noise_profile": round(t2 - t1, 3), "demosaic": round(t3 - t2, 3)}
    return Reference(mosaic=img.mosaic, saturated=img.saturated, cfa=img.cfa, wb=np.asarray(img.meta.wb),
                     target=target, bad=bad, profile=prof, profile_source=source, timing=timing)


def build_scene(job: dict) -> dict:
    """Build the pairs of one scene.

    Args:
        job: {"out": dataset folder, "options": BuildOptions JSON,
              "camera": camera id, "reference": frame JSON (with sha256),
              "pairs": [{"id": pair id, "frame": frame JSON}, ...],
              "verbose": bool}
    Returns:
        {"built": [pair records], "rejected": [rejection records],
         "failed": [{"path", "sha256", "reason"}]}: "failed" are read
        errors and unexpected errors (non-zero exit), "rejected" are pairs
        unfit for training (reported, exit 0).
    """
    opts = BuildOptions.from_json(job["options"])
    out = Path(job["out"])
    ref_frame = job["reference"]
    result = {"built": [], "rejected": [], "failed": []}

    def base(pair) -> dict:
        return {"id": pair["id"], "camera": job["camera"], "scene": ref_frame["sha256"],
                "reference": _identity(ref_frame), "noisy": _identity(pair["frame"])}

    def fail(frame, reason: str, bug: bool = False) -> None:
        # a bug (an unexpected exception) is reported with the file, its traceback under --verbose
        if bug and job.get("verbose"):
            reason += "\n" + traceback.format_exc()
        result["failed"].append({"path": frame["path"], "sha256": frame["sha256"], "reason": reason})

    try:
        ref = read_reference(ref_frame, opts)
    except KpntError as exc:
        fail(ref_frame, f"reference {Path(ref_frame['path']).name} could not be used: {exc}")
        return result
    except Exception as exc:  # a bug: report it with the file and go on with other scenes
        fail(ref_frame, f"unexpected {type(exc).__name__} while reading the reference: {exc}", bug=True)
        return result

    from kpnt.io import read_raw

    for pair in job["pairs"]:
        frame = pair["frame"]
        try:
            t0 = time.perf_counter()
            img = read_raw(frame["path"])
            t_read = time.perf_counter() - t0
            record, arrays = process_pair(ref, img.mosaic, img.saturated, img.cfa, img.meta.wb, opts)
            del img
            t0 = time.perf_counter()
            write_pair(out, pair["id"], arrays)
            del arrays
            record["timing_s"] = {"read": round(t_read, 3), **record["timing_s"],
                                  "write": round(time.perf_counter() - t0, 3)}
            # The reference's work is shared by the scene's pairs: recorded with each.
            record["reference_timing_s"] = ref.timing
            record = {**base(pair), **record, "options": opts.pair_fingerprint()}
            result["built"].append(record)
        except PairRejected as exc:
            result["rejected"].append({**base(pair), "reason": str(exc), "options": opts.pair_fingerprint()})
        except KpntError as exc:
            fail(frame, str(exc))
        except Exception as exc:  # a bug: report it with the file and go on
            fail(frame, f"unexpected {type(exc).__name__}: {exc}", bug=True)
    return result
