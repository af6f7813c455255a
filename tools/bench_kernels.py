"""Build, check and time kpnt's fused CUDA kernels against PyTorch; print a table.

One call does everything a GPU lease should (docs/KERNELS.md, METHOD.md):

1. builds the extension (``kpnt._backend.load``) and reports the build time;
2. measures the device's two ceilings (f16 matrix product, device copy);
3. checks every compiled MLP configuration against a float64 PyTorch MLP on
   fresh random inputs with a pixel count that is not a multiple of the tile:
   forward, weight and input gradients, tiny gradients (f16 underflow),
   grouped weight sets, unwritten outputs (poisoned memory), determinism;
4. checks the fused colour and front levels and the whole model (Bayer,
   X-Trans, odd sizes) against float64 references: outputs, every weight
   set's gradient (against an f16-rounding reference and the exact one);
5. times the colour MLP against eager PyTorch, the grouped front MLP, the
   whole training step (reference vs fused; profile of the fused step) and
   24-MP inference; runs a short training-parity comparison;
6. checks the CUDA-graph-captured step (``kpnt.train.graph_step``) against
   the eager fused step (losses, weights, Adam state, a skipped NaN step,
   one graph per CFA phase) and times reference / fused eager / fused
   graphed training steps for Bayer and X-Trans in one run
   (``--train-steps-only`` runs just this part).

``--inference-only``: every trainable configuration's MLP checks, any
forward-only line of kernels/shapes.def against float64 (none since the
shipped shapes train, session 10), the shipped models (``kpnt/weights``) fused vs float64 and float32 reference on
Bayer and X-Trans mosaics, and 24-MP inference of the shipped models and of
DESIGN.md's default architecture, reference vs fused, in one run.

Separately: ``--compile-step`` times ``torch.compile`` of the reference step
(run it in its own process, it compiles for minutes), ``--sanitize`` runs
small launches of every kernel for ``compute-sanitizer --tool memcheck``.

Usage (GPU machine)::

    PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 python tools/bench_kernels.py --json $OUT/bench.json
    PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 python tools/bench_kernels.py --inference-only --json $OUT/inf.json

Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnt import _backend  # noqa: E402
from kpnt.ops import _cuda  # noqa: E402
from kpnt.mosaic.kinds import MOSAIC_KINDS  # noqa: E402
from kpnt.testing import fused_shapes  # noqa: E402
from kbench_checks import (  # noqa: E402
    check_colour_level, check_config, check_forward_only, check_front_level, check_graph_step, check_model,
    check_shipped_models, sanitize_case,
)
from kbench_common import BAYER, COLOUR, COLOUR128, Checks, FRONT, SLOPE, make_weights, make_x  # noqa: E402
from kbench_targets import format_rows, target_rows  # noqa: E402
from kbench_timing import (  # noqa: E402
    ceilings, compile_step_timing, flops_per_pixel, graph_step_timings, grouped_timings, inference_timings,
    model_timings, parity_run, print_graph_table, timings, STEP_ARCHS,
)


def inference_only(args, props, commit, build_s) -> int:
    chk = Checks()
    t0 = time.perf_counter()
    # every shape of kernels/shapes.def compiled with a backward
    for i, dims in enumerate(sorted({s.mlp.as_tuple() for s in fused_shapes(train=True)})):
        dims = list(dims)
        check_config(chk, dims, args.check_pixels, seed=100 * i)
    check_forward_only(chk, args.check_pixels)
    check_shipped_models(chk)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)
    rows, res = inference_timings(reps=5)
    print(f"\n== 24-MP inference (6000 x 4000 mosaic, inference_mode, CUDA events, median of 5) ==")
    print(f"{'sensor':<8s} {'architecture':<10s} {'reference ms':>13s} {'fused ms':>9s} {'ratio':>7s}")
    ratios = {}
    for sensor in MOSAIC_KINDS:
        for arch in ("shipped", "default"):
            r, f = res[f"inference {sensor} 24 MP {arch} torch"], res[f"inference {sensor} 24 MP {arch} cuda"]
            ratios[f"{sensor} {arch}: reference/fused"] = r / f
            print(f"{sensor:<8s} {arch:<10s} {r:13.1f} {f:9.1f} {r / f:6.1f}x")
    chk.report()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "checks": chk.rows, "timings": rows, "ratios": ratios}, indent=1))
    return 1 if chk.failed else 0


#: Allowed |validation PSNR difference| of the parity runs: DESIGN.md's
#: architecture has kept 0.1 dB since phase 2; issue 14 asks 0.05 dB of the
#: shipped architecture (and so of the wide one).
PARITY_TOL = {"default": 0.1, "shipped": 0.05, "shipped-bf16": 0.05, "wide": 0.05}


def parity_cases(archs: str):
    """(architecture, sensor) pairs of ``--parity-archs``: an entry names
    both sensors ('shipped'; 'default' is Bayer only) or one
    ('shipped:xtrans')."""
    cases = []
    for entry in (a.strip() for a in archs.split(",") if a.strip()):
        arch, _, sensor = entry.partition(":")
        if arch not in PARITY_TOL:
            raise SystemExit(f"bench_kernels: unknown --parity-archs entry {entry!r}: choose from {', '.join(PARITY_TOL)}")
        if sensor and sensor not in MOSAIC_KINDS:
            raise SystemExit(f"bench_kernels: unknown sensor in --parity-archs entry {entry!r}: {' or '.join(MOSAIC_KINDS)}")
        sensors = [sensor] if sensor else [BAYER] if arch == "default" else list(MOSAIC_KINDS)
        cases += [(arch, s) for s in sensors]
    return cases


def run_parity(steps: int, archs: str, seeds: int, first_seed: int = 0, graphed: bool = False) -> dict:
    """``{(arch, sensor): [per-seed parity_run results]}``: each seed draws
    its own batches and initial weights, so the spread over seeds shows
    how far two trajectories drift apart by rounding alone."""
    runs = {}
    for seed in range(first_seed, first_seed + seeds):
        for case, r in parity_run(steps, seed=seed, cases=parity_cases(archs), graphed=graphed).items():
            runs.setdefault(case, []).append(r)
    return runs


def report_parity(chk: Checks, parity: dict):
    """Per case, the fused run's validation PSNR minus the reference's, over
    the seeds in which neither run diverged, against PARITY_TOL: the check
    takes their mean.

    Why seeds are left out: from random weights a 300-step run now and then
    takes a loss spike it has not recovered from by the end (H200, session
    12: X-Trans, mean loss of the last 50 steps ~0.135 against ~0.087, once
    in a fused run and once in a reference one), which moves that seed's
    difference by ~3 dB whichever backend it hits.  A run has diverged when
    its last-50 loss exceeds 1.3x the case's median; the diverged runs are
    printed per backend, so a backend that diverges more often shows, and
    the all-seed mean and median are printed beside the check.
    """
    for (arch, sensor), rs in parity.items():
        ds = [r["cuda"]["psnr"] - r["torch"]["psnr"] for r in rs]
        typical = statistics.median(r[b]["loss_last50"] for r in rs for b in ("torch", "cuda"))
        bad = {i: [b for b in ("torch", "cuda") if r[b]["loss_last50"] > 1.3 * typical] for i, r in enumerate(rs)}
        kept = [d for i, d in enumerate(ds) if not bad[i]]
        n = len(kept)
        mean = sum(kept) / n if n else float("nan")
        # The runs' trajectories diverge (rounding, then chaos), so one seed's
        # difference is mostly noise (H200, session 12: ~0.1 dB per seed).
        se = statistics.stdev(kept) / n ** 0.5 if n > 1 else float("nan")
        diverged = ", ".join(f"seed {i} {'reference' if b == 'torch' else 'fused'}" for i, bs in bad.items() for b in bs)
        ref = " ".join("%.3f" % r["torch"]["psnr"] for r in rs)
        fused = " ".join("%.3f" % r["cuda"]["psnr"] for r in rs)
        diffs = " ".join("%+.3f" % d for d in ds)
        print(f"parity {arch} {sensor}: val PSNR reference {ref} dB, fused {fused} dB; differences {diffs}; "
              f"diverged: {diverged or 'none'}; mean {mean:+.3f} dB (standard error {se:.3f}) over the {n} seed(s) "
              f"without; all {len(ds)}: mean {sum(ds) / len(ds):+.3f}, median {statistics.median(ds):+.3f} dB")
        name = "training parity |dPSNR| (dB)" if arch == "default" else f"training parity {arch} {sensor} |dPSNR| (dB)"
        chk.add(name, abs(mean), PARITY_TOL[arch])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=1 << 22, help="pixels per timed MLP call (default 2^22)")
    ap.add_argument("--check-pixels", type=int, default=100_003, help="pixels per MLP correctness check")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile training step")
    ap.add_argument("--mlp-compile", action="store_true", help="also time torch.compile of the bare MLP")
    ap.add_argument("--compile-timeout", type=int, default=240, help="seconds for the compiled training step")
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model checks and timings")
    ap.add_argument("--parity-steps", type=int, default=300, help="training-parity steps per backend (0: skip)")
    ap.add_argument("--parity-archs", default="default",
                    help="comma-separated architectures of the parity runs (default, shipped, shipped-bf16, wide), each on both "
                         "sensors but 'default' (Bayer), or on one with ARCH:SENSOR; default: default")
    ap.add_argument("--parity-seeds", type=int, default=1, help="parity runs per case, each its own seed; the check "
                    "takes their mean difference (default 1)")
    ap.add_argument("--parity-first-seed", type=int, default=0, help="seed of the first parity run (default 0)")
    ap.add_argument("--parity-only", action="store_true", help="only the training-parity runs and their checks")
    ap.add_argument("--parity-graphed", action="store_true",
                    help="train the fused side of the parity runs as kpnt-train does (CUDA graphs, the update kernels) "
                         "instead of eagerly")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--compile-step", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sanitize", action="store_true", help="run small launches of every kernel (compute-sanitizer)")
    ap.add_argument("--inference-only", action="store_true",
                    help="only the forward-only configurations, the shipped models' checks and 24-MP inference timings")
    ap.add_argument("--train-steps-only", action="store_true",
                    help="only the training-step section: graphed-step checks and the timings of the reference, "
                         "fused eager and CUDA-graph-captured fused steps")
    ap.add_argument("--step-archs", default=None,
                    help="comma-separated architectures of the training-step timings (default: all of "
                         "kbench_timing.STEP_ARCHS)")
    ap.add_argument("--cudnn-benchmark", choices=("on", "off"), default="off",
                    help="cuDNN autotuning (torch.backends.cudnn.benchmark) for every timing, reference and fused "
                         "alike (default off, as kpnt-train and kpnt-denoise run; H200, session 12: the graphed steps "
                         "time the same either way, docs/KERNELS.md)")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_kernels: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
    print(f"cuDNN autotuning {args.cudnn_benchmark}", flush=True)
    if args.compile_step:
        compile_step_timing(reps=10)
        return 0
    if args.sanitize:
        sanitize_case()
        return 0
    if args.parity_only:
        chk = Checks()
        parity = run_parity(args.parity_steps, args.parity_archs, args.parity_seeds, args.parity_first_seed,
                            args.parity_graphed)
        report_parity(chk, parity)
        if args.json:
            args.json.write_text(json.dumps({f"{a} {s}": v for (a, s), v in parity.items()}, indent=1))
        chk.report()
        return 1 if chk.failed else 0
    props = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                          text=True).stdout.strip():
            commit += " with uncommitted changes"
    except OSError:
        commit = "?"
    print(f"device {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, python {platform.python_version()}, commit {commit}, "
          f"kernel sources {_backend.sources_digest()}", flush=True)

    t0 = time.perf_counter()
    ext = _backend.load()
    build_s = time.perf_counter() - t0
    print(f"build/load {build_s:.1f} s; configs {ext.mlp_supported_configs()}", flush=True)
    from kpnt.ops import dispatch

    if args.train_steps_only:
        return train_steps_only(args, props, commit, build_s)
    if args.inference_only:
        return inference_only(args, props, commit, build_s)
    chk = Checks()
    t0 = time.perf_counter()
    chk.flag("kpnt.ops 'cuda' backend loads, fuses colour_level",
             "colour_level" in dispatch._backend_ops("cuda") and dispatch.resolve_backend("auto", torch.device("cuda")) == "cuda")

    tflops, tbs = ceilings()
    print(f"ceilings: f16 matmul {tflops:.0f} TFLOP/s, device copy {tbs:.2f} TB/s", flush=True)

    # every shape of kernels/shapes.def compiled with a backward (both architectures)
    for i, dims in enumerate(sorted({s.mlp.as_tuple() for s in fused_shapes(train=True)})):
        check_config(chk, list(dims), args.check_pixels, seed=100 * i)
    check_colour_level(chk)
    check_front_level(chk)
    if not args.no_model:
        check_model(chk, "default")
        check_model(chk, "shipped")
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)

    rows, res = timings(args.pixels, args.reps, args.mlp_compile)
    rows128, res128 = timings(args.pixels, args.reps, args.mlp_compile, dims=COLOUR128)
    rows += rows128
    res.update(res128)
    grows, gP = grouped_timings(args.pixels, args.reps)
    mrows, mres, comp, parity = [], {}, None, None
    if not args.no_model:
        mrows, mres = model_timings(reps=10)
        if not args.no_compile:
            t0 = time.perf_counter()
            try:
                r = subprocess.run([sys.executable, __file__, "--compile-step"], capture_output=True, text=True,
                                   timeout=args.compile_timeout)
                lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode == 0 and lines:
                    comp = json.loads(lines[-1])
                    print(f"  time train step bayer compile (reference) {comp['ms']:8.2f} ms "
                          f"(compiled in {comp['compile_s']:.0f} s)", flush=True)
                else:
                    tail = (r.stderr.strip().splitlines() or ["?"])[-1]
                    comp = {"error": f"exit {r.returncode}: {tail}"}
                    print(f"  torch.compile of the reference step failed: {comp['error']}", flush=True)
            except subprocess.TimeoutExpired:
                comp = {"error": f"not compiled within {args.compile_timeout} s"}
                print(f"  torch.compile of the reference step: {comp['error']}", flush=True)
            print(f"  (compile subprocess {time.perf_counter() - t0:.0f} s)", flush=True)
        if args.parity_steps:
            parity = run_parity(args.parity_steps, args.parity_archs, args.parity_seeds, args.parity_first_seed,
                                args.parity_graphed)
        check_graph_step(chk)
        grows_, gres = graph_step_timings(reps=10)
        mrows += grows_
        mres.update(gres)

    P = args.pixels
    print(f"\n== MLP timings, P = {P} (colour; 'w128': the shipped width), {gP} (front) ==")
    print(f"{'case':<46s} {'ms':>9s} {'Gpix/s':>8s} {'TFLOP/s':>8s}")
    for name, ms, gp in rows + grows:
        fwd_f, bwd_f = flops_per_pixel(COLOUR128 if name.endswith(" w128") else COLOUR)
        fl = ""
        if name.startswith("fused fwd+bwd (dW)"):
            fl = f"{(fwd_f + bwd_f) * gp * 1e9 / 1e12:8.1f}"
        elif name.startswith("fused fwd"):
            fl = f"{fwd_f * gp * 1e9 / 1e12:8.1f}"
        print(f"{name:<46s} {ms:9.3f} {gp:8.2f} {fl:>8s}")
    ratios = {}
    for suffix in ("", " w128"):
        for base in ("eager f32", "eager f16", "compile f16"):
            for kind, fused in (("fwd", "fused fwd"), ("fwd+bwd", "fused fwd+bwd (dW)")):
                key = f"{base} {kind}{suffix}"
                if key in res:
                    ratios[f"fused/{key}"] = res[key] / res[fused + suffix]
    if mres:
        print("\n== whole model (Adam step incl.) ==")
        for name, ms, _ in mrows:
            print(f"{name:<40s} {ms:9.2f} ms")
        for sensor in MOSAIC_KINDS:
            k = f"train step {sensor} 4x512x512"
            ratios[f"train {sensor}: reference/fused"] = mres[f"{k} torch"] / mres[f"{k} cuda"]
        if comp and "ms" in comp:
            print(f"{'train step bayer 4x512x512 compile':<40s} {comp['ms']:9.2f} ms")
            ratios["train bayer: compile/fused"] = comp["ms"] / mres["train step bayer 4x512x512 cuda"]
        ratios.update(print_graph_table(mres, comp))
        if "inference bayer 24 MP cuda" in mres and "inference bayer 24 MP torch" in mres:
            ratios["24MP: reference/fused"] = mres["inference bayer 24 MP torch"] / mres["inference bayer 24 MP cuda"]
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print(format_rows(target_rows(res, P, ratios)))
    if parity:
        report_parity(chk, parity)
    try:
        _cuda.fused_mlp(make_x(10, 32), make_weights([32, 48, 16, 2]), SLOPE)
        chk.flag("unsupported config raises ValueError", False, "no error")
    except ValueError as e:
        chk.flag("unsupported config raises ValueError", "compiled configurations" in str(e))
    chk.report()

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "ceilings": {"f16_tflops": tflops, "copy_tbs": tbs},
            "checks": chk.rows, "timings": rows + grows + mrows, "ratios": ratios, "pixels": P,
            "compile_step": comp, "parity": {f"{a} {s}": v for (a, s), v in (parity or {}).items()},
        }, indent=1))
    return 1 if chk.failed else 0


def train_steps_only(args, props, commit, build_s) -> int:
    """``--train-steps-only``: graphed-step checks, then the four train steps
    per sensor timed in one run, a table and ratios."""
    chk = Checks()
    t0 = time.perf_counter()
    try:
        check_graph_step(chk)
    except Exception:
        traceback.print_exc()
        chk.flag("graphed step checks ran", False)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)
    archs = tuple(args.step_archs.split(",")) if args.step_archs else tuple(STEP_ARCHS)
    rows, res = graph_step_timings(reps=args.reps if args.reps != 30 else 10, archs=archs)
    ratios = print_graph_table(res)
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    chk.report()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "checks": chk.rows, "timings": rows, "ratios": ratios, "raw": res,
        }, indent=1))
    return 1 if chk.failed else 0


if __name__ == "__main__":
    sys.exit(main())
