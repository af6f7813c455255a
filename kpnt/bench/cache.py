"""A cache of the peers' scores, so that slow peers (BM3D: ~67 s per
megapixel on one core) computed in one benchmark call are reused by the next.

An entry is keyed by a SHA-256 of everything its numbers depend on: the
exact input raw (counts, CFA, white balance, noise profile, colour matrix),
the clean reference it is scored against, the method, its options (NLM
strength, demosaicnet's domain and device type, ...), the versions of the
packages the method runs (:func:`kpnt.bench.peers.package_versions`) and the
scoring constants.  Any change gives a new key, so a cached number is the
number a fresh run would give.  It stores the scores (PSNRs, SSIM, the
colour-fidelity sums and the seconds the method took), not the images: a
full validation run is a few MB, one JSON file, and it travels back from a
GPU machine as one file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from kpnt.bench import metrics

#: bump when the stored fields or their meaning change
FORMAT = 1
FILE_NAME = "peer_cache.json"


def case_key(case: dict, method: str, options: dict, versions: dict) -> str:
    """The cache key of ``method`` run on ``case`` (module doc)."""
    h = hashlib.sha256()
    counts = np.ascontiguousarray(case["counts"])
    h.update(repr((counts.shape, str(counts.dtype))).encode())
    h.update(counts.tobytes())
    h.update(np.ascontiguousarray(case["ref_cam"], np.float32).tobytes())
    for k in ("wb", "noise", "xyz_to_cam"):
        h.update(np.ascontiguousarray(case[k], np.float64).tobytes())
    h.update(np.ascontiguousarray(case["cfa"].pattern, np.int64).tobytes())
    meta = dict(format=FORMAT, method=method, options=options, versions=versions,
                scoring=dict(border=metrics.BORDER, edges=metrics.SAT_EDGES, min_value=metrics.SAT_MIN_VALUE))
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    return h.hexdigest()


class PeerCache:
    """Scores of peer runs on disk (``DIR/peer_cache.json``).

    Args:
        folder: the cache folder (created when saving); None for a cache
            that holds nothing and saves nothing.
    """

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self.entries: dict[str, dict] = {}
        self.hits = 0
        self.misses = 0
        self._dirty = False
        path = self.path
        if path is not None and path.is_file():
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise SystemExit(f"{path}: cannot read the peer cache ({err}): delete it or pass another --peer-cache")
            if doc.get("format") != FORMAT:
                raise SystemExit(f"{path}: peer cache of format {doc.get('format')!r}, this script writes {FORMAT}: "
                                 "delete it or pass another --peer-cache")
            self.entries = doc.get("entries", {})

    @property
    def path(self) -> Path | None:
        """The cache file (None when the cache is off)."""
        return None if self.folder is None else self.folder / FILE_NAME

    def get(self, key: str) -> dict | None:
        """The stored result of ``key``, or None (counted as hit / miss)."""
        if self.folder is None:
            return None
        hit = self.entries.get(key)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def put(self, key: str, result: dict) -> None:
        """Store one result (JSON-ready: floats, lists, strings)."""
        if self.folder is None:
            return
        self.entries[key] = result
        self._dirty = True

    def save(self) -> None:
        """Write the cache atomically (:func:`kpnt.io.atomic.atomic_write`),
        if it changed since the last save."""
        if self.folder is None or not self._dirty:
            return
        import fcntl

        from kpnt.io.atomic import atomic_write

        self.folder.mkdir(parents=True, exist_ok=True)
        # Several processes may fill one cache (one per sensor here, another
        # machine's cache copied in): under a lock, merge what is on disk now
        # so that no writer drops another's entries.
        folder_fd = os.open(self.folder, os.O_RDONLY)    # the folder itself is the lock: no lock file left behind
        try:
            fcntl.flock(folder_fd, fcntl.LOCK_EX)
            try:
                on_disk = json.loads(self.path.read_text()).get("entries", {}) if self.path.is_file() else {}
            except (OSError, ValueError):
                on_disk = {}
            self.entries = {**on_disk, **self.entries}
            atomic_write(self.path, [json.dumps(dict(format=FORMAT, entries=self.entries)).encode()], overwrite=True)
        finally:
            os.close(folder_fd)
        self._dirty = False
