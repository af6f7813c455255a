"""The benchmark loop: every sensor x cell x photo, kpnt and the peers on
the same synthetic raw, scored against the same clean scene.

kpnt and demosaicnet run in this process on the scoring device; their
outputs are scored, and the CPU-only peers (LibRaw, NLM, Menon, BM3D) run and
scored, in ``--jobs`` worker processes of one thread each.  Peers found in the peer cache are not run again (the rows say how many
of their cases came from it).
"""
from __future__ import annotations

import dataclasses
import glob
import importlib.util
import multiprocessing
import os
import shutil
import tempfile
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from kpnt.bench import peers as P
from kpnt.bench.cache import PeerCache, case_key
from kpnt.bench.cases import CLEAN, case_cfa, case_seed, cell_profile, make_case, memory_raw, mosaic_wb, profile_at_iso
from kpnt.bench.checks import ISO100_VARIANT
from kpnt.bench.metrics import pool_colour_stats, score
from kpnt.bench.speed import bm3d_crop_seconds, load_kpnt, speed_image, speed_test, time_devices, timed
from kpnt.color import find_camera
from kpnt.denoise import NoiseChoice, choose_noise, denoise_raw
from kpnt.noise import load_profile_table
from kpnt.train.photos import PhotoSource, list_photos, load_linear_photo
from kpnt.mosaic.kinds import BAYER, MOSAIC_KINDS, XTRANS

#: every method the benchmark knows, in table order (kpnt may come as
#: several ``kpnt:<weights>`` methods)
METHODS = ("kpnt", "libraw", "libraw+nlm", "menon", "demosaicnet", "demosaicnet+bm3d")


def method_order(m: str) -> tuple:
    """Table order: kpnt (each weights file, then its ISO-100-noise variant),
    then the peers in :data:`METHODS` order."""
    base = m.split(":")[0].split("@")[0]
    return (METHODS.index(base) if base in METHODS else len(METHODS), m.split("@")[0], m.endswith(ISO100_VARIANT))


# ----------------------------------------------------------------------
# set-up
# ----------------------------------------------------------------------
def weights_label(path: Path, paths: list[Path]) -> str:
    """``kpnt:<name>``: the run folder of ``runs/NAME/weights.safetensors``,
    else the file's stem; the whole path where names would collide."""
    name = path.parent.name if path.stem == "weights" else path.stem
    names = [(p.parent.name if p.stem == "weights" else p.stem) for p in paths]
    return f"kpnt:{name if names.count(name) == 1 else str(path)}"


def kpnt_weights(args) -> dict[str, dict[str, Path]]:
    """sensor -> {method label: weights file}: the two ``--*-weights`` files
    (label ``kpnt``), or every file ``--weights-glob`` matches, grouped by
    the sensor its metadata names."""
    if not args.weights_glob:
        return {BAYER.name: {"kpnt": args.bayer_weights}, XTRANS.name: {"kpnt": args.xtrans_weights}}
    from kpnt.weights_io import read_metadata

    files = sorted(Path(f) for f in glob.glob(args.weights_glob, recursive=True))
    if not files:
        raise SystemExit(f"--weights-glob {args.weights_glob!r} matches no file: quote the pattern and check the folder")
    out = {k: {} for k in MOSAIC_KINDS}
    for f in files:
        sensor = read_metadata(f).get("sensor")
        if sensor in out:
            out[sensor][weights_label(f, files)] = f
        else:
            print(f"note: {f}: weights for {sensor!r}, not scored (the benchmark has bayer and xtrans raws)")
    return out


def select_photos(folder, limit: int | None, downscale: int) -> tuple[list[int], PhotoSource]:
    """The folder's photos in sorted order, or with ``limit`` N of them
    spread evenly over it (``i * len // N``: a folder sorted by source set,
    as photos/val is, keeps every set in a subset).  Each keeps its index in
    the whole folder, which seeds its cases: a subset's cases are the full
    run's, so the peer cache serves both.  Returns ``(indices, photos)``."""
    files = list_photos(folder)
    n = len(files)
    idx = list(range(n)) if not limit or limit >= n else [i * n // limit for i in range(limit)]
    return idx, PhotoSource([load_linear_photo(files[i], downscale) for i in idx], [files[i].name for i in idx])


def resolve_methods(requested: list[str]) -> list[str]:
    """Drop peers that cannot run here, each with a printed note."""
    out = []
    for m in requested:
        why = P.missing_package(m) if m != "kpnt" else None
        if why:
            print(f"note: {why}")
            continue
        out.append(m)
    return out


def kpnt_input(mode: str):
    """``(to_raw, name)``: how kpnt gets a case.  ``dng``: written as a CFA
    DNG and read back with :func:`kpnt.io.read_raw` (rawpy), as
    ``kpnt-denoise`` reads files; ``memory``: :func:`memory_raw` (the same
    normalisation, no file, no rawpy); ``auto``: dng where rawpy is
    installed, else memory (said on the console)."""
    if mode == "auto":
        mode = "dng" if importlib.util.find_spec("rawpy") is not None else "memory"
        if mode == "memory":
            print("note: rawpy is not installed: kpnt reads the synthetic raws from memory (--kpnt-input memory), not through a DNG")
    if mode == "memory":
        return memory_raw, "memory"
    if importlib.util.find_spec("rawpy") is None:
        raise SystemExit("--kpnt-input dng needs rawpy (pip install rawpy): install it or pass --kpnt-input memory")
    tmp = Path(tempfile.mkdtemp(prefix="kpnt-bench-dng-"))   # emptied after each read; one empty folder stays

    def via_dng(case):
        from kpnt.io.dng import write_cfa_dng
        from kpnt.io.raw import read_raw

        path = tmp / f"case_{case['seed']}.dng"
        write_cfa_dng(path, case["counts"], case["cfa"], case["meta"], overwrite=True)
        try:
            return read_raw(path)
        finally:
            path.unlink(missing_ok=True)

    return via_dng, "dng"


def peer_options(method: str, args, device: str) -> dict:
    """The options a peer's numbers depend on (part of its cache key)."""
    dn = dict(domain=args.demosaicnet_domain, device=torch.device(device).type)
    return {"libraw": {}, "libraw+nlm": dict(nlm_h=args.nlm_h), "menon": dict(refining_step=True),
            "demosaicnet": dn, "demosaicnet+bm3d": dict(dn, bm3d="bm3d_rgb profile np, opp, GAT sigma 1")}[method]


# ----------------------------------------------------------------------
# the CPU-only peers: run in worker processes
# ----------------------------------------------------------------------
def _worker_init(threads: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    cv2.setNumThreads(threads)
    torch.set_num_threads(threads)


def cpu_peers(case: dict, methods: list[str], dnet_out: np.ndarray | None, nlm_h: float, tmp_dir: str,
              outputs: dict | None = None) -> dict:
    """Score the device methods' outputs of one case and run and score its
    CPU-only peers (in a worker: scoring costs about a second per output of
    a 0.5-MP photo, so it is spread over the workers too).

    Args:
        methods: CPU peers to run (``libraw`` also runs, unscored, when only
            ``libraw+nlm`` is asked).
        dnet_out: demosaicnet's camera-RGB output (for ``demosaicnet+bm3d``).
        outputs: ``method -> (camera RGB, seconds)`` computed on the device
            (kpnt, demosaicnet), to be scored here.
    Returns:
        method -> :func:`kpnt.bench.metrics.score`'s dict plus ``sec``, the
        method's own step (``libraw+nlm``: NLM alone; ``demosaicnet+bm3d``:
        BM3D alone on ``dnet_out``).
    """
    res = {m: dict(score(out, case), sec=sec) for m, (out, sec) in (outputs or {}).items()}
    lr = None
    if "libraw" in methods or "libraw+nlm" in methods:
        lr, sec = timed(lambda: P.libraw(case, tmp_dir))
        if "libraw" in methods:
            res["libraw"] = dict(score(lr, case), sec=sec)
    if "libraw+nlm" in methods:
        out, sec = timed(lambda: P.libraw_nlm(lr, case, nlm_h))
        res["libraw+nlm"] = dict(score(out, case), sec=sec)
    if "menon" in methods:
        out, sec = timed(lambda: P.menon_demosaic(case))
        res["menon"] = dict(score(out, case), sec=sec)
    if "demosaicnet+bm3d" in methods:
        wb = case["wb"]
        out, sec = timed(lambda: P.bm3d_denoise(dnet_out * wb, case["noise_wb"]) / wb)
        res["demosaicnet+bm3d"] = dict(score(out, case), sec=sec)
    return res


class _Inline:
    """A stand-in for a process pool that runs each job at once (--jobs 1)."""

    class _Done:
        def __init__(self, fn, a):
            self.value = fn(*a)

        def result(self):
            return self.value

        def cancel(self):
            return False         # it ran already

        def done(self):
            return True

    def submit(self, fn, *a):
        return self._Done(fn, a)

    def shutdown(self, wait=True, cancel_futures=False):
        pass


class PeerJobs:
    """The CPU peers' jobs in flight: collected oldest first into the tally
    and the cache, at most ``max_outstanding`` queued (each holds a case's
    arrays), the cache saved every ``save_every`` seconds so that a run
    that is stopped keeps what it computed, and an optional deadline
    (``time.perf_counter()`` value) after which queued jobs are cancelled
    and only the running ones are waited for."""

    def __init__(self, pool, cache: PeerCache, tally, max_outstanding: int, deadline: float | None, save_every: float = 30.0):
        self.pool, self.cache, self.tally = pool, cache, tally
        self.max_outstanding, self.deadline, self.save_every = max_outstanding, deadline, save_every
        self.queue: list[tuple] = []
        self.done: dict[tuple, int] = {}
        self.cancelled = 0
        self.stopped = False
        self._saved = time.perf_counter()

    def expired(self) -> bool:
        """True once the deadline (if any) has passed."""
        return self.deadline is not None and time.perf_counter() > self.deadline

    def stop_now(self) -> bool:
        """True past the deadline; the run is then partial (``stopped``)."""
        self.stopped = self.stopped or self.expired()
        return self.stopped

    def submit(self, sensor, cell, k: int, mp: float, keys: dict, *call) -> None:
        """Queue ``call`` (a function and its arguments) for photo ``k``;
        ``keys``: method -> cache key of the peers it computes."""
        self.queue.append((sensor, cell, k, mp, keys, self.pool.submit(*call)))
        while self.queue and (self.queue[0][-1].done() or (len(self.queue) > self.max_outstanding and not self.expired())):
            self._collect(self.queue.pop(0))

    def _collect(self, job) -> None:
        sensor, cell, k, mp, keys, fut = job
        for m, r in fut.result().items():
            if m in keys:             # a peer (kpnt is measured, never cached)
                self.cache.put(keys[m], r)
            self.tally.add(sensor, cell, m, r, mp, k)
        self.done[(sensor, cell)] = self.done.get((sensor, cell), 0) + 1
        if time.perf_counter() - self._saved > self.save_every:
            self.cache.save()
            self._saved = time.perf_counter()

    def drain(self) -> None:
        """Collect every job; past the deadline, cancel the queued ones
        (counted in ``cancelled``) and collect only those already running."""
        while self.queue:
            job = self.queue.pop(0)
            if self.expired() and job[-1].cancel():
                self.cancelled += 1
                continue
            self._collect(job)
        self.cache.save()


# ----------------------------------------------------------------------
# accumulation
# ----------------------------------------------------------------------
class Tally:
    """Per (sensor, cell, method): the cases' scores, seconds and
    megapixels, and how many came from the peer cache."""

    def __init__(self):
        self.acc: dict[tuple, dict] = {}

    def add(self, sensor, cell, method, result: dict, mp: float, photo: int, cached: bool = False) -> None:
        """Add one case's result (:func:`cpu_peers`' dict) of ``method``."""
        a = self.acc.setdefault((sensor, cell, method), dict(lin=[], srgb=[], ssim=[], colour=[], sec=0.0, mpix=0.0, cached=0, photos={}))
        for k in ("lin", "srgb", "ssim", "colour"):
            a[k].append(result[k])
        a["photos"][int(photo)] = [result["lin"], result["srgb"], result["ssim"]]
        a["sec"] += float(result["sec"])
        a["mpix"] += mp
        a["cached"] += int(cached)

    def rows(self, cams: dict, hows: dict, kpnt_input: str) -> tuple[list[dict], dict]:
        """``(rows, colour)``: one row per (sensor, cell, method) in table
        order (``photos``: photo number -> [PSNR linear, PSNR sRGB, SSIM],
        to find the hard photos), and the pooled colour statistics of each."""
        def order(key):
            s, c, m = key
            return (list(cams).index(s), list(hows[s]).index(c)) + method_order(m)

        rows, colour = [], {}
        for key in sorted(self.acc, key=order):
            s, c, m = key
            a = self.acc[key]
            spm = a["sec"] / a["mpix"]
            base = P.BASE.get(m)
            if base and (s, c, base) in self.acc:   # a peer built on another includes its time
                b = self.acc[(s, c, base)]
                spm += b["sec"] / b["mpix"]
            colour[key] = pool_colour_stats(a["colour"])
            rows.append(dict(sensor=s, cell=c, iso=None if c == CLEAN else c, camera=cams[s], method=m, n=len(a["lin"]),
                             noise=hows[s][c], psnr_lin=float(np.mean(a["lin"])), psnr_srgb=float(np.mean(a["srgb"])),
                             ssim_srgb=float(np.mean(a["ssim"])), sec_per_mpix=spm, cached=a["cached"],
                             photos={k: a["photos"][k] for k in sorted(a["photos"])},
                             kpnt_input=kpnt_input if m.startswith("kpnt") else None))
        return rows, colour


# ----------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------
def run(args) -> dict:
    """Run the benchmark that :func:`kpnt.bench.cli.main` parsed.

    Returns:
        dict with ``rows`` (:meth:`Tally.rows`), ``colour`` ((sensor, cell,
        method) -> pooled colour statistics), ``speed`` (speed-test rows),
        ``devices``, ``backends``, ``build_s``, ``notes``, ``cache``
        (hits/misses), ``kpnt_input``, ``partial`` (True where
        ``--time-budget`` stopped the run early), ``wall_s``.
    """
    from kpnt.bench.errormaps import ErrorMaps

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    t_start = time.perf_counter()
    methods = resolve_methods(args.methods)
    devices = time_devices(args.time_device)
    qdev = devices[0]
    table = load_profile_table(args.profiles)
    indices, photos = select_photos(args.photos, args.limit, args.downscale)
    weights = kpnt_weights(args) if "kpnt" in methods else {}
    to_raw, kin = kpnt_input(args.kpnt_input) if "kpnt" in methods else (None, None)
    cache = PeerCache(args.peer_cache)
    jobs = max(1, int(args.jobs))
    if jobs > 1:
        pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init, initargs=(1,))
    else:
        pool = _Inline()
    tmp = tempfile.mkdtemp(prefix="kpnt-bench-")
    emaps = ErrorMaps(args.error_maps, args.error_map_cell, photos, indices, args.error_map_photos) if args.error_maps else None
    tally, speed_rows, bm3d_jobs = Tally(), [], []
    deadline = t_start + args.time_budget if args.time_budget else None
    jobs_q = PeerJobs(pool, cache, tally, max_outstanding=8 * jobs, deadline=deadline)
    out = dict(devices=devices, quality_device=qdev, backends={}, build_s={}, notes=[], kpnt_input=kin,
               photo_names=dict(zip(indices, photos.names)))
    cams, hows = {}, {}
    dn_mod = P.import_demosaicnet()[0] if any(m.startswith("demosaicnet") for m in methods) else None
    try:
        for sensor in args.sensors:
            cam = find_camera(args.bayer_camera if sensor == BAYER.name else args.xtrans_camera)
            cams[sensor], hows[sensor] = f"{cam['make']} {cam['model']}", {}
            models = {}
            for label, path in weights.get(sensor, {}).items():
                model, backend, info = load_kpnt(path, sensor, qdev)
                models[label] = model
                out["backends"][f"{sensor}/{label}"] = backend
                if "build_s" in info:
                    out["build_s"][f"{sensor}/{label}"] = info["build_s"]
                if "fallback" in info:
                    out["notes"].append(f"{sensor} {label}: fused kernels unavailable ({info['fallback']}); reference ran")
            # --ensemble: each model also as the mean of N views (kpnt.ensemble), label LABEL:viewsN
            views = {label: 1 for label in models}
            for label, model in list(models.items()):
                for v in args.ensemble:
                    if v > 1:
                        models[f"{label}:views{v}"], views[f"{label}:views{v}"] = model, v
            if "kpnt" in methods and not models:
                print(f"note: no {sensor} weights: kpnt skipped for {sensor}")
            sensor_methods = [m for m in methods if m != "kpnt"]
            if sensor == XTRANS.name and "menon" in sensor_methods:
                sensor_methods.remove("menon")
                print("note: menon skipped for xtrans (Menon 2007 is a Bayer method)")
            if not models and not sensor_methods:
                continue                     # nothing to score for this sensor
            dnet = P.DemosaicNet(dn_mod, sensor, args.demosaicnet_domain, device=qdev) if dn_mod else None
            warm = set()
            for cell in args.isos:
                if jobs_q.stop_now():
                    break
                prof, how = cell_profile(table, cam, cell)
                hows[sensor][cell] = how
                if how.startswith(("pushed", "clamped")):
                    print(f"note: {cams[sensor]} ISO {cell}: noise profile {how}")
                peers_here = [m for m in sensor_methods if cell != CLEAN or m not in P.DENOISERS]
                if cell == CLEAN or cell < args.bm3d_min_iso:
                    peers_here = [m for m in peers_here if m != "demosaicnet+bm3d"]
                iso100 = profile_at_iso(table, cam["make"], cam["model"], 100)[0] if cell == CLEAN else None
                for k, img in zip(indices, photos.photos):
                    if jobs_q.stop_now():
                        break
                    seed = case_seed(sensor, cell, k)
                    case = make_case(img, case_cfa(sensor, seed), cam, prof, seed, iso=0 if cell == CLEAN else cell)
                    mp = case["mp"]
                    outputs = {}                 # device outputs, scored in a worker
                    if models:
                        raw = to_raw(case)
                        noise = NoiseChoice(case["noise"], "given")
                        if args.blind:
                            noise = choose_noise(types.SimpleNamespace(mosaic=raw.mosaic, cfa=raw.cfa, path=raw.path,
                                                                       meta=dataclasses.replace(raw.meta, noise_profile=None)))
                        variants = [("", noise)] + ([(ISO100_VARIANT, NoiseChoice(iso100.as_array(), "given"))] if iso100 else [])
                        for label, model in models.items():
                            for suffix, nz in variants:
                                def go(m=model, n=nz, v=views[label]):
                                    return denoise_raw(m, raw, n, tile=0, device=qdev, views=v)

                                if label not in warm:        # allocations, kernel choices: untimed
                                    timed(go, qdev)
                                    warm.add(label)
                                res, sec = timed(go, qdev)
                                outputs[label + suffix] = (res, sec)
                                if emaps and not suffix and label == next(iter(models)):
                                    emaps.add(sensor, cell, k, "kpnt", res, case)
                    # peers: from the cache where possible
                    keys = {m: case_key(case, m, peer_options(m, args, qdev), P.package_versions(m)) for m in peers_here}
                    hits = {m: cache.get(keys[m]) for m in peers_here}
                    for m, hit in hits.items():
                        if hit is not None:
                            tally.add(sensor, cell, m, hit, mp, k, cached=True)
                    need_dn = dnet is not None and (any(hits.get(m, 0) is None for m in ("demosaicnet", "demosaicnet+bm3d"))
                                                    or (emaps and emaps.wants(cell, k)))
                    dnet_out = None
                    if need_dn:
                        wb = case["wb"]
                        if "dn" not in warm:
                            timed(lambda: dnet(mosaic_wb(case), case["cfa"]), qdev)
                            warm.add("dn")
                        dnet_out, sec = timed(lambda: dnet(mosaic_wb(case), case["cfa"]) / wb, qdev)
                        if "demosaicnet" in hits and hits["demosaicnet"] is None:
                            outputs["demosaicnet"] = (dnet_out, sec)
                        if emaps:
                            emaps.add(sensor, cell, k, "demosaicnet", dnet_out, case)
                    todo = [m for m in P.CPU_PEERS if m in hits and hits[m] is None]
                    if todo or outputs:
                        jobs_q.submit(sensor, cell, k, mp, {m: keys[m] for m in todo + [m for m in outputs if m in keys]},
                                      cpu_peers, case, todo, dnet_out if "demosaicnet+bm3d" in todo else None,
                                      args.nlm_h, tmp, outputs)
                print(f"{sensor} {cell}: {len(photos.photos)} photos through kpnt/demosaicnet on {qdev}; "
                      f"{jobs_q.done.get((sensor, cell), 0)} CPU peer jobs of the cell done, {len(jobs_q.queue)} queued "
                      f"({time.perf_counter() - t_start:.0f} s)", flush=True)
            if jobs_q.stop_now():
                print(f"note: --time-budget {args.time_budget:g} s spent: stopping (the peer cache keeps what was computed)", flush=True)
                break
            # headline speed: one large synthetic raw (one kpnt model only)
            if args.speed_mp > 0 and len(models) == 1:
                noisy = [c for c in args.isos if c != CLEAN]
                iso_s = 3200 if 3200 in noisy else (noisy[0] if noisy else 3200)
                prof_s, _ = profile_at_iso(table, cam["make"], cam["model"], iso_s)
                cfa = case_cfa(sensor, case_seed(sensor, "speed", 0))
                sm = {}
                for dev in devices:
                    model, backend, _ = load_kpnt(next(iter(weights[sensor].values())), sensor, dev)
                    sm[dev] = (model, backend)
                sd = {dev: P.DemosaicNet(dn_mod, sensor, args.demosaicnet_domain, device=dev) for dev in devices} if dn_mod else {}
                if args.bm3d_speed_mp > 0 and "demosaicnet+bm3d" in methods and sd:
                    bc = make_case(speed_image(photos.photos[0], args.bm3d_speed_mp), cfa, cam, prof_s, seed=case_seed(sensor, "speed", 1))
                    crop = sd[qdev](mosaic_wb(bc), cfa)
                    bm3d_jobs.append((sensor, bc["mp"], pool.submit(bm3d_crop_seconds, crop, bc["noise_wb"])))
                print(f"{sensor}: timing kpnt/demosaicnet on a {args.speed_mp:g}-MP synthetic raw on {', '.join(devices)} ...", flush=True)
                srows, _ = speed_test(sensor, cam, cfa, prof_s, photos.photos[0], args.speed_mp, sm, sd,
                                      cpu_mp=args.cpu_speed_mp, to_raw=to_raw)
                speed_rows += srows
            elif args.speed_mp > 0 and len(models) > 1:
                print(f"note: {sensor}: {len(models)} weights files: no large-raw speed test (it times one model)")
        jobs_q.drain()
        for sensor, mp, fut in bm3d_jobs:
            sec = fut.result()
            speed_rows.append(dict(sensor=sensor, method="bm3d", device="cpu", backend="bm3d (no GPU path)", mp=mp, sec=sec,
                                   sec_per_mpix=sec / mp, how=f"one {mp:.2f}-MP synthetic raw demosaicked by demosaicnet"))
    finally:
        cache.save()        # first: a stop (TERM, an error) keeps what was computed
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(tmp, ignore_errors=True)
    rows, colour = tally.rows(cams, hows, kin)
    if emaps:
        out["error_maps"] = emaps.write()
    out.update(rows=rows, colour=colour, speed=speed_rows, jobs=jobs, threads=args.threads,
               partial=jobs_q.stopped or jobs_q.cancelled > 0,
               cache=dict(path=str(cache.path) if cache.path else None, hits=cache.hits, misses=cache.misses),
               wall_s=time.perf_counter() - t_start)
    return out
