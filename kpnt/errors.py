"""Error types whose message is a complete one-line explanation for users.

The CLIs print ``str(error)`` of a :class:`KpntError` as a single line
(no traceback unless ``--verbose``) and carry on with the next file.
"""


class KpntError(Exception):
    """Base class: the message says what is wrong and what to do."""


class RawReadError(KpntError):
    """A raw file could not be read or is not a supported mosaic raw."""


class WeightsError(KpntError):
    """A weights file is missing, corrupt or built for another sensor/architecture."""


class DatasetError(KpntError):
    """A dataset folder is missing, malformed or holds no usable pairs."""


class NoiseProfileError(KpntError):
    """A noise-profile table or camera/ISO lookup failed."""


class BlindEstimateError(NoiseProfileError):
    """The blind noise estimate found nothing to measure in the image (too
    small, mostly masked, texture everywhere).  ``reason`` says why, without
    advice: the caller knows which other sources of the level it has."""

    def __init__(self, reason: str):
        super().__init__(f"estimate_blind: {reason}; pass a noise profile instead")
        self.reason = reason


class ConfigError(KpntError, ValueError):
    """A model or op configuration is invalid (bad width, unknown tap set,
    a combination the fused kernels cannot run under ``backend='cuda'``).
    Also a ``ValueError``, so code that caught the bare ``ValueError`` these
    checks raised before keeps working."""
