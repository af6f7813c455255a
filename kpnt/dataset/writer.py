"""Write one pair's arrays atomically: into a hidden temporary folder, then
renamed into place, so that a pair folder either holds all its arrays or
does not exist (an interrupted build leaves no half pair behind)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from kpnt.dataset.manifest import PAIR_ARRAYS, PAIRS_DIR, pair_dir
from kpnt.errors import DatasetError


def write_pair(folder, pair_id: str, arrays: dict[str, np.ndarray]) -> Path:
    """Save ``arrays`` (keys of :data:`PAIR_ARRAYS`, converted to their
    dtypes) as ``.npy`` files in ``folder/pairs/<pair_id>/``.

    An existing folder of that pair (a rebuild) is replaced.
    """
    missing = set(PAIR_ARRAYS) - set(arrays)
    if missing:
        raise DatasetError(f"pair {pair_id}: arrays {sorted(missing)} missing")
    final = pair_dir(folder, pair_id)
    root = Path(folder) / PAIRS_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{pair_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for key, (name, dtype, _) in PAIR_ARRAYS.items():
            np.save(tmp / name, np.ascontiguousarray(arrays[key], dtype=dtype), allow_pickle=False)
        if final.exists():
            old = root / f".old-{pair_id}-{os.getpid()}"
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def remove_pair(folder, pair_id: str) -> None:
    """Delete a pair's folder (a stale pair the builder made itself)."""
    d = pair_dir(folder, pair_id)
    if d.exists():
        shutil.rmtree(d)
