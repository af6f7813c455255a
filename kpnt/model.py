"""The kpnt model: colour KPN on the colour base + mosaic front level.

Data flow of :meth:`KPNT.forward` for a mosaic (DESIGN.md sections 2, 3)::

    x (N,1,H,W) --pad (CFA-consistent mirror, margin r, whole blocks)--> xp, cfa_p
    C0 = colour_base(xp)                                   (N,3,h,w), h = Hp/b
    M_0 = C0, M_{i+1} = down(M_i), S_i = up(M_{i+1}), D_i = M_i - S_i
    per level i: var_i = detail_var(S_i), (I_i, a_i) = colour_level(D_i, var_i)
    O_L = M_L, O_i = up(O_{i+1}) + a_i I_i                 (one weight set)
    U = up_block(O_0), S = up_block(S_0)                   (per-colour sample positions)
    O = front_level(xp, U, S)                              (one set per site class)
    crop to (N,3,H,W)

RGB input (sensor 'rgb') runs only the colour KPN on the input itself.

Every op goes through :mod:`kpnt.ops` with ``self.backend`` ('torch' by
default; 'cuda'/'auto' once fused kernels are registered).

Initialisation (see :func:`kpnt.ref.mlp.init_weights`): random hidden
layers, a last layer with small random weights plus constant offsets: the
centre tap's logit starts at :data:`INIT_CENTRE_LOGIT` (other taps 0) and
the blend logit at :data:`INIT_BLEND_LOGIT`, likewise for the front.  The
untrained model is a near-identity colour pyramid (centre weight ~0.80 of
15 taps, blend ~0.98) followed by a colour-difference demosaic with mild
smoothing of the photosite details (centre ~0.46 of 25 taps, blend ~0.95).
Measured on a synthetic 96x96 Bayer scene (tests/test_model.py): 32.7 dB
clean / 30.7 dB at a = 2e-3, against 32.4 / 30.4 dB for bilinear
demosaicing; smoothing the colour levels more at init costs more at edges
than it gains on noise (the untrained MLP cannot tell them apart).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import torch

from kpnt import ops
from kpnt.errors import ConfigError
from kpnt.mosaic import kinds
from kpnt.mosaic.cfa import CFA
from kpnt.ref.guide import init_guide
from kpnt.ops.capability import config_problems
from kpnt.ops.front_level import front_set_names
from kpnt.ops.mlp import init_weights
from kpnt.ops.pad import mosaic_pads
from kpnt.spec import ColourLevelSpec, FrontLevelSpec

#: What a model can be built for (:data:`kpnt.mosaic.kinds.SENSORS`).
SENSORS = kinds.SENSORS

#: Initial logit of the centre tap (other taps 0) and blend logit of the
#: colour levels and of the front level.
INIT_CENTRE_LOGIT = 4.0
INIT_BLEND_LOGIT = 4.0
INIT_FRONT_CENTRE_LOGIT = 3.0
INIT_FRONT_BLEND_LOGIT = 3.0
#: Seed of the default initialisation (models are reproducible by default).
INIT_SEED = 0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a :class:`KPNT` (stored in every weights file).

    Attributes:
        width: hidden width of the colour MLP (multiple of 16).
        hidden_layers: hidden layers of the colour MLP (matrices = layers + 1).
        levels: colour pyramid levels (detail levels; M_levels is the coarse rest).
        apply_mode: 'softmax' or 'plain' kernel normalisation.
        noise_input: feed the log noise std to the MLPs.
        front_radius: the front level's kernel is the full (2r+1)^2 square.
        front_width, front_hidden_layers: front MLPs (one per site class);
            64 x 4 (one layer fewer than the colour MLP: it runs on 4-9x as
            many pixels, and its job, colour-difference transfer of a local
            detail, is simpler).
        leaky_slope: negative slope of the hidden leaky ReLUs (0.01).
        colour_taps: tap set of the colour levels: 'diamond15' (DESIGN.md
            section 2; MLP 32 in, 16 out) or 'square25', the full 5x5
            square (64 in, 32 out), for ablations
            (:data:`kpnt.ref.taps.COLOUR_TAP_SETS`).
        front_kernels: 'shared' (DESIGN.md section 3: one kernel, the same
            detail added to all channels) or 'per_channel' (one kernel per
            output channel, by role: ``kpnt.ref.front_layout.front_roles``).
        front_sharing: front weight sets: 'symmetry' (one per site class,
            neighbourhoods in the class's canonical orientation, DESIGN.md
            section 3) or 'none', one per site position of the reference
            phase without re-orientation (Bayer 4, X-Trans 18; see
            :mod:`kpnt.ref.front_level`), for ablations.
        guide_layers, guide_width: the guide (:mod:`kpnt.ref.guide`), a
            convolutional demosaicer at CFA-period resolution that sharpens
            the front level's smooth estimate; 0 layers: none (DESIGN.md's
            model).
        guide_skip: residual hidden layers and a normalised noise feature in
            the guide (trains at depth; :mod:`kpnt.ref.guide`).
        guide_proj: projection blocks in the guide, ``relu(z + P relu(conv(z)))``
            with a 1x1 ``P`` after each hidden 3x3 convolution (needs
            ``guide_skip``): channels can be silenced without dying
            (:func:`kpnt.ref.guide._network`; session 15).
        guide_pack: CFA repeats per packed guide position along each axis:
            1 runs the guide at 1/period resolution, 2 at half that (a
            quarter of the cost per layer, twice the reach).

    Weights files written before ``colour_taps``/``front_sharing`` existed
    load with their defaults (:meth:`from_json`).  The fused CUDA kernels
    run only the default taps and sharing and the compiled MLP shapes
    (:func:`kpnt.ops.capability.config_problems`).  Invalid values raise a
    one-line :class:`kpnt.errors.ConfigError`; the op specs
    (:attr:`colour_spec`, :attr:`front_spec`) are built and checked here,
    once.
    """

    width: int = 64
    hidden_layers: int = 6
    levels: int = 4
    apply_mode: str = "softmax"
    noise_input: bool = True
    front_radius: int = 2
    front_width: int = 64
    front_hidden_layers: int = 4
    leaky_slope: float = 0.01
    colour_taps: str = "diamond15"
    front_sharing: str = "symmetry"
    front_kernels: str = "shared"
    guide_width: int = 64
    guide_layers: int = 0
    guide_skip: bool = False
    guide_pack: int = 1
    guide_proj: bool = False

    def __post_init__(self):
        # Validated once, here: the op specs check their own fields (each
        # problem named after the config field), the rest is checked below.
        problems = []
        if self.levels < 1:
            problems.append(f"levels must be >= 1, got {self.levels}")
        if self.guide_layers < 0 or (self.guide_layers and not 8 <= self.guide_width <= 512):
            problems.append(f"guide_layers must be >= 0 and guide_width in 8..512, got {self.guide_layers}, {self.guide_width}")
        if self.guide_proj and not (self.guide_layers and self.guide_skip):
            problems.append("guide_proj needs a residual guide (guide_layers > 0 and guide_skip)")
        if not 1 <= self.guide_pack <= 4:
            problems.append(f"guide_pack must be in 1..4, got {self.guide_pack}")
        specs = {}
        for name, make in (("_colour_spec", self._make_colour_spec), ("_front_spec", self._make_front_spec)):
            try:
                specs[name] = make()
            except ConfigError as err:
                problems.extend(str(err).split("; "))
        if problems:
            raise ConfigError("; ".join(dict.fromkeys(problems)))
        for name, spec in specs.items():
            object.__setattr__(self, name, spec)    # derived, not a field: asdict/to_json leave it out

    def _make_colour_spec(self) -> ColourLevelSpec:
        return ColourLevelSpec(taps=self.colour_taps, width=self.width, hidden_layers=self.hidden_layers,
                               leaky_slope=self.leaky_slope, apply_mode=self.apply_mode, noise_input=self.noise_input)

    def _make_front_spec(self) -> FrontLevelSpec:
        return FrontLevelSpec(radius=self.front_radius, kernels=self.front_kernels, sharing=self.front_sharing,
                              width=self.front_width, hidden_layers=self.front_hidden_layers,
                              leaky_slope=self.leaky_slope, apply_mode=self.apply_mode, noise_input=self.noise_input)

    @property
    def colour_spec(self) -> ColourLevelSpec:
        """The colour levels' op spec, built and validated with the config."""
        return self._colour_spec

    @property
    def front_spec(self) -> FrontLevelSpec:
        """The front level's op spec, built and validated with the config."""
        return self._front_spec

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ModelConfig":
        """From :meth:`to_json`'s dict; keys added since (colour_taps,
        front_sharing) take their defaults when missing, so older weights
        files keep loading; unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config keys {sorted(unknown)}")
        return cls(**d)


def _param_key(name: str) -> str:
    """nn.Module-safe key of a weight-set name ('front.red/blue' -> 'front_red_blue')."""
    return name.replace(".", "_").replace("/", "_").replace(" ", "_")


def _make_mlp(n_in, width, layers, n_out, const_index, out_offset, slope, gen, n_in_used, n_out_used):
    mats = init_weights(n_in, width, layers, n_out, const_index, out_offset, slope, gen, n_in_used, n_out_used)
    return torch.nn.ParameterList([torch.nn.Parameter(m) for m in mats])


class KPNT(torch.nn.Module):
    """Kernel-predicting raw denoise-demosaic network.

    Args:
        sensor: a mosaic kind (:data:`kpnt.mosaic.kinds.MOSAIC_KINDS`) or 'rgb'.
        config: architecture.
        backend: op backend ('torch', 'cuda' or 'auto'); may be changed later
            by assigning ``model.backend``.

    ``guide_train_dtype`` (attribute, default None): ``torch.bfloat16`` runs
    the guide in that precision while training on a GPU (``kpnt-train
    --guide-dtype``, :func:`kpnt.ref.guide.guide_residual`); not part of the
    architecture or the weights.
    """

    def __init__(self, sensor: str, config: ModelConfig = ModelConfig(), backend: str = "torch"):
        super().__init__()
        if sensor not in SENSORS:
            raise ConfigError(f"sensor must be one of {SENSORS}, got {sensor!r}")
        self.sensor = sensor
        self.config = config
        self.backend = backend                                   # validates (property)
        self.guide_train_dtype: torch.dtype | None = None
        cfg = config
        gen = torch.Generator().manual_seed(INIT_SEED)
        self._set_names = ["colour"]
        self.sets = torch.nn.ModuleDict()
        cspec = cfg.colour_spec
        T, n_in, n_out = cspec.widths()
        out = torch.zeros(T + 1)
        out[cspec.centre_index] = INIT_CENTRE_LOGIT
        out[T] = INIT_BLEND_LOGIT
        out = self._offsets_for_mode(out, T)
        self.sets["colour"] = _make_mlp(n_in, cfg.width, cfg.hidden_layers, n_out, 2 * T + 1, out,
                                        cfg.leaky_slope, gen, 2 * T + 2, T + 1)
        if sensor != kinds.RGB:
            T, n_in, n_out = cfg.front_spec.widths()
            K = cfg.front_spec.n_kernels
            out = torch.zeros(K * T + 1)
            out[T // 2:K * T:T] = INIT_FRONT_CENTRE_LOGIT    # raster centre of the square, every kernel
            out[K * T] = INIT_FRONT_BLEND_LOGIT
            out = self._offsets_for_mode(out, K * T)
            for cls in front_set_names(sensor, cfg.front_sharing):
                name = f"front.{cls}"
                self._set_names.append(name)
                self.sets[_param_key(name)] = _make_mlp(n_in, cfg.front_width, cfg.front_hidden_layers, n_out, T + 1,
                                                         out, cfg.leaky_slope, gen, T + 2, K * T + 1)
            if cfg.guide_layers:
                period = kinds.period_of(sensor)
                self._set_names.append("guide")
                self.sets["guide"] = torch.nn.ParameterList(
                    [torch.nn.Parameter(m) for m in init_guide(period * cfg.guide_pack, cfg.guide_width, cfg.guide_layers, gen,
                                                           cfg.guide_skip, cfg.guide_proj)])

    @property
    def backend(self) -> str:
        """Op backend: 'torch', 'cuda' or 'auto'.  Setting 'cuda' for a
        configuration the fused kernels cannot run (other colour taps or
        front sharing, see :func:`kpnt.ops.capability.config_problems`)
        raises a one-line :class:`kpnt.errors.ConfigError` at once; 'auto'
        runs such parts on the reference (logged once)."""
        return self._backend

    @backend.setter
    def backend(self, name: str) -> None:
        ops.resolve_backend(name, torch.device("cpu"))           # validates the name
        if name == "cuda":
            problems = config_problems(self.config)
            if problems:
                raise ConfigError(f"backend='cuda' cannot run this model: {'; '.join(problems)} "
                                 "(use backend='auto' to run those parts on the PyTorch reference, or 'torch')")
        self._backend = name

    def _offsets_for_mode(self, out: torch.Tensor, T: int) -> torch.Tensor:
        """Plain mode reads kernel weights, not logits: start from the same
        normalised kernel as softmax would (weights exp(logit))."""
        if self.config.apply_mode == "plain":
            out = out.clone()
            out[:T] = torch.exp(out[:T])
        return out

    # ------------------------------------------------------------------
    def weight_sets(self) -> dict[str, list[torch.nn.Parameter]]:
        """Weight matrices per set, e.g. ``{'colour': [...], 'front.green':
        [...], 'front.red/blue': [...]}`` (bayer 3 sets, xtrans 4, rgb 1;
        with ``front_sharing='none'`` bayer 5, xtrans 19: 'front.R00', ...);
        each list is ``[W_0 (width, n_in), ..., W_last (n_out, width)]``."""
        return {name: list(self.sets[_param_key(name)]) for name in self._set_names}

    def extra_repr(self) -> str:
        return f"sensor={self.sensor!r}, backend={self.backend!r}, config={json.dumps(self.config.to_json())}"

    # ------------------------------------------------------------------
    def forward(self, x: torch.Tensor, cfa: CFA | None, noise: torch.Tensor) -> torch.Tensor:
        """Denoise (and demosaic) a batch.

        Args:
            x: (N, 1, H, W) white-balanced normalised mosaic whose photosite
                (0, 0) has colour ``cfa.pattern[0, 0]`` (sensor bayer/xtrans),
                or (N, 3, H, W) linear RGB with ``cfa=None`` (sensor rgb).
                H, W >= 2 * CFA period (rgb: >= 2).
            cfa: layout of ``x``; ``cfa.kind`` must equal ``self.sensor``.
            noise: (N, 2, 3) ``[a; b]`` for R, G, B in the units of x:
                ``var(x) = a_c x + b_c``.
        Returns:
            (N, 3, H, W) camera RGB, white-balanced, units of x.
        """
        self._check_inputs(x, cfa, noise)
        if self.sensor == kinds.RGB:
            return self._forward_rgb(x, noise)
        return self._forward_mosaic(x, cfa, noise)

    def _check_inputs(self, x, cfa, noise):
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x: expected a float tensor (N, C, H, W), got {getattr(x, 'shape', type(x))}")
        if self.sensor == kinds.RGB:
            if cfa is not None:
                raise ValueError(f"this model is for rgb input, got a {cfa.kind} CFA: use a {cfa.kind} model")
            if x.shape[1] != 3:
                raise ValueError(f"rgb model: x must have 3 channels, got {x.shape[1]}")
            min_size = 2
        else:
            if cfa is None:
                raise ValueError(f"this model is for {self.sensor} mosaics: pass the CFA of x")
            if cfa.kind != self.sensor:
                raise ValueError(f"this model is for {self.sensor} mosaics, the CFA is {cfa.kind} ({cfa.name}): "
                                 f"load {cfa.kind} weights")
            if x.shape[1] != 1:
                raise ValueError(f"{self.sensor} model: x must be a mosaic (N, 1, H, W), got {x.shape[1]} channels")
            min_size = 2 * cfa.period
        if min(x.shape[-2:]) < min_size:
            raise ValueError(f"x is {tuple(x.shape[-2:])}: both sides must be >= {min_size}")
        if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (x.shape[0], 2, 3):
            raise ValueError(f"noise: expected shape ({x.shape[0]}, 2, 3), got {tuple(getattr(noise, 'shape', ()))}")
        if noise.dtype != x.dtype or noise.device != x.device:
            raise ValueError(f"noise is {noise.dtype} on {noise.device}, x is {x.dtype} on {x.device}")

    # ------------------------------------------------------------------
    def _colour_kpn(self, c0: torch.Tensor, noise: torch.Tensor, counts) -> tuple[torch.Tensor, torch.Tensor]:
        """Denoise a colour base; returns ``(O_0, S_0)`` with S_0 = up(M_1)
        (the smooth signal estimate of level 0), both (N, 3, h, w)."""
        cfg, be = self.config, self.backend
        spec = cfg.colour_spec
        weights = ops.MlpWeights(self.sets["colour"])     # packed for the fused kernels once, for all levels
        M = [c0]
        for _ in range(cfg.levels):
            M.append(ops.pyramid_down(M[-1], backend=be))
        o = M[-1]
        s0 = None
        for i in reversed(range(cfg.levels)):
            size = tuple(M[i].shape[-2:])
            s = ops.pyramid_up(M[i + 1], size, backend=be)
            D = M[i] - s
            var = ops.detail_var(s, noise, counts, i, backend=be)
            I, a = ops.colour_level(D, var, weights, spec, backend=be)
            o = ops.pyramid_up(o, size, backend=be) + a * I
            s0 = s
        return o, s0

    def _forward_rgb(self, x, noise):
        # The pyramid halves any size (ceil), so RGB input needs no padding.
        o, _ = self._colour_kpn(x, noise, (1, 1, 1))
        return o

    def _forward_mosaic(self, x, cfa, noise):
        cfg, be = self.config, self.backend
        H, W = x.shape[-2:]
        b = cfa.block
        oy, ox = cfa.block_phase
        # Margin front_radius (the front's taps never leave real, mirrored
        # data inside the crop) and whole blocks from the origin; no padding
        # to a multiple of 2^levels: the pyramid handles odd sizes, and that
        # padding would cost up to 56% more pixels on 128-px training tiles.
        top, bottom = mosaic_pads(H, oy, b, b, cfg.front_radius)
        left, right = mosaic_pads(W, ox, b, b, cfg.front_radius)
        xp, cfa_p = ops.pad_mosaic(x, cfa, top, bottom, left, right, backend=be)
        c0 = ops.colour_base(xp, cfa_p, backend=be)
        o0, s0 = self._colour_kpn(c0, noise, tuple(int(c) for c in cfa.base_counts))
        U = ops.up_block(o0, cfa_p, backend=be)
        S = ops.up_block(s0, cfa_p, backend=be)
        if cfg.guide_layers:
            U = ops.guide(xp, U, noise, cfa_p, self.sets["guide"], cfg.guide_skip, cfg.guide_pack,
                          self.guide_train_dtype, cfg.guide_proj, backend=be)
        fronts = ops.MlpWeightSets([self.sets[_param_key(f"front.{c}")]
                                    for c in front_set_names(cfa.kind, cfg.front_sharing)])
        out = ops.front_level(xp, U, S, noise, cfa_p, fronts, cfg.front_spec, backend=be)
        return out[..., top:top + H, left:left + W]
