"""The benchmark's printed report: quality tables, the colour-fidelity
table, issue 13's checks, the model-selection table and the speed table."""
from __future__ import annotations

import numpy as np

from kpnt.bench.cases import CLEAN
from kpnt.bench.checks import ISO100_VARIANT, acceptance, format_check, kpnt_methods, summary
from kpnt.bench.runner import method_order
from kpnt.mosaic.kinds import XTRANS

#: marks an entry whose cases all came from the peer cache; partial: "(c k/n)"
CACHED = "(c)"


def cell_label(cell) -> str:
    """'clean' or 'ISO <n>'."""
    return "clean" if cell == CLEAN else f"ISO {cell}"


def _cached_mark(r: dict) -> str:
    if not r.get("cached"):
        return ""
    return f" {CACHED}" if r["cached"] == r["n"] else f" (c {r['cached']}/{r['n']})"


def quality_tables(rows: list[dict]) -> str:
    """Markdown tables per sensor: rows methods, columns cells, entries
    'PSNR linear / PSNR sRGB / SSIM' (the peer cache's share marked)."""
    out = []
    for sensor in dict.fromkeys(r["sensor"] for r in rows):
        rs = [r for r in rows if r["sensor"] == sensor]
        cells = list(dict.fromkeys(r["cell"] for r in rs))
        methods = sorted(dict.fromkeys(r["method"] for r in rs), key=method_order)
        n = max(r["n"] for r in rs)
        out.append(f"\n### {sensor} ({rs[0]['camera']}, {n} photos, random CFA phases): PSNR linear / PSNR sRGB / SSIM sRGB\n")
        out.append("| method | " + " | ".join(cell_label(c) for c in cells) + " |")
        out.append("| --- |" + " ---: |" * len(cells))
        for m in methods:
            ent = []
            for c in cells:
                r = next((r for r in rs if r["cell"] == c and r["method"] == m), None)
                ent.append("-" if r is None else f"{r['psnr_lin']:.2f} / {r['psnr_srgb']:.2f} / {r['ssim_srgb']:.3f}{_cached_mark(r)}")
            out.append(f"| {m} | " + " | ".join(ent) + " |")
        notes = []
        if any(r.get("cached") for r in rs):
            notes.append(f"{CACHED}: every case of the entry came from the peer cache; (c k/n): k of n cases did")
        if sensor == XTRANS.name:
            notes.append("menon: Bayer only (Menon 2007 is defined for the 2x2 Bayer pattern), no X-Trans entries")
        if any(m.endswith(ISO100_VARIANT) for m in methods):
            notes.append(f"kpnt{ISO100_VARIANT}: the clean mosaic given the ISO-100 noise level instead of its near-zero one")
        noise = {r["cell"]: r["noise"] for r in rs if r["noise"] not in ("profiled", "interpolated")}
        notes += [f"{cell_label(c)}: noise {h}" for c, h in noise.items()]
        out += [""] + [f"- {t}" for t in notes]
    return "\n".join(out)


def colour_table(colour: dict) -> str:
    """Per sensor and cell: each method's signed mean error (R / G / B, in
    1e-3 of white, white-balanced linear) per saturation bin."""
    out = []
    keys = list(colour)
    for sensor in dict.fromkeys(k[0] for k in keys):
        edges = next(v["edges"] for k, v in colour.items() if k[0] == sensor)
        bins = [f"S {edges[i]:.1f}-{edges[i + 1]:.1f}" for i in range(len(edges) - 1)]
        out.append(f"\n### {sensor}: colour fidelity, mean signed error R / G / B (1e-3 of white, white-balanced linear) "
                   "by the reference's saturation\n")
        out.append("| cell | method | " + " | ".join(bins) + " |")
        out.append("| --- | --- |" + " ---: |" * len(bins))
        for (s, c, m), v in colour.items():
            if s != sensor:
                continue
            ent = []
            for b, n in zip(v["bias"], v["n"]):
                ent.append("-" if not n else " / ".join(f"{1e3 * x:+.1f}" for x in b))
            out.append(f"| {cell_label(c)} | {m} | " + " | ".join(ent) + " |")
        npx = next(v["n"] for k, v in colour.items() if k[0] == sensor)
        out.append("\npixels per bin (first row's cell): " + ", ".join(f"{int(n)}" for n in npx))
    return "\n".join(out)


def model_table(rows: list[dict]) -> str:
    """Model selection: one row per kpnt weights file, columns the cells
    ('linear / sRGB'), then the mean sRGB PSNR over the cells; best first."""
    out = []
    for sensor in dict.fromkeys(r["sensor"] for r in rows):
        rs = [r for r in rows if r["sensor"] == sensor]
        kps = kpnt_methods(dict.fromkeys(r["method"] for r in rs))
        if len(kps) < 2:
            continue
        cells = list(dict.fromkeys(r["cell"] for r in rs))
        by = {(r["method"], r["cell"]): r for r in rs}
        mean = {m: float(np.mean([by[(m, c)]["psnr_srgb"] for c in cells if (m, c) in by])) for m in kps}
        out.append(f"\n### {sensor}: weights files, PSNR linear / sRGB (best mean sRGB first)\n")
        out.append("| weights | " + " | ".join(cell_label(c) for c in cells) + " | mean sRGB |")
        out.append("| --- |" + " ---: |" * (len(cells) + 1))
        for m in sorted(kps, key=lambda m: -mean[m]):
            ent = [f"{by[(m, c)]['psnr_lin']:.2f} / {by[(m, c)]['psnr_srgb']:.2f}" if (m, c) in by else "-" for c in cells]
            out.append(f"| {m.split(':', 1)[-1]} | " + " | ".join(ent) + f" | {mean[m]:.2f} |")
    return "\n".join(out)


def check_report(rows: list[dict], colour: dict) -> tuple[str, list[dict]]:
    """Issue 13's check lines and per-point summaries; returns the text and
    the checks (for the JSON)."""
    checks = acceptance(rows, colour)
    lines = ["\n### issue 13 acceptance checks\n"] + [f"- {format_check(c)}" for c in checks] + [""] + summary(checks)
    return "\n".join(lines), checks


def speed_report(rows: list[dict], speed: list[dict]) -> tuple[str, list[dict]]:
    """Speed: s/MP of each method over the benchmark photos (scoring
    device; CPU peers in one-thread workers), the large-raw test's rows,
    and kpnt's speed-up over demosaicnet+BM3D from numbers of this run."""
    out = ["\n### speed (s per megapixel)\n", "| sensor | method | s/MP, benchmark photos (mean over cells) |", "| --- | --- | ---: |"]
    for sensor in dict.fromkeys(r["sensor"] for r in rows):
        for m in sorted(dict.fromkeys(r["method"] for r in rows if r["sensor"] == sensor), key=method_order):
            v = [r["sec_per_mpix"] for r in rows if r["sensor"] == sensor and r["method"] == m]
            out.append(f"| {sensor} | {m} | {np.mean(v):.4g} |")
    ups = []
    if speed:
        out += ["", "| sensor | method | device (backend) | MP | s/MP | how |", "| --- | --- | --- | ---: | ---: | --- |"]
        for r in speed:
            out.append(f"| {r['sensor']} | {r['method']} | {r['device']} ({r['backend']}) | {r['mp']:.2f} | {r['sec_per_mpix']:.4g} | {r['how']} |")
        for sensor in dict.fromkeys(r["sensor"] for r in speed):
            sp = {(r["method"], r["device"]): r for r in speed if r["sensor"] == sensor}
            bm = sp.get(("bm3d", "cpu"))
            for (m, dev), kp in sp.items():
                dn = sp.get(("demosaicnet", dev))
                if m != "kpnt" or dn is None or bm is None:
                    continue
                big = dn["sec_per_mpix"] + bm["sec_per_mpix"]
                ups.append(dict(sensor=sensor, device=dev, backend=kp["backend"], kpnt_s_per_mp=kp["sec_per_mpix"],
                                demosaicnet_bm3d_s_per_mp=big, speedup=big / kp["sec_per_mpix"]))
                out.append(f"- kpnt speed-up vs demosaicnet+BM3D, {sensor} on {dev} ({kp['backend']}): "
                           f"{big:.4g} / {kp['sec_per_mpix']:.4g} s/MP = {big / kp['sec_per_mpix']:.0f}x")
    return "\n".join(out), ups
