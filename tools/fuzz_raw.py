"""Fuzz kpnt's raw reading and denoising with corrupted DNGs; print the outcome classes.

Valid Bayer and X-Trans DNGs are written with kpnt's own DNG writer
(:func:`kpnt.fuzz.make_sources`); case ``i`` corrupts source ``i % 6`` with a
mutation drawn from ``(--seed, i)`` (:func:`kpnt.fuzz.mutate`: truncations,
bit/byte flips in IFDs and image data, zeroed counts, changed types, huge
dimensions/offsets, broken CFA tags, BlackLevel >= WhiteLevel, bad
NoiseProfile, zero AsShotNeutral, unrepresentable EXIF values), reads it
through ``kpnt.io.read_raw`` and, where accepted, denoises it on the CPU with
the shipped weights, writes the DNG and reads it back with rawpy.

Cases run in supervised worker processes (spawned), so a crash inside LibRaw
or a hang is caught and counted, and the worker replaced::

    python tools/fuzz_raw.py --cases 10000 --jobs 2
    python tools/fuzz_raw.py --cases 200 --kinds noise-profile,wb-zero --show 5

Exit status 0 when no case ended untyped, non-finite, hung or crashed.
"""
from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import signal
import sys
import tempfile
import time
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np

from kpnt.fuzz import BAD_OUTCOMES, MUTATIONS, OUTCOMES, make_sources, mutate


def case_bytes(sources: list[bytes], seed: int, i: int, kinds: tuple[str, ...]) -> tuple[bytes, str]:
    """The corrupted file of case ``i`` and its description (deterministic)."""
    rng = np.random.default_rng([seed, i])
    kind = kinds[int(rng.integers(len(kinds)))]
    return mutate(sources[i % len(sources)], rng, kind)


def _worker(conn, source_paths: list[str], seed: int, kinds: tuple[str, ...], folder: str, quiet: bool,
            simulate: dict) -> None:
    """Worker loop: receive a case index, send back (i, desc, outcome, detail).

    ``simulate`` maps case indices to 'crash' (SIGSEGV) or 'hang' (sleep):
    a self-check of the supervisor (``--simulate``)."""
    import signal

    import torch

    from kpnt.fuzz import load_models, run_case

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor ends the run (Ctrl-C reaches the whole group)
    if quiet:  # LibRaw prints 'FILE: Unexpected end of file' itself
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    import logging
    logging.getLogger("kpnt").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    sources = [Path(p).read_bytes() for p in source_paths]
    models = load_models()
    conn.send(("ready", os.getpid()))
    while True:
        i = conn.recv()
        if i is None:
            return
        if simulate.get(i) == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if simulate.get(i) == "hang":
            time.sleep(1e6)
        data, desc = case_bytes(sources, seed, i, kinds)
        outcome, detail = run_case(data, Path(folder) / f"case{i}_{os.getpid()}.dng", models)
        conn.send((i, desc, outcome, detail))


class Pool:
    """Worker processes fed one case at a time; dead or stuck ones replaced."""

    def __init__(self, n: int, args, source_paths, folder):
        self.ctx = mp.get_context("spawn")
        self.spec = (source_paths, args.seed, tuple(args.kinds), folder, not args.libraw_stderr, args.simulate)
        self.workers = {}  # conn -> [process, case, started]
        for _ in range(n):
            self._start()

    def _start(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, *self.spec), daemon=True)
        proc.start()
        child.close()
        msg = parent.recv()  # ("ready", pid): models loaded
        assert msg[0] == "ready"
        self.workers[parent] = [proc, None, 0.0]

    def idle(self):
        return [c for c, w in self.workers.items() if w[1] is None]

    def submit(self, conn, i):
        conn.send(i)
        self.workers[conn][1:] = [i, time.monotonic()]

    def collect(self, timeout: float):
        """Finished results, plus ('hang'|'crash') for stuck or dead workers."""
        busy = [c for c, w in self.workers.items() if w[1] is not None]
        out = []
        for conn in wait(busy, timeout=1.0):
            proc, i, _ = self.workers[conn]
            try:
                out.append(conn.recv())
                self.workers[conn][1] = None
            except (EOFError, OSError):
                proc.join(5)
                out.append((i, None, "crash", f"worker died (exit code {proc.exitcode})"))
                self._replace(conn)
        now = time.monotonic()
        for conn, (proc, i, t0) in list(self.workers.items()):
            if i is not None and now - t0 > timeout:
                proc.kill()
                proc.join(5)
                out.append((i, None, "hang", f"no result after {timeout:g} s"))
                self._replace(conn)
        return out

    def _replace(self, conn):
        del self.workers[conn]
        conn.close()
        self._start()

    def close(self):
        for conn, (proc, _, _) in self.workers.items():
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(5)
            if proc.is_alive():
                proc.kill()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000, help="number of corrupted files (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the corruptions (default 0)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang (default 60)")
    p.add_argument("--kinds", default=",".join(MUTATIONS), help=f"mutations to draw from (default all: {','.join(MUTATIONS)})")
    p.add_argument("--show", type=int, default=3, help="examples printed per outcome class (default 3)")
    p.add_argument("--json", type=Path, help="also write every case's outcome here")
    p.add_argument("--libraw-stderr", action="store_true", help="keep LibRaw's own stderr lines")
    p.add_argument("--simulate", default="", metavar="I=crash,J=hang",
                   help="self-check of the supervisor: case I crashes its worker (SIGSEGV), case J hangs")
    args = p.parse_args(argv)
    try:
        args.simulate = {int(k): v for k, v in (kv.split("=") for kv in args.simulate.split(",") if kv)}
    except ValueError:
        p.error(f"--simulate {args.simulate!r}: expected I=crash,J=hang")
    if set(args.simulate.values()) - {"crash", "hang"}:
        p.error("--simulate: each case is 'crash' or 'hang'")
    if args.cases < 1 or args.jobs < 1 or not args.timeout > 0:
        p.error("--cases, --jobs and --timeout must be positive")
    args.kinds = [k for k in args.kinds.split(",") if k]
    unknown = sorted(set(args.kinds) - set(MUTATIONS))
    if unknown:
        p.error(f"unknown --kinds {unknown}: choose from {', '.join(MUTATIONS)}")

    def stop(signum, _frame):
        raise KeyboardInterrupt

    # SIGTERM (timeout, a scheduler) and SIGINT stop the run with the table
    # of the cases done so far, the workers ended and the temp folder gone.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    interrupted = False
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kpnt-fuzz-") as folder:
        sources = [str(s) for s in make_sources(Path(folder))]
        pool = Pool(min(args.jobs, args.cases), args, sources, folder)
        todo = list(range(args.cases))
        counts, examples, by_kind, rows = collections.Counter(), collections.defaultdict(list), collections.Counter(), []
        done, last = 0, time.monotonic()
        try:
            while done < args.cases:
                for conn in pool.idle():
                    if todo:
                        pool.submit(conn, todo.pop(0))
                for i, desc, outcome, detail in pool.collect(args.timeout):
                    if desc is None:
                        desc = case_bytes([Path(s).read_bytes() for s in sources], args.seed, i, tuple(args.kinds))[1]
                    done += 1
                    counts[outcome] += 1
                    by_kind[(desc.split()[0], outcome)] += 1
                    if len(examples[outcome]) < args.show:
                        examples[outcome].append(f"case {i} [{desc}]: {detail}")
                    rows.append({"case": i, "mutation": desc, "outcome": outcome, "detail": detail})
                if time.monotonic() - last > 30:
                    last = time.monotonic()
                    print(f"  {done}/{args.cases} cases, {time.monotonic() - t0:.0f} s: {dict(counts)}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            pool.close()

    wall = time.monotonic() - t0
    print(f"kpnt fuzz: {done} cases{f' (interrupted; {args.cases} asked)' if interrupted else ''}, seed {args.seed}, "
          f"{args.jobs} job(s), {wall:.0f} s")
    print(f"{'outcome':<18} {'cases':>7} {'share':>7}")
    for o in OUTCOMES:
        print(f"{o:<18} {counts[o]:>7} {100 * counts[o] / max(done, 1):>6.1f}%")
    print("\nby mutation (refused / accepted / other):")
    for kind in args.kinds:
        r, a = by_kind[(kind, "refused-typed")], by_kind[(kind, "accepted-finite")]
        other = sum(v for (k, o), v in by_kind.items() if k == kind and o not in ("refused-typed", "accepted-finite"))
        print(f"  {kind:<16} {r:>6} / {a:>6} / {other:>4}")
    for o in OUTCOMES:
        if examples[o]:
            print(f"\n{o} examples:")
            for line in examples[o]:
                print("  " + line[:300])
    if args.json:
        args.json.write_text(json.dumps({"cases": args.cases, "seed": args.seed, "counts": dict(counts), "rows": rows}))
    bad = sum(counts[o] for o in BAD_OUTCOMES)
    print(f"\n{'FAIL' if bad else 'PASS'}: {bad} case(s) untyped, non-finite, hung or crashed")
    return 130 if interrupted else 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
