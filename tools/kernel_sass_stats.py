#!/usr/bin/env python3
"""Static look at the fused kernels without a GPU: compile kernels/*.cu for
one architecture with the extension's flags and print, per kernel, its SASS
instruction count, tensor-core instructions, subroutine calls, registers and
spills; with ``--base REV``, the same for a git revision's kernels beside it.

    python tools/kernel_sass_stats.py                       # this tree, sm_90
    python tools/kernel_sass_stats.py --base ebf51d6        # before / after
    python tools/kernel_sass_stats.py --filter 'Li64E'      # width-64 shapes only

Counts are static (each instruction once, however often it runs; a path
compiled twice, as the front level's interior and edge tap paths, counts
twice), so they say where a kernel's instructions are, not how long it runs:
a GPU run of tools/bench_kernels.py does that.  Needs nvcc and cuobjdump
(the NVIDIA wheel ``nvidia-cuda-cuobjdump`` has one: pass --cuobjdump or put
it on PATH).  docs/KERNELS.md ("Session 22") quotes this tool's numbers.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS = ("mlp", "colour_level", "front_level")


def nvcc_flags(arch: str) -> list[str]:
    """The flags the extension's build gives nvcc for ``arch`` ('sm_90'):
    torch.utils.cpp_extension's common ones and
    :func:`kpnt._backend.build_flags`' own (cpp_extension adds the C++
    standard, so this does too)."""
    sys.path.insert(0, str(ROOT))
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    from kpnt._backend import build_flags

    digits = arch.removeprefix("sm_").rstrip("a")
    own = build_flags(f"{digits[:-1]}.{digits[-1]}")["cuda_cflags"]  # given the arch: no GPU is asked
    return [f"-arch={arch}", "-std=c++17", *COMMON_NVCC_FLAGS, *own]


def short_name(mangled: str) -> str:
    """'fwd 32x64x16x6 MapIn/ApplyOut' from a mangled kernel name."""
    m = re.search(r"(mlp_fwd|mlp_bwd_split|mlp_bwd|mlp_dw|front_maps|front_adjoint|colour_maps)_kernel(.*)", mangled)
    if not m:
        return mangled[:60]
    kind, rest = m.group(1).replace("mlp_", ""), m.group(2)
    cfg = re.search(r"CfgILi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)", rest)
    # Itanium mangling: each name is its length then its characters (NS0_6RowsIn...).
    policies = [rest[m.end():m.end() + int(m.group(1))] for m in re.finditer(r"NS0_(\d+)", rest)]
    policies = [p for p in policies if p != "Cfg"]
    return " ".join(filter(None, [kind, "x".join(cfg.groups()) if cfg else "", "/".join(policies[:2])]))


def compile_unit(kernels: Path, unit: str, flags: list[str], out: Path, cuobjdump: str) -> dict[str, dict]:
    """{kernel: {'instructions', 'mma', 'calls', 'registers', 'spill'}} of one translation unit."""
    obj = out / f"{unit}.o"
    res = subprocess.run(["nvcc", *flags, "--resource-usage", "-c", str(kernels / f"{unit}.cu"),
                          "-o", str(obj)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"kernel_sass_stats: nvcc failed on {unit}.cu:\n{res.stderr[-2000:]}")
    stats: dict[str, dict] = collections.defaultdict(dict)
    current = None
    for line in res.stderr.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            current = m.group(1)
            continue
        m = re.search(r"(\d+) bytes spill stores", line)
        if m and current:
            stats[current]["spill"] = int(m.group(1))
        m = re.search(r"Used (\d+) registers", line)
        if m and current:
            stats[current]["registers"] = int(m.group(1))
    sass = subprocess.run([cuobjdump, "-sass", str(obj)], capture_output=True, text=True, check=True).stdout
    current = None
    for line in sass.splitlines():
        m = re.search(r"Function : (\S+)", line)
        if m:
            current = m.group(1)
            stats[current].update(instructions=0, mma=0, calls=0)
            continue
        m = re.match(r"\s+/\*[0-9a-f]{4,}\*/\s+(@!?U?P[0-9T]+\s+)?([A-Z][A-Z0-9_]*)", line)
        if m and current:
            op = m.group(2)
            stats[current]["instructions"] += 1
            stats[current]["mma"] += op in ("HMMA", "HGMMA")
            stats[current]["calls"] += op == "CALL"
    return stats


def tree_stats(kernels: Path, arch: str, cuobjdump: str) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = {}
        flags = nvcc_flags(arch)
        for unit in UNITS:
            for name, s in compile_unit(kernels, unit, flags, Path(tmp), cuobjdump).items():
                out[f"{unit}: {short_name(name)}"] = s
        return out


def revision_kernels(rev: str, dest: Path) -> Path:
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "kernels/"], capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{f}"], capture_output=True, check=True).stdout
        (dest / Path(f).name).write_bytes(blob)
    return dest


def cell(s: dict | None, key: str) -> str:
    return "-" if s is None or key not in s else str(s[key])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="sm_90", help="nvcc -arch (default sm_90, as TORCH_CUDA_ARCH_LIST=9.0 builds)")
    ap.add_argument("--base", help="a git revision whose kernels/ to compile beside this tree's")
    ap.add_argument("--filter", default="", help="only kernels whose row matches this regular expression")
    ap.add_argument("--cuobjdump", default=shutil.which("cuobjdump"), help="the cuobjdump binary (default: on PATH)")
    args = ap.parse_args(argv)
    if shutil.which("nvcc") is None:
        print("kernel_sass_stats: needs nvcc on PATH", file=sys.stderr)
        return 2
    if not args.cuobjdump:
        print("kernel_sass_stats: needs cuobjdump (pip install nvidia-cuda-cuobjdump, then --cuobjdump PATH)",
              file=sys.stderr)
        return 2
    after = tree_stats(ROOT / "kernels", args.arch, args.cuobjdump)
    before = None
    if args.base:
        with tempfile.TemporaryDirectory() as tmp:
            before = tree_stats(revision_kernels(args.base, Path(tmp)), args.arch, args.cuobjdump)
    keys = [k for k in after if re.search(args.filter, k)]
    if before is None:
        print(f"| kernel ({args.arch}) | instructions | tensor-core | calls | registers | spill bytes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for k in keys:
            s = after[k]
            print(f"| {k} | {cell(s, 'instructions')} | {cell(s, 'mma')} | {cell(s, 'calls')} | "
                  f"{cell(s, 'registers')} | {cell(s, 'spill')} |")
    else:
        print(f"| kernel ({args.arch}), {args.base} -> this tree | instructions | tensor-core | calls | registers | "
              "spill bytes |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for k in keys:
            b, a = before.get(k), after[k]
            row = " | ".join(f"{cell(b, key)} / {cell(a, key)}"
                             for key in ("instructions", "mma", "calls", "registers", "spill"))
            print(f"| {k} | {row} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
