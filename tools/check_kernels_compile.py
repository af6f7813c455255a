#!/usr/bin/env python3
"""Compile kpnt's CUDA sources on a machine without a GPU, so that a device call is never spent on a build error.

Every ``kernels/*.cu`` is compiled for each architecture with the extension's own flags
(:func:`kernel_sass_stats.nvcc_flags`), and ``bindings.cpp`` is checked by the host compiler (syntax only: a CPU
build of torch lacks one generated CUDA header, which an empty stub stands in for).  Prints each unit's register
counts, any spill and any ptxas warning (C7512 / C7513: wgmma serialized), and exits non-zero on an error.

    python tools/check_kernels_compile.py                               # sm_90a and sm_80, every unit
    python tools/check_kernels_compile.py --archs sm_90a --units guide_wgrad -D NAME=1   # with a macro set
    python tools/check_kernels_compile.py --kernels /tmp/other_kernels      # another copy of the sources

Needs nvcc (found on PATH, under $CUDA_HOME, or the newest /usr/local/cuda-*) and torch (a CPU build will do).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"


def find_nvcc() -> str:
    """nvcc on PATH, else under $CUDA_HOME, else the newest /usr/local/cuda-*/bin/nvcc."""
    found = shutil.which("nvcc")
    if found:
        return found
    home = os.environ.get("CUDA_HOME")
    candidates = [Path(home) / "bin" / "nvcc"] if home else []
    candidates += sorted(Path("/usr/local").glob("cuda-*/bin/nvcc"),
                         key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)])[::-1]
    for c in candidates:
        if c.is_file():
            return str(c)
    raise SystemExit("check_kernels_compile: no nvcc found: put it on PATH or set CUDA_HOME")


def cuda_includes(nvcc: str) -> list[str]:
    """The CUDA toolkit's include flags, as nvcc itself passes them (nvcc may be a wrapper script)."""
    res = subprocess.run([nvcc, "-dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)
    m = re.search(r'INCLUDES="([^"]*)"', res.stdout + res.stderr)
    return m.group(1).split() if m else []


def report(unit: str, out: str, ok: bool) -> None:
    """One unit's line: ok with its register counts, or FAILED with the errors; then spills and ptxas warnings."""
    regs = sorted({int(r) for r in re.findall(r"Used (\d+) registers", out)})
    if ok:
        print(f"{unit}: ok" + (f" (registers: {' '.join(map(str, regs))})" if regs else ""))
    else:
        print(f"{unit}: FAILED")
        for line in [ln for ln in out.splitlines() if "error" in ln][:10]:
            print("  " + line)
    function = "?"
    notes = set()
    def short(mangled: str) -> str:  # the kernel's name and template arguments, without the unit's namespace
        return re.sub(r"^_ZN4kpnt\d+_GLOBAL__N__\w+?_cu_[0-9a-f]{8}\d+", "", mangled)[:100]
    for line in out.splitlines():
        m = re.search(r"Function properties for (\S+)", line)
        if m:
            function = m.group(1)
        elif re.search(r"\b[1-9]\d* bytes spill (stores|loads)", line):
            notes.add(f"{line.strip()} in {short(function)}")
        elif re.search(r"ptxas.*(warning|C75\d\d)", line):
            code = re.search(r"C75\d\d|warning", line).group(0)
            func = re.search(r"in function '(\S+)'", line)
            notes.add(f"ptxas {code} in {short(func.group(1)) if func else line.strip()[:100]}")
    for note in sorted(notes):
        print("  " + note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["sm_90a", "sm_80"])
    parser.add_argument("--units", nargs="+", help="kernels/<unit>.cu and/or 'bindings' (default: all)")
    parser.add_argument("-D", dest="defines", action="append", default=[], help="a macro for every unit, NAME=VALUE")
    parser.add_argument("--kernels", type=Path, default=KERNELS, help="the sources' directory (default: kernels/)")
    args = parser.parse_args()

    nvcc = find_nvcc()
    os.environ["PATH"] = str(Path(nvcc).parent) + os.pathsep + os.environ["PATH"]
    sys.path.insert(0, str(ROOT / "tools"))
    from kernel_sass_stats import nvcc_flags       # the extension's flags, given an architecture
    from torch.utils.cpp_extension import include_paths

    kernels = args.kernels.resolve()
    units = args.units or sorted(p.stem for p in kernels.glob("*.cu")) + ["bindings"]
    includes = [f"-I{p}" for p in (str(kernels), *include_paths(), sysconfig.get_paths()["include"])]
    defines = [f"-D{d}" for d in args.defines]
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        stub = Path(tmp) / "stub"
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
        for unit in units:
            if unit == "bindings":
                flags = [f for f in nvcc_flags(args.archs[0]) if f.startswith("-D")]  # the ABI and torch's macros
                cmd = ["g++", "-std=c++17", "-fsyntax-only", *flags, *defines, *includes, f"-I{stub}",
                       *cuda_includes(nvcc), str(kernels / "bindings.cpp")]
                runs = [(unit, cmd)]
            else:
                runs = [(f"{unit} {arch}", ["nvcc", *nvcc_flags(arch), *defines, *includes, "-Xptxas", "-v", "-c",
                                            str(kernels / f"{unit}.cu"), "-o", str(Path(tmp) / f"{unit}.o")])
                        for arch in args.archs]
            for name, cmd in runs:
                res = subprocess.run(cmd, capture_output=True, text=True)
                report(name, res.stdout + res.stderr, res.returncode == 0)
                failed |= res.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
