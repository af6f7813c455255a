"""Weights on disk (DESIGN.md section 5).

A kpnt weights file is ``safetensors``: one float32 tensor per weight matrix,
named ``<set>.w<layer>`` (e.g. ``colour.w0``, ``front.red/blue.w4``; each
``(out, in)``), and one metadata entry ``"kpnt"`` holding a JSON string
(safetensors metadata is str -> str)::

    {"format_version": 1, "kpnt_version": "0.1.0", "sensor": "bayer",
     "cfa": {"kind": "bayer", "pattern": [[0, 1], [1, 2]]} | null,
     "config": {...ModelConfig...},
     "weight_sets": {"colour": [[64, 32], ...], ...},
     "provenance": {...data, noise profiles, steps, validation PSNR...},
     "tensors_sha256": "<hex>"}

``tensors_sha256`` (:func:`tensor_checksum`) is verified on loading: a
flipped bit in any tensor is a one-line error (files written before it
existed load with a logged note); weights that are not finite or far beyond
any trained model's magnitude are refused either way.

``cfa`` is the canonical CFA of the sensor kind (RGGB, or X-Trans as
``CFA.xtrans()``): the phase whose class layouts define every weight set's
canonical orientation (see :mod:`kpnt.mosaic.cfa`); the CFA the model was
trained on is kept in ``provenance['train_cfa']`` when given.

``config`` keys added after a file was written (``colour_taps``,
``front_sharing``) take their defaults on loading
(:meth:`kpnt.model.ModelConfig.from_json`), so older files keep loading.

Loading checks everything and raises :class:`kpnt.errors.WeightsError` with
a one-line message: missing or corrupt file, weights for another sensor,
architecture mismatch, or a newer format version than this kpnt reads.
"""
from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import torch

import kpnt
from kpnt.io.tiff import atomic_write
from kpnt.errors import WeightsError
from kpnt.model import KPNT, SENSORS, ModelConfig
from kpnt.mosaic import kinds
from kpnt.mosaic.cfa import CFA, reference_cfa

log = logging.getLogger(__name__)

#: Version of the on-disk layout written by :func:`save_weights`.
FORMAT_VERSION = 1
META_KEY = "kpnt"


def _canonical_cfa(sensor: str) -> CFA | None:
    """The CFA weights metadata records for a sensor: its kind's reference
    phase (:func:`kpnt.mosaic.cfa.reference_cfa`), None for rgb."""
    return None if sensor == kinds.RGB else reference_cfa(sensor)


def shipped_weights(sensor: str) -> Path:
    """The weights file shipped with kpnt for a sensor kind
    (``kpnt/weights/<sensor>.safetensors``).

    Raises:
        WeightsError: this install has none for ``sensor`` (one line, says
            how to get weights).
    """
    from importlib import resources

    if sensor not in kinds.KINDS:
        raise WeightsError(f"kpnt ships weights for {', '.join(kinds.MOSAIC_KINDS)}, not for {sensor!r}: "
                           "train them with kpnt-train and pass --weights FILE")
    path = Path(str(resources.files("kpnt") / "weights" / kinds.KINDS[sensor].weights_file))
    if not path.is_file():
        raise WeightsError(f"no shipped {sensor} weights in this kpnt install ({path}): "
                           "train them with kpnt-train and pass --weights FILE")
    return path


def _one_line(e: BaseException) -> str:
    """An exception as ``Type: message`` on one line (library messages may span several)."""
    return f"{type(e).__name__}: " + " ".join(str(e).split())


def _tensor_name(set_name: str, layer: int) -> str:
    return f"{set_name}.w{layer}"


#: Metadata key of the tensors' checksum (files written before it existed
#: load with a logged note, unverified).
CHECKSUM_KEY = "tensors_sha256"
#: Largest weight magnitude a sane model holds (the shipped ones stay below
#: 60; f16, which the fused kernels use, ends at 65504).
MAX_ABS_WEIGHT = 1e4


def tensor_checksum(tensors: dict) -> str:
    """SHA-256 over every tensor's name, shape and float32 little-endian
    bytes, in name order: what :func:`save_weights` stores and
    :func:`load_weights` verifies (a flipped bit anywhere changes it)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().astype("<f4", copy=False).tobytes())
    return h.hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, [data], overwrite=True)


def save_weights(path, model: KPNT, cfa: CFA | None, provenance: dict) -> None:
    """Write ``model``'s weights and metadata to ``path`` atomically.

    Args:
        path: target file (``.safetensors``).
        model: the model to save.
        cfa: CFA the model was trained on (None for rgb); must match the
            model's sensor.  Stored as ``provenance['train_cfa']``; the file's
            ``cfa`` entry is the sensor's canonical CFA.
        provenance: JSON-serialisable dict (data, noise profiles, steps,
            validation PSNR, ...).
    """
    from safetensors.torch import save

    if model.sensor == "rgb":
        if cfa is not None:
            raise ValueError(f"an rgb model has no CFA, got {cfa.kind}")
    elif cfa is None or cfa.kind != model.sensor:
        raise ValueError(f"a {model.sensor} model needs a {model.sensor} CFA, got {cfa!r}")
    prov = dict(provenance)
    if cfa is not None:
        prov.setdefault("train_cfa", cfa.to_json())
    tensors, shapes = {}, {}
    for name, mats in model.weight_sets().items():
        shapes[name] = [list(m.shape) for m in mats]
        for i, m in enumerate(mats):
            tensors[_tensor_name(name, i)] = m.detach().to("cpu", torch.float32).contiguous()
    canon = _canonical_cfa(model.sensor)
    meta = {
        "format_version": FORMAT_VERSION,
        "kpnt_version": kpnt.__version__,
        "sensor": model.sensor,
        "cfa": canon.to_json() if canon is not None else None,
        "config": model.config.to_json(),
        "weight_sets": shapes,
        "provenance": prov,
        CHECKSUM_KEY: tensor_checksum(tensors),
    }
    data = save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    _atomic_write_bytes(Path(path), data)


def read_metadata(path) -> dict:
    """The metadata dict of a kpnt weights file (no tensors loaded).

    Raises:
        WeightsError: missing, unreadable or not a kpnt weights file, or a
            newer format version.
    """
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        from kpnt.train.loop import BEST_NAME, WEIGHTS_NAME   # the files a kpnt-train run folder holds

        if p.is_dir():
            inside = [p / n for n in (WEIGHTS_NAME, BEST_NAME) if (p / n).is_file()]
            raise WeightsError(f"{p}: a folder, not a weights file: give " + (
                f"a file in it, e.g. {inside[0]}" if inside else "the path of a .safetensors file written by kpnt-train"))
        raise WeightsError(f"{p}: no such weights file: check the path (kpnt-train writes RUN/{WEIGHTS_NAME} "
                           f"and RUN/{BEST_NAME})")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:   # safetensors raises several types for bad headers
        raise WeightsError(f"{p}: not a readable safetensors file ({_one_line(e)}): a damaged or partial copy "
                           "(copy it again) or not a weights file at all") from e
    if raw is None:
        raise WeightsError(f"{p}: safetensors file without kpnt metadata: not a kpnt weights file (give one written by kpnt-train)")
    try:
        meta = json.loads(raw)
        version = int(meta["format_version"])
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{p}: corrupt kpnt metadata ({_one_line(e)}): copy the file again") from e
    if version > FORMAT_VERSION:
        raise WeightsError(f"{p}: weights format version {version} is newer than this kpnt "
                           f"{kpnt.__version__} reads ({FORMAT_VERSION}): upgrade kpnt")
    return meta


#: Provenance key of the trained noise range: ``{"a": [lo, hi], "b": [lo, hi]}``
#: in white-balanced normalised units (what :mod:`kpnt.denoise` hands the model).
NOISE_RANGE_KEY = "noise_range_wb"


def load_weights(path, sensor: str | None = None, device="cpu") -> tuple[KPNT, dict]:
    """Build the model a weights file describes and load its weights.

    Args:
        path: weights file.
        sensor: the sensor the caller has (:data:`kpnt.mosaic.kinds.SENSORS`), or None
            to accept any.
        device: where to put the model.
    Returns:
        ``(model, metadata)``.
    Raises:
        WeightsError: one line, for a missing/corrupt file, weights for another
            sensor, an architecture mismatch, or a newer format version.
    """
    from safetensors import safe_open

    p = Path(path)
    meta = read_metadata(p)
    file_sensor = meta.get("sensor")
    if file_sensor not in SENSORS:
        raise WeightsError(f"{p}: unknown sensor {file_sensor!r} in metadata (expected one of {SENSORS})")
    if sensor is not None and sensor != file_sensor:
        raise WeightsError(f"{p}: weights are for {file_sensor}, this raw is {sensor}: "
                           f"pass --weights with a {sensor} model")
    try:
        config = ModelConfig.from_json(meta["config"])
    except (KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"{p}: architecture mismatch: model config not understood by kpnt "
                           f"{kpnt.__version__} ({_one_line(e)})") from e
    canon = _canonical_cfa(file_sensor)
    if (canon.to_json() if canon is not None else None) != meta.get("cfa"):
        raise WeightsError(f"{p}: architecture mismatch: canonical CFA {meta.get('cfa')} is not kpnt's for {file_sensor}")
    model = KPNT(file_sensor, config)
    expected = {_tensor_name(n, i): m for n, mats in model.weight_sets().items() for i, m in enumerate(mats)}
    try:
        with safe_open(str(p), framework="pt") as f:
            names = set(f.keys())
            missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
            if missing or extra:
                raise WeightsError(f"{p}: architecture mismatch: missing tensors {missing[:4]}, unexpected {extra[:4]}")
            loaded = {}
            with torch.no_grad():
                for name, param in expected.items():
                    t = f.get_tensor(name)
                    if tuple(t.shape) != tuple(param.shape):
                        raise WeightsError(f"{p}: architecture mismatch: {name} is {tuple(t.shape)}, "
                                           f"the config implies {tuple(param.shape)}")
                    loaded[name] = t
                _verify_tensors(p, meta, loaded)
                for name, param in expected.items():
                    param.copy_(loaded[name])
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"{p}: corrupt weights file ({_one_line(e)})") from e
    # The white-balanced noise levels the weights were trained on (issue 13):
    # inference keeps the level it tells the model inside them.
    model.noise_range = (meta.get("provenance") or {}).get(NOISE_RANGE_KEY)
    return model.to(device), meta


def _verify_tensors(p: Path, meta: dict, tensors: dict) -> None:
    """The stored checksum matches (a file without one, written by an older
    kpnt, is logged and loaded unverified), and every weight is finite and
    of a sane magnitude."""
    for name, t in tensors.items():
        if not torch.isfinite(t).all():
            raise WeightsError(f"{p}: corrupt weights: {name} holds inf or nan")
        big = float(t.abs().max()) if t.numel() else 0.0
        if big > MAX_ABS_WEIGHT:
            raise WeightsError(f"{p}: corrupt weights: {name} holds {big:.3g}, far beyond any trained model's "
                               f"(at most {MAX_ABS_WEIGHT:g}): retrain or use another weights file")
    want = meta.get(CHECKSUM_KEY)
    if want is None:
        log.info("%s: no tensor checksum (saved by an older kpnt): weights not verified; re-save them with "
                 "kpnt.weights_io.save_weights to add one", p)
    elif tensor_checksum(tensors) != want:
        raise WeightsError(f"{p}: corrupt weights: the tensors do not match the file's checksum (damaged copy?): "
                           "copy or download the file again")


#: vkdt .lut header: magic, version, channels, datatype (16 = ssbo f16), width, height.
_LUT_HEADER = struct.Struct("<IHBBII")
LUT_MAGIC, LUT_VERSION, LUT_SSBO_F16 = 1234, 2, 16


def export_vkdt_lut(path, model: KPNT) -> None:
    """Write the colour weight set as a vkdt ``.lut`` for its ``kpn`` module.

    Layout (as vkdt's kpn-t ``w`` buffer, tiny-cuda-nn style): a 16-byte
    header (uint32 magic 1234, uint16 version 2, uint8 channels 1, uint8
    datatype 16 = ssbo f16, uint32 width = W, uint32 height = (L+1) W for
    L hidden layers of width W), then f16 weights: each layer's ``(out, in)``
    matrix row-major (element ``(o, i)`` at ``o*in + i``; vkdt loads it as a
    column-major ``in x out`` tile), layers back to back, zero-filled to
    ``width * height``.

    vkdt compiles width, depth and leaky slope (0.001) into its shaders and
    computes its own inputs: the file loads there only with matching
    ``WIDTH``/``N_HIDDEN_LAYERS``, and kpnt's inputs (asinh SNR features,
    DESIGN.md section 2) differ from vkdt's, so this is an interchange of the
    weights, not of the whole model.
    """
    mats = [m.detach().to("cpu", torch.float32) for m in model.weight_sets()["colour"]]
    width = model.config.width
    height = (model.config.hidden_layers + 1) * width
    flat = np.concatenate([m.numpy().reshape(-1) for m in mats])
    if flat.size > width * height:
        raise ValueError(f"colour set has {flat.size} weights, more than a {width}x{height} lut holds")
    if np.abs(flat).max() > np.finfo(np.float16).max:
        raise ValueError("colour weights exceed the f16 range: cannot export to vkdt")
    data = np.zeros(width * height, dtype=np.float16)
    data[: flat.size] = flat.astype(np.float16)
    header = _LUT_HEADER.pack(LUT_MAGIC, LUT_VERSION, 1, LUT_SSBO_F16, width, height)
    _atomic_write_bytes(Path(path), header + data.tobytes())

