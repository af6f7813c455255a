"""darktable's noise-profile table (``noiseprofiles.json``) with lookup.

The file's structure::

    {"version": 0, "noiseprofiles": [
        {"maker": "Fujifilm", "models": [
            {"model": "X-T1", "comment": "...", "profiles": [
                {"name": "...", "iso": 200, "a": [aR, aG, aB], "b": [bR, bG, bB]},
                ...]}]}]}

An entry (model or profile) with ``"skip": true`` is ignored, as darktable
does.  darktable's values are about 12x smaller than per-photosite raw
variances (see :data:`~kpnt.noise.profile.DARKTABLE_RAW_SCALE`); ``lookup``
multiplies by ``raw_scale`` (default 12) so that what it returns is on raw
scale.

Real tables are untidy, so loading also normalises:

- a camera listed more than once (several contributors) is merged, and
  several profiles at one ISO are merged by their per-channel median;
- a profile with a negative ``a`` (a failed fit: shot noise cannot have a
  negative gain) is left out and reported in :attr:`ProfileTable.rejected`.
"""
from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kpnt.errors import NoiseProfileError
from kpnt.noise.profile import DARKTABLE_RAW_SCALE, NoiseProfile

log = logging.getLogger(__name__)

#: The bundled sample table (two cameras, copied from darktable's), named in
#: errors as an example of the format.
SAMPLE_TABLE = Path(__file__).resolve().parent.parent / "data" / "sample_profiles.json"

#: Maker names as EXIF/LibRaw write them, mapped to one key per maker: the
#: first word of the name, lower case, then these aliases.
_MAKER_ALIASES = {
    "fuji": "fujifilm",
    "konica": "minolta",        # KONICA MINOLTA
    "ricoh": "pentax",          # RICOH IMAGING COMPANY (Pentax bodies)
    "asahi": "pentax",
    "om": "olympus",            # OM Digital Solutions
    "lg": "lge",
}


#: Canon sells one body under up to three names (Europe / Americas / Japan);
#: darktable's table uses the European one.  Regional names are looked up as
#: it: {European: (Americas, Japan)}.
_CANON_REGIONAL = {
    "300D": ("Digital Rebel", "Kiss Digital"), "350D": ("Rebel XT", "Kiss Digital N"),
    "400D": ("Rebel XTi", "Kiss Digital X"), "450D": ("Rebel XSi", "Kiss X2"), "1000D": ("Rebel XS", "Kiss F"),
    "500D": ("Rebel T1i", "Kiss X3"), "550D": ("Rebel T2i", "Kiss X4"), "600D": ("Rebel T3i", "Kiss X5"),
    "1100D": ("Rebel T3", "Kiss X50"), "650D": ("Rebel T4i", "Kiss X6i"), "700D": ("Rebel T5i", "Kiss X7i"),
    "100D": ("Rebel SL1", "Kiss X7"), "1200D": ("Rebel T5", "Kiss X70"), "750D": ("Rebel T6i", "Kiss X8i"),
    "760D": ("Rebel T6s", "8000D"), "1300D": ("Rebel T6", "Kiss X80"), "800D": ("Rebel T7i", "Kiss X9i"),
    "200D": ("Rebel SL2", "Kiss X9"), "2000D": ("Rebel T7", "Kiss X90"), "4000D": ("Rebel T100", "3000D"),
    "850D": ("Rebel T8i", "Kiss X10i"), "250D": ("Rebel SL3", "Kiss X10"),
}


def _squash(name: str) -> str:
    return re.sub(r"[^a-z0-9\-*+]", "", name.lower())


_MODEL_ALIASES = {
    "canon": {_squash("EOS " + regional): _squash("EOS " + europe)
              for europe, names in _CANON_REGIONAL.items() for regional in names},
}


def maker_key(maker: str) -> str:
    """Canonical lookup key of a maker name: 'NIKON CORPORATION' -> 'nikon',
    'FUJIFILM' / 'Fujifilm' -> 'fujifilm', 'OLYMPUS IMAGING CORP.' -> 'olympus'."""
    words = re.findall(r"[a-z0-9]+", maker.lower())
    if not words:
        return ""
    return _MAKER_ALIASES.get(words[0], words[0])


def model_key(maker: str, model: str) -> str:
    """Canonical lookup key of a model name: lower case, without a leading
    maker word ('Canon EOS 5D' -> 'eos5d', 'NIKON D750' -> 'd750') and
    without spaces ('E-M10MarkII' and 'E-M10 Mark II' -> 'e-m10markii')."""
    mk = maker_key(maker)
    words = model.lower().split()
    names = {mk} | {alias for alias, key in _MAKER_ALIASES.items() if key == mk}
    while len(words) > 1 and re.sub(r"[^a-z0-9]", "", words[0]) in names:
        words = words[1:]
    key = _squash("".join(words))
    # regional names ('EOS Kiss X4', 'EOS Rebel T2i') -> the table's ('EOS 550D')
    return _MODEL_ALIASES.get(mk, {}).get(key, key)


@dataclass(frozen=True)
class _Camera:
    maker: str
    model: str
    isos: np.ndarray       # (K,) float64, sorted, unique
    a: np.ndarray          # (K, 3)
    b: np.ndarray          # (K, 3)


class ProfileTable:
    """Noise profiles per camera and ISO, on darktable's scale.

    Build with :func:`load_profile_table`.  Use :meth:`lookup` for a
    raw-scale :class:`NoiseProfile`.
    """

    def __init__(self, cameras: dict[tuple[str, str], _Camera], rejected: list[str], source: str = ""):
        self._cams = cameras
        #: One line per profile left out at load time, with the reason.
        self.rejected = list(rejected)
        self.source = source

    def __len__(self):
        return len(self._cams)

    def __repr__(self):
        return f"ProfileTable({len(self)} cameras from {self.source or 'memory'})"

    def cameras(self) -> list[tuple[str, str]]:
        """(maker, model) of every camera, as the table spells them, sorted."""
        return sorted((c.maker, c.model) for c in self._cams.values())

    def _camera(self, make: str, model: str) -> _Camera:
        key = (maker_key(make), model_key(make, model))
        cam = self._cams.get(key)
        if cam is not None:
            return cam
        same_maker = {k[1]: f"{c.maker} {c.model}" for k, c in self._cams.items() if k[0] == key[0]}
        if same_maker:
            # Compare normalised model names within the maker: 'X-T2' -> 'X-T1'.
            close = [same_maker[m] for m in difflib.get_close_matches(key[1], list(same_maker), n=3, cutoff=0.3)]
        else:
            everything = [f"{c.maker} {c.model}" for c in self._cams.values()]
            close = difflib.get_close_matches(f"{make} {model}", everything, n=3, cutoff=0.6)
        hint = f"; close names: {', '.join(close[:3])}" if close else ""
        raise NoiseProfileError(
            f"no noise profile for camera '{make} {model}' in {self.source or 'the table'}{hint}"
            " (pass a profile explicitly or use the blind estimate)"
        )

    def isos(self, make: str, model: str) -> list[int]:
        """Sorted ISO values profiled for a camera (maker/model matched
        case-insensitively, maker-name variants accepted)."""
        return [int(round(v)) for v in self._camera(make, model).isos]

    def lookup(self, make: str, model: str, iso: float, raw_scale: float = DARKTABLE_RAW_SCALE) -> NoiseProfile:
        """Noise profile of a camera at an ISO, on raw-photosite scale.

        ``a`` and ``b`` are interpolated linearly in ISO between the two
        profiled ISOs that bracket ``iso`` and clamped to the first/last
        profile outside the profiled range (sensors that are ISO-invariant
        above a point keep their last profile).  Both are then multiplied by
        ``raw_scale`` (:data:`DARKTABLE_RAW_SCALE` = 12 by default: darktable
        measures on demosaiced exports, ~12x below photosite variance; pass
        1.0 for darktable's own scale).

        Raises:
            NoiseProfileError: unknown camera (the message lists up to 3
                close names) or a non-positive ISO.
        """
        iso = float(iso)
        if not np.isfinite(iso) or iso <= 0:
            raise NoiseProfileError(f"ISO must be a positive number, got {iso}")
        cam = self._camera(make, model)
        a = np.array([np.interp(iso, cam.isos, cam.a[:, c]) for c in range(3)])
        b = np.array([np.interp(iso, cam.isos, cam.b[:, c]) for c in range(3)])
        return NoiseProfile(a=a, b=b).scaled(raw_scale)


def _triplet(value, where: str, field: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (3,) or not np.isfinite(arr).all():
        raise NoiseProfileError(f"{where}: '{field}' must be a list of 3 finite numbers, got {value!r}")
    return arr


def _parse(data, source: str) -> ProfileTable:
    if not isinstance(data, dict) or not isinstance(data.get("noiseprofiles"), list):
        raise NoiseProfileError(f"{source}: not a darktable noise-profile table (expected an object with a 'noiseprofiles' list)")
    collected: dict[tuple[str, str], dict] = {}
    rejected: list[str] = []
    for i, mk in enumerate(data["noiseprofiles"]):
        where = f"{source}: noiseprofiles[{i}]"
        if not isinstance(mk, dict) or not isinstance(mk.get("maker"), str) or not isinstance(mk.get("models"), list):
            raise NoiseProfileError(f"{where} must be an object with 'maker' (string) and 'models' (list)")
        for j, mo in enumerate(mk["models"]):
            where_m = f"{where}.models[{j}]"
            if not isinstance(mo, dict) or not isinstance(mo.get("model"), str) or not isinstance(mo.get("profiles"), list):
                raise NoiseProfileError(f"{where_m} must be an object with 'model' (string) and 'profiles' (list)")
            if mo.get("skip") is True:
                continue
            key = (maker_key(mk["maker"]), model_key(mk["maker"], mo["model"]))
            entry = collected.setdefault(key, {"maker": mk["maker"], "model": mo["model"], "rows": {}})
            for k, pr in enumerate(mo["profiles"]):
                where_p = f"{where_m}.profiles[{k}]"
                if not isinstance(pr, dict):
                    raise NoiseProfileError(f"{where_p} must be an object with 'iso', 'a' and 'b'")
                if pr.get("skip") is True:
                    continue
                iso = pr.get("iso")
                if isinstance(iso, bool) or not isinstance(iso, (int, float)) or not iso > 0:
                    raise NoiseProfileError(f"{where_p}: 'iso' must be a positive number, got {iso!r}")
                a = _triplet(pr.get("a"), where_p, "a")
                b = _triplet(pr.get("b"), where_p, "b")
                if (a < 0).any():
                    rejected.append(f"{mk['maker']} {mo['model']} ISO {iso}: negative a {a.tolist()}")
                    continue
                entry["rows"].setdefault(float(iso), []).append((a, b))
    cams = {}
    for key, e in collected.items():
        if not e["rows"]:
            continue
        isos = np.array(sorted(e["rows"]))
        # Several contributors at one ISO: the per-channel median is robust
        # to the one with a "broken" channel that the comments warn about.
        a = np.array([np.median([r[0] for r in e["rows"][v]], axis=0) for v in isos])
        b = np.array([np.median([r[1] for r in e["rows"][v]], axis=0) for v in isos])
        cams[key] = _Camera(e["maker"], e["model"], isos, a, b)
    if not cams:
        raise NoiseProfileError(f"{source}: the table holds no usable noise profiles")
    if rejected:
        log.debug("%s: left out %d profiles with negative a", source, len(rejected))
    return ProfileTable(cams, rejected, source)


def load_profile_table(path) -> ProfileTable:
    """Load a darktable ``noiseprofiles.json``.

    Args:
        path: path of the JSON file.
    Returns:
        a :class:`ProfileTable` (darktable scale; ``lookup`` converts).
    Raises:
        NoiseProfileError: missing file, invalid JSON or wrong structure
            (the message names the offending entry).
    """
    p = Path(path)
    if not p.is_file():
        raise NoiseProfileError(f"noise-profile table {p} not found (pass the path of darktable's noiseprofiles.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise NoiseProfileError(
            f"noise-profile table {p} is not valid JSON ({exc}): it should be darktable's noiseprofiles.json "
            f"(data/noiseprofiles.json in darktable's source) or a table in its format, like the bundled "
            f"{SAMPLE_TABLE}: pass such a file instead") from exc
    return _parse(data, str(p))
