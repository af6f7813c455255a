"""Frozen specs of kpnt's ops: what one op computes, apart from its tensors.

A :class:`kpnt.model.ModelConfig` is turned into one spec per op *once*
(``config.colour_spec``, ``config.front_spec``) and validated there; the
reference (:mod:`kpnt.ref`) and the fused implementation
(:mod:`kpnt.ops._cuda`) of an op take the same ``(tensors..., spec)``
arguments, and the capability table (:mod:`kpnt.ops.capability`) answers
from the spec alone whether the fused kernels can run it.

- :class:`MlpShape`: ``(in, hidden, out, n_hidden)`` of one bias-free MLP,
  the key of the compiled-shape list (``kernels/shapes.def``).
- :class:`ColourLevelSpec`: one level of the colour KPN (DESIGN.md section 2).
- :class:`FrontLevelSpec`: the mosaic front level (DESIGN.md section 3).

Extending the front level (more taps, a cascaded second pass, features from
a coarser band): add a field with a default that reproduces today's model,
let :meth:`FrontLevelSpec.widths` account for it, and add it to
:meth:`FrontLevelSpec.fused_key` so the capability table can tell the
variants apart; configs and weights files without the field keep loading.
"""
from __future__ import annotations

from dataclasses import dataclass

from kpnt.errors import ConfigError
from kpnt.ref.apply import APPLY_MODES
from kpnt.ref.features import n_features
from kpnt.ref.taps import COLOUR_TAP_SETS, centre_index, colour_taps

#: Kernels the front MLP predicts: 'shared' (DESIGN.md section 3: one
#: kernel, the same detail added to all three channels) or 'per_channel'
#: (one kernel per output channel, ordered by role:
#: :func:`kpnt.ref.front_layout.front_roles`).
FRONT_KERNELS = ("shared", "per_channel")
#: Weight-set sharing of the front level: 'symmetry' (DESIGN.md section 3)
#: or 'none', one set per site position (:mod:`kpnt.ref.front_layout`).
FRONT_SHARINGS = ("symmetry", "none")


def pad16(n: int) -> int:
    """``n`` rounded up to a multiple of 16 (MLP widths: tensor-core tiles)."""
    return -(-n // 16) * 16


@dataclass(frozen=True)
class MlpShape:
    """``(n_in, hidden, n_out, n_hidden)`` of a bias-free MLP: ``n_hidden``
    hidden layers of ``hidden`` units, ``n_hidden + 1`` matrices."""

    n_in: int
    hidden: int
    n_out: int
    n_hidden: int

    @classmethod
    def of(cls, weights) -> "MlpShape":
        """Shape of a weight list ``[W0 (hidden, in), ..., Wout (out, hidden)]``
        (matrices stored ``(out, in)``; a leading group axis is ignored)."""
        return cls(int(weights[0].shape[-1]), int(weights[0].shape[-2]), int(weights[-1].shape[-2]),
                   len(weights) - 1)

    @property
    def n_weights(self) -> int:
        """Weights of one set packed matrix after matrix."""
        return self.hidden * self.n_in + (self.n_hidden - 1) * self.hidden ** 2 + self.n_out * self.hidden

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.n_in, self.hidden, self.n_out, self.n_hidden)

    def __str__(self) -> str:
        return f"(in={self.n_in}, hidden={self.hidden}, out={self.n_out}, n_hidden={self.n_hidden})"


def _check_common(problems: list[str], width: int, hidden_layers: int, leaky_slope: float, apply_mode: str,
                  prefix: str) -> None:
    # Problems are named after the ModelConfig fields (``prefix`` 'front_'
    # for the front level), so a CLI error points at the option to change.
    if width <= 0 or width % 16:
        problems.append(f"{prefix}width must be a positive multiple of 16 (fused MLP tiles), got {width}")
    if hidden_layers < 1:
        problems.append(f"{prefix}hidden_layers must be >= 1, got {hidden_layers}")
    if not 0 <= leaky_slope < 1:
        problems.append(f"leaky_slope must be in [0, 1), got {leaky_slope}")
    if apply_mode not in APPLY_MODES:
        problems.append(f"apply_mode must be one of {APPLY_MODES}, got {apply_mode!r}")


@dataclass(frozen=True)
class ColourLevelSpec:
    """One colour level: tap set, MLP width/depth and the kernel application.

    Attributes:
        taps: tap set name (:data:`kpnt.ref.taps.COLOUR_TAP_SETS`).
        width, hidden_layers: the colour MLP.
        leaky_slope: negative slope of the hidden leaky ReLUs.
        apply_mode: 'softmax' or 'plain' kernel normalisation.
        noise_input: feed the log noise std to the MLP (else 0).
    """

    taps: str = "diamond15"
    width: int = 64
    hidden_layers: int = 6
    leaky_slope: float = 0.01
    apply_mode: str = "softmax"
    noise_input: bool = True

    def __post_init__(self):
        problems = []
        if self.taps not in COLOUR_TAP_SETS:
            problems.append(f"colour_taps must be one of {tuple(COLOUR_TAP_SETS)}, got {self.taps!r}")
        _check_common(problems, self.width, self.hidden_layers, self.leaky_slope, self.apply_mode, "")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def offsets(self):
        """(T, 2) tap offsets (dy, dx)."""
        return colour_taps(self.taps)

    @property
    def centre_index(self) -> int:
        """Index of the (0, 0) tap in :attr:`offsets`."""
        return centre_index(self.offsets)

    def widths(self) -> tuple[int, int, int]:
        """``(T, n_in, n_out)``: taps, MLP inputs (lum + chroma per tap,
        noise, 1, padded to 16) and outputs (T kernel logits + blend logit,
        padded to 16): diamond15 (15, 32, 16), square25 (25, 64, 32)."""
        T = len(self.offsets)
        return T, n_features(T), pad16(T + 1)

    @property
    def mlp(self) -> MlpShape:
        _, n_in, n_out = self.widths()
        return MlpShape(n_in, self.width, n_out, self.hidden_layers)


@dataclass(frozen=True)
class FrontLevelSpec:
    """The mosaic front level: taps, kernels, weight-set sharing, MLP.

    Attributes:
        radius: the kernel is the full (2r+1)^2 square.
        kernels: 'shared' or 'per_channel' (:data:`FRONT_KERNELS`).
        sharing: 'symmetry' or 'none' (:data:`FRONT_SHARINGS`).
        width, hidden_layers: each site class's MLP.
        leaky_slope, apply_mode, noise_input: as :class:`ColourLevelSpec`.
    """

    radius: int = 2
    kernels: str = "shared"
    sharing: str = "symmetry"
    width: int = 64
    hidden_layers: int = 4
    leaky_slope: float = 0.01
    apply_mode: str = "softmax"
    noise_input: bool = True

    def __post_init__(self):
        problems = []
        if self.radius < 1:
            problems.append(f"front_radius must be >= 1, got {self.radius}")
        if self.kernels not in FRONT_KERNELS:
            problems.append(f"front_kernels must be one of {FRONT_KERNELS}, got {self.kernels!r}")
        if self.sharing not in FRONT_SHARINGS:
            problems.append(f"front_sharing must be one of {FRONT_SHARINGS}, got {self.sharing!r}")
        _check_common(problems, self.width, self.hidden_layers, self.leaky_slope, self.apply_mode, "front_")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def n_kernels(self) -> int:
        """Kernels per pixel: 1 ('shared') or 3 ('per_channel')."""
        return 1 if self.kernels == "shared" else 3

    def widths(self) -> tuple[int, int, int]:
        """``(T, n_in, n_out)``: T = (2r+1)^2 taps, n_in = pad16(T + 2)
        (tap SNRs, noise, 1), n_out = pad16(K T + 1) for K kernels (K x T
        kernel logits, then the blend logit at index K T)."""
        T = (2 * self.radius + 1) ** 2
        return T, pad16(T + 2), pad16(self.n_kernels * T + 1)

    @property
    def mlp(self) -> MlpShape:
        _, n_in, n_out = self.widths()
        return MlpShape(n_in, self.width, n_out, self.hidden_layers)

    def fused_key(self) -> tuple:
        """What a fused front kernel is compiled for besides the MLP shape:
        ``(radius, kernel count)`` (``kernels/shapes.def`` KPNT_FRONT)."""
        return (self.radius, self.n_kernels)
