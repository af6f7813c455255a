"""The sensor-kind registry (kpnt.mosaic.kinds) agrees with what CFA derives."""
import pytest

from kpnt.errors import ConfigError
from kpnt.mosaic import kinds
from kpnt.mosaic.cfa import CFA, reference_cfa


@pytest.mark.parametrize("name", kinds.MOSAIC_KINDS)
def test_registry_entry_matches_the_derived_cfa(name):
    k = kinds.kind(name)
    ref = reference_cfa(name)
    assert ref.kind == name and ref.sensor_kind is k
    assert (ref.period, ref.block, ref.class_names) == (k.period, k.block, k.class_names)
    assert ref.n_classes == len(k.class_names) == int(ref.site_class.max()) + 1
    assert kinds.kind_of_period(k.period) is k
    assert kinds.PHASE_DRAW % k.period == 0
    # every phase a crop gives is the same kind, with one name per pattern
    names = {ref.crop(dy, dx).name for dy in range(k.period) for dx in range(k.period)}
    assert CFA.from_pattern(ref.crop(1, 0).pattern).kind == name
    assert len(names) == len({ref.crop(dy, dx).pattern.tobytes() for dy in range(k.period) for dx in range(k.period)})
    assert k.weights_file == f"{name}.safetensors"


def test_unknown_kinds_are_one_line_config_errors():
    with pytest.raises(ConfigError, match=r"unknown sensor kind 'quad': expected one of \('bayer', 'xtrans'\)"):
        kinds.kind("quad")
    with pytest.raises(ConfigError, match="no sensor kind has a 4x4 repeat"):
        kinds.kind_of_period(4)
    assert kinds.period_of(kinds.RGB) == 1
    assert kinds.SENSORS == (*kinds.MOSAIC_KINDS, kinds.RGB)
