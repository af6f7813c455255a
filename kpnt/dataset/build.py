"""Build or update a dataset folder from raw files (``kpnt-build-dataset``).

1. Scan: find raws, hash every file (SHA-256: the identity of a frame and
   of a pair), read the files not seen before (a thumbnail and metadata are
   cached in the dataset, so a re-run reads only new files).
2. Group: cameras, scenes, references, pairs (:mod:`kpnt.dataset.group`).
3. Build the pairs not built yet, one job per scene (the reference is read
   and demosaiced once), in a ``spawn`` process pool with ``jobs > 1``
   (fork can deadlock with rawpy's OpenMP).  The manifest is saved after
   every scene, so an interrupted build keeps what it finished.
4. Report: pairs built, skipped, rejected (and why), frames not paired,
   files that failed.

Pairs are identified by the hashes of their two files; pairs already in the
manifest with all their arrays are skipped (``force`` rebuilds them), and so
are pairs rejected before.  A pair in the manifest whose high-ISO frame is
among this run's files but which this run's grouping no longer forms (its
scene gained a lower-ISO frame, say) is removed.  Pairs of files that are
not part of this run are kept, so a dataset can grow run by run.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kpnt.dataset.group import plan_pairs
from kpnt.dataset.manifest import (THUMBS_DIR, load_manifest, new_manifest, pair_complete, save_manifest)
from kpnt.dataset.options import BuildOptions
from kpnt.dataset.scan import FrameInfo, RAW_SUFFIXES, find_raws, scan_frame, sha256_file
from kpnt.dataset.worker import build_scene
from kpnt.dataset.writer import remove_pair
from kpnt.errors import DatasetError, KpntError
from kpnt.io.atomic import atomic_file

log = logging.getLogger("kpnt.dataset")


def pair_id(ref_sha: str, noisy_sha: str) -> str:
    """Id of the pair of two files (16 hex digits of SHA-256 of their hashes)."""
    return hashlib.sha256(f"{ref_sha}:{noisy_sha}".encode()).hexdigest()[:16]


def describe_failure(path: str, reason: str) -> str:
    """One line naming the file once (read errors already name it)."""
    first = reason.splitlines()[0] if reason else "failed"
    return first if Path(path).name in first else f"{path}: {first}"


@dataclass
class BuildReport:
    """What a build did (see :meth:`lines` for the printed summary)."""

    out: Path
    built: list[dict] = field(default_factory=list)
    skipped: int = 0
    skipped_rejected: int = 0
    rejected: list[dict] = field(default_factory=list)
    unpaired: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    n_frames: int = 0
    n_scenes: int = 0
    n_cameras: int = 0
    n_pairs_total: int = 0
    attempted: int = 0
    other_options: int = 0

    @property
    def exit_code(self) -> int:
        """1 when a file could not be read, a pair failed unexpectedly, or the dataset holds no pair (nothing to
        train on)."""
        return 1 if self.error_lines() else 0

    def error_lines(self) -> list[str]:
        """The one-line errors behind a non-zero :attr:`exit_code`, for stderr."""
        out = [f"error: {describe_failure(path, reason)}" for path, reason in self.failed]
        if not self.n_pairs_total:
            out.append(f"error: dataset {self.out} holds no pair: every scene needs a high-ISO raw and a lower-ISO raw "
                       "of it from the same camera (see 'not paired' and 'rejected pair' above; scenes group by "
                       "capture time and content, --max-gap and --min-similarity loosen that, --scene-dirs makes "
                       "each folder a scene)")
        return out

    def lines(self) -> list[str]:
        out = []
        if not self.attempted and not (self.skipped or self.skipped_rejected):
            out.append("no pairs to build: no frame has a lower-ISO frame of its scene to pair with"
                       + (" (see 'not paired' below)" if self.unpaired else ""))
        elif not self.attempted:
            out.append(f"nothing new to build: {self.skipped} pair(s) already built"
                       + (f", {self.skipped_rejected} rejected before" if self.skipped_rejected else ""))
        else:
            out.append(f"built {len(self.built)} pair(s), skipped {self.skipped} already built"
                       + (f" and {self.skipped_rejected} rejected before" if self.skipped_rejected else ""))
        out.append(f"{self.n_frames} frame(s), {self.n_cameras} camera(s), {self.n_scenes} scene(s); "
                   f"dataset {self.out} holds {self.n_pairs_total} pair(s)")
        if self.other_options:
            out.append(f"{self.other_options} of the pairs kept were built with other options (kept as they are; "
                       "--force rebuilds them)")
        if self.removed:
            out.append(f"removed {len(self.removed)} stale pair(s) that this run's grouping no longer forms")
        for r in self.rejected:
            out.append(f"  rejected pair {Path(r['noisy']['path']).name} (ISO {r['noisy']['iso']}) / "
                       f"{Path(r['reference']['path']).name} (ISO {r['reference']['iso']}): {r['reason']}")
        for path, reason in self.unpaired:
            out.append(f"  not paired: {path}: {reason}")
        for path, reason in self.failed:
            out.append(f"  failed: {describe_failure(path, reason)}")
        return out


def keep_copy(copies: list[Path], paths: list[Path], report: BuildReport) -> Path:
    """Which of several byte-identical files to use: the one whose folder
    holds the most raws (the copy among its scene's frames, not a stray
    copy elsewhere, which with --scene-dirs would cost its scene a pair);
    the first in path order on a tie.  The others are reported."""
    if len(copies) == 1:
        return copies[0]
    per_folder: dict[Path, int] = {}
    for p in paths:
        per_folder[p.parent] = per_folder.get(p.parent, 0) + 1
    keep = max(copies, key=lambda p: (per_folder[p.parent], -copies.index(p)))
    n = per_folder[keep.parent]
    for p in copies:
        if p != keep:
            report.unpaired.append((str(p), f"same bytes as {keep} (duplicate file): that copy is used, its folder "
                                            f"holds {n} raw(s), this one's {per_folder[p.parent]}"))
    return keep


def _scan_one(args: tuple[str, str]) -> tuple[str, dict | None, np.ndarray | None, str | None]:
    """Pool task: (sha, frame JSON, thumbnail, None) or (sha, None, None, reason)."""
    path, sha = args
    try:
        f = scan_frame(path, sha)
    except KpntError as exc:
        return sha, None, None, str(exc)
    except Exception as exc:  # a bug or an odd file: report, go on
        return sha, None, None, f"unexpected {type(exc).__name__}: {exc}"
    return sha, f.to_json(), f.thumb, None


def _save_thumb(folder: Path, sha: str, thumb: np.ndarray) -> None:
    d = folder / THUMBS_DIR
    d.mkdir(parents=True, exist_ok=True)
    with atomic_file(d / f"{sha}.npy") as fh:
        np.save(fh, thumb.astype(np.float32), allow_pickle=False)


def _load_thumb(folder: Path, sha: str) -> np.ndarray | None:
    p = folder / THUMBS_DIR / f"{sha}.npy"
    if not p.is_file():
        return None
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError):
        return None


class _Runner:
    """Runs tasks inline (jobs 1) or in a spawn process pool."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.pool = None
        if jobs > 1:
            self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"))

    def map(self, fn, items):
        """Yield (item, result or exception) as tasks finish."""
        if self.pool is None:
            for it in items:
                try:
                    yield it, fn(it)
                except Exception as exc:  # reported by the caller
                    yield it, exc
            return
        futures = {self.pool.submit(fn, it): it for it in items}
        for fut in as_completed(futures):
            try:
                yield futures[fut], fut.result()
            except BrokenProcessPool as exc:
                yield futures[fut], RuntimeError(f"worker process died ({exc}); out of memory? try fewer --jobs")
            except Exception as exc:
                yield futures[fut], exc

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def build_dataset(inputs, out, opts: BuildOptions | None = None, jobs: int = 1, force: bool = False,
                  progress: bool = True, verbose: bool = False) -> BuildReport:
    """Build or update the dataset in ``out`` from raws under ``inputs``.

    Args:
        inputs: folders (searched recursively) and/or raw files.
        out: dataset folder (created; never one of the inputs).
        opts: :class:`BuildOptions`.
        jobs: worker processes (1: all in this process).
        force: rebuild pairs already built or rejected, re-read cached files.
        progress: show tqdm progress bars (on stderr, only on a terminal).
    Returns:
        :class:`BuildReport`.
    Raises:
        DatasetError: nothing to work on (no raws found), bad options, or an
            unusable output folder.
    """
    opts = opts or BuildOptions()
    if jobs < 1:
        raise DatasetError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    report = BuildReport(out=out)
    paths, missing = find_raws(inputs)
    for p, reason in missing:
        report.failed.append((str(p), reason))
    if not paths:
        if missing:
            raise DatasetError(f"{missing[0][0]}: {missing[0][1]}")
        raise DatasetError(f"no raw files under {', '.join(map(str, inputs))} (looked for "
                           f"{', '.join(sorted(RAW_SUFFIXES)[:8])}, ...; name other files explicitly)")
    out_resolved = out.resolve()
    for p in paths:
        if out_resolved in p.parents:
            raise DatasetError(f"{p} lies inside the output folder {out}: keep raws and the dataset apart")
    doc = load_manifest(out, missing_ok=True) or new_manifest()
    doc["options"] = opts.to_json()
    bar_opts = dict(file=sys.stderr, disable=None if progress else True, leave=False)

    # 1. hash, dedupe, read new files
    copies: dict[str, list[Path]] = {}
    for p in tqdm(paths, desc="hashing", unit="file", **bar_opts):
        try:
            sha = sha256_file(p)
        except OSError as exc:
            report.failed.append((str(p), f"cannot read the file ({exc.strerror or exc})"))
            continue
        copies.setdefault(sha, []).append(p)
    by_sha = {sha: keep_copy(ps, paths, report) for sha, ps in copies.items()}
    frames: list[FrameInfo] = []
    to_scan = []
    for sha, p in by_sha.items():
        cached = doc["frames"].get(sha)
        thumb = _load_thumb(out, sha) if cached and not force else None
        if cached and thumb is not None:
            f = FrameInfo.from_json(sha, {**cached, "path": str(p)}, thumb)
            doc["frames"][sha]["path"] = str(p)
            frames.append(f)
        elif sha in doc["unreadable"] and not force:
            report.failed.append((str(p), doc["unreadable"][sha]["reason"]))
        else:
            to_scan.append((str(p), sha))
    runner = _Runner(min(jobs, max(len(to_scan), 1)))
    try:
        for (path, sha), res in tqdm(runner.map(_scan_one, to_scan), total=len(to_scan), desc="reading",
                                      unit="file", **bar_opts):
            if isinstance(res, Exception):
                report.failed.append((path, f"unexpected {type(res).__name__}: {res}"))
                continue
            _, info, thumb, err = res
            if err is not None:
                doc["unreadable"][sha] = {"path": path, "reason": err}
                report.failed.append((path, err))
                continue
            doc["unreadable"].pop(sha, None)
            _save_thumb(out, sha, thumb)
            doc["frames"][sha] = info
            frames.append(FrameInfo.from_json(sha, info, thumb))
    finally:
        runner.close()
    report.n_frames = len(frames)
    for f in frames:
        doc["cameras"][f.camera_key] = {"make": f.make, "model": f.model, "sensor": f.cfa.kind,
                                        "cfa": f.cfa.to_json(), "height": f.height, "width": f.width}

    # 2. group and plan
    plan = plan_pairs(frames, opts.scene_dirs, opts.max_gap, opts.min_similarity)
    report.n_scenes = len(plan.scenes)
    report.n_cameras = len({f.camera_key for f in frames})
    for f, reason in plan.unpaired:
        report.unpaired.append((str(f.path), reason))
    run_shas = set(by_sha)
    planned: dict[str, tuple[FrameInfo, FrameInfo]] = {pair_id(r.sha256, n.sha256): (r, n) for r, n in plan.pairs}
    for pid in list(doc["pairs"]) + list(doc["rejected_pairs"]):
        rec = doc["pairs"].get(pid) or doc["rejected_pairs"].get(pid)
        if rec["noisy"]["sha256"] in run_shas and pid not in planned:
            doc["pairs"].pop(pid, None)
            doc["rejected_pairs"].pop(pid, None)
            remove_pair(out, pid)
            report.removed.append(pid)
    jobs_by_ref: dict[str, dict] = {}
    for pid, (ref, noisy) in planned.items():
        if not force and pid in doc["pairs"] and pair_complete(out, pid):
            report.skipped += 1
            report.other_options += doc["pairs"][pid].get("options") != opts.pair_fingerprint()
            continue
        if not force and pid in doc["rejected_pairs"]:
            report.skipped_rejected += 1
            report.rejected.append(doc["rejected_pairs"][pid])
            continue
        job = jobs_by_ref.setdefault(ref.sha256, {
            "out": str(out), "options": opts.to_json(), "camera": ref.camera_key, "verbose": verbose,
            "reference": {"sha256": ref.sha256, **ref.to_json()}, "pairs": []})
        job["pairs"].append({"id": pid, "frame": {"sha256": noisy.sha256, **noisy.to_json()}})
    doc["scenes"] = [s for s in doc["scenes"] if not run_shas.intersection(s["frames"])] + [
        {"camera": s.camera, "reference": s.reference.sha256 if s.reference else None,
         "frames": [f.sha256 for f in s.frames]} for s in plan.scenes]
    save_manifest(out, doc)

    # 3. build, one job per scene
    jobs_list = list(jobs_by_ref.values())
    n_todo = sum(len(j["pairs"]) for j in jobs_list)
    report.attempted = n_todo
    runner = _Runner(min(jobs, max(len(jobs_list), 1)))
    try:
        bar = tqdm(total=n_todo, desc="building", unit="pair", **bar_opts)
        for job, res in runner.map(build_scene, jobs_list):
            if isinstance(res, Exception):
                for pair in job["pairs"]:
                    report.failed.append((pair["frame"]["path"], f"unexpected {type(res).__name__}: {res}"))
                bar.update(len(job["pairs"]))
                continue
            for rec in res["built"]:
                doc["pairs"][rec["id"]] = rec
                doc["rejected_pairs"].pop(rec["id"], None)
                report.built.append(rec)
            for rec in res["rejected"]:
                doc["rejected_pairs"][rec["id"]] = rec
                doc["pairs"].pop(rec["id"], None)
                remove_pair(out, rec["id"])
                report.rejected.append(rec)
            for fail in res["failed"]:
                report.failed.append((fail["path"], fail["reason"]))
            save_manifest(out, doc)
            bar.update(len(job["pairs"]))
        bar.close()
    finally:
        runner.close()

    # 4. rejections of this run's files (older ones of other files kept)
    bad_files = {p for p, _ in report.failed}
    rejections = [r for r in doc["rejections"] if r.get("sha256") not in run_shas and r.get("file") not in bad_files]
    path_sha = {str(p): s for s, p in by_sha.items()}
    for path, reason in report.failed:
        rejections.append({"stage": "read", "file": path, "sha256": path_sha.get(path), "reason": reason})
    for path, reason in report.unpaired:
        rejections.append({"stage": "group", "file": path, "sha256": path_sha.get(path), "reason": reason})
    for r in report.rejected:
        rejections.append({"stage": "pair", "file": r["noisy"]["path"], "sha256": r["noisy"]["sha256"],
                           "reference": r["reference"]["path"], "reason": r["reason"]})
    doc["rejections"] = rejections
    report.n_pairs_total = len(doc["pairs"])
    save_manifest(out, doc)
    return report
