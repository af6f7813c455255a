"""Shared fixtures of the dataset tests (no tests here): synthetic ISO
ladders written with ``kpnt.synth.make_ladder`` from crops of the bundled
sample photo, a tiny darktable-format noise table, and a cache so that the
ladders and the dataset built from them are made once per test session.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import cv2
import numpy as np

import kpnt
from kpnt.mosaic.cfa import CFA
from kpnt.noise import load_profile_table
from kpnt.synth import make_ladder

#: Photo for the ladders: the sample shipped in the package (a real photo,
#: so alignment and noise fits see natural texture).
PHOTO = Path(kpnt.__file__).parent / "data" / "sample_coffee.png"
ISOS = (100, 800, 3200, 6400, 12800)
#: Frames of 384 x 576 photosites (0.22 MP): big enough that the noise fit's
#: own sampling error (~3% rms per a or b) stays well inside 10%.
FRAME = (384, 576)
MARGIN = 7

BAYER = dict(cfa=CFA.bayer("GRBG"), make="Nikon", model="D750", isos=[100, 800, 3200, 12800],
             shifts=[(0, 0), (2, -4), (-6, 2), (1, 7)], ev=[0.0, 0.7, -1.0, 0.3])
XTRANS = dict(cfa=CFA.xtrans(), make="Fujifilm", model="X-T1", isos=[3200, 100, 800, 12800],
              shifts=[(3, 3), (0, 0), (-6, 6), (7, -5)], ev=[1.0, 0.0, -0.6, 0.4])
#: A second Bayer body of the same size and CFA, shot at the same times.
OTHER = dict(cfa=CFA.bayer("GRBG"), make="Canon", model="EOS 6D", isos=[100, 3200], shifts=[(0, 0), (0, 0)],
             ev=[0.0, 0.0])
START = dt.datetime(2024, 1, 1, 10, 0, 0)


def photo(variant: int) -> np.ndarray:
    """(302, 446, 3) uint8 crop of the sample photo; variants are flipped
    and offset so that they show different content."""
    img = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    if variant % 2:
        img = img[::-1]
    if variant // 2 % 2:
        img = img[:, ::-1]
    y0, x0 = (variant * 29) % (img.shape[0] - FRAME[0] - 2 * MARGIN), (variant * 53) % (img.shape[1] - FRAME[1] - 2 * MARGIN)
    return np.ascontiguousarray(img[y0:y0 + FRAME[0] + 2 * MARGIN, x0:x0 + FRAME[1] + 2 * MARGIN])


def write_table(path: Path) -> Path:
    """A darktable-format noise table for the three bodies: a, b grow with
    ISO; b/a ~ 0.06 so that both terms matter in the fitted range."""
    def profiles(model):
        return [{"name": f"{model} iso {iso}", "iso": iso,
                 "a": [1.6e-6 * iso / 100, 1.2e-6 * iso / 100, 2.0e-6 * iso / 100],
                 "b": [1.0e-7 * iso / 100, 0.8e-7 * iso / 100, 1.2e-7 * iso / 100]} for iso in ISOS]
    doc = {"version": 0, "noiseprofiles": [
        {"maker": "Nikon", "models": [{"model": "D750", "profiles": profiles("D750")}]},
        {"maker": "Fujifilm", "models": [{"model": "X-T1", "profiles": profiles("X-T1")}]},
        {"maker": "Canon", "models": [{"model": "EOS 6D", "profiles": profiles("EOS 6D")}]},
    ]}
    path.write_text(json.dumps(doc))
    return path


def ladder(spec: dict, table, out: Path, stem: str, variant: int, start: dt.datetime, seed: int, moving=True):
    make_ladder(photo(variant), spec["cfa"], spec["make"], spec["model"], table, spec["isos"], out, stem,
                shifts=spec["shifts"], exposure_ev=spec["ev"], moving_object=moving, seed=seed, start_time=start)
    return out


_CACHE: dict[str, object] = {}


def raws(tmp_path_factory) -> dict:
    """The raw folder of the acceptance scenario (made once per session):

    - ``bayer/``: Nikon D750 ladder ISO 100/800/3200/12800, shifts
      (2,-4), (-6,2), (1,7), exposure +0.7/-1/+0.3 EV, moving object;
    - ``xtrans/``: Fujifilm X-T1 ladder ISO 3200/100/800/12800 (reference
      second), shifts (3,3), (-6,6), (7,-5), +1/-0.6/+0.4 EV, moving object;
    - ``bayer/``: a Canon EOS 6D pair (same size and CFA, same capture
      times as the D750: only the camera tells them apart);
    - ``lone/``: a D750 ISO 6400 frame of another scene an hour later;
    - ``bayer/broken.dng``: not a raw.
    """
    if "raws" not in _CACHE:
        root = tmp_path_factory.mktemp("raws")
        table_path = write_table(root.parent / f"{root.name}-profiles.json")
        table = load_profile_table(table_path)
        ladder(BAYER, table, root / "bayer", "D750", 0, START, 1)
        ladder(XTRANS, table, root / "xtrans", "XT1", 1, START + dt.timedelta(hours=1), 2)
        ladder(OTHER, table, root / "bayer", "EOS6D", 2, START, 3, moving=False)
        lone_photo = photo(3)[MARGIN:MARGIN + FRAME[0], MARGIN:MARGIN + FRAME[1]]   # same frame size as the D750's
        make_ladder(lone_photo, BAYER["cfa"], BAYER["make"], BAYER["model"], table, [6400], root / "lone", "lone",
                    seed=4, start_time=START + dt.timedelta(hours=3))
        (root / "bayer" / "broken.dng").write_bytes(b"II*\x00" + os.urandom(4000))
        _CACHE["raws"] = {"root": root, "table": table_path}
    return _CACHE["raws"]


def truth_by_file(root: Path) -> dict[str, tuple[dict, dict]]:
    """file name -> (ladder truth, frame truth) for every truth sidecar under root."""
    out = {}
    for tf in Path(root).rglob("*_truth.json"):
        t = json.loads(tf.read_text())
        for fr in t["frames"]:
            out[fr["file"]] = (t, fr)
    return out
