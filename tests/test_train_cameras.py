"""kpnt-train's camera selection: --camera all, --holdout, validation cameras."""
import copy
import json
from pathlib import Path

import pytest

from kpnt.cli import train as T
from kpnt.errors import KpntError

TABLE = Path(__file__).resolve().parent.parent / "kpnt" / "data" / "sample_profiles.json"   # Nikon D750, Fujifilm X-T1


def _args(*extra):
    return T.build_parser().parse_args(["--sensor", "bayer", "-o", "/tmp/unused", "--profiles", str(TABLE), *extra])


def test_camera_all_minus_holdout_trains_on_the_rest_and_validates_on_the_held_out():
    cams, val = T._cameras(_args("--camera", "all", "--holdout", "Nikon D750", "--isos", "100-409600", "--val-isos", "3200"), "bayer")
    assert [c.name for c in cams] == ["Fujifilm X-T1"]          # noise of an X-Trans body trains the Bayer model
    assert [c.name for c in val] == ["Nikon D750"]
    assert len(val[0].noise) == 1                                # --val-isos picked one profile
    assert len(cams[0].noise) > 5                                # every profiled ISO of the X-T1


def test_without_holdout_validation_uses_the_training_cameras():
    cams, val = T._cameras(_args("--camera", "all", "--isos", "800-6400"), "xtrans")
    assert [c.name for c in cams] == [c.name for c in val] == ["Fujifilm X-T1", "Nikon D750"]


def test_holding_out_every_camera_is_an_error():
    with pytest.raises(KpntError, match="no camera left"):
        T._cameras(_args("--camera", "all", "--holdout", "Fujifilm X-T1", "--holdout", "Nikon D750"), "xtrans")


def test_validation_prefers_held_out_cameras_of_the_sensor_kind(tmp_path):
    """With a Bayer and an X-Trans body held out, each sensor's model
    validates on its own kind's body only."""
    table = json.loads(TABLE.read_text())
    canon = copy.deepcopy(next(m for m in table["noiseprofiles"] if m["maker"] == "Nikon"))
    canon["maker"], canon["models"][0]["model"] = "Canon", "EOS 6D"
    table["noiseprofiles"].append(canon)
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(table))
    args = T.build_parser().parse_args(["--sensor", "bayer", "-o", "/tmp/unused", "--profiles", str(path), "--camera", "all",
                                        "--holdout", "Nikon D750", "--holdout", "Fujifilm X-T1", "--isos", "800-6400"])
    for sensor, want in (("bayer", "Nikon D750"), ("xtrans", "Fujifilm X-T1")):
        cams, val = T._cameras(args, sensor)
        assert [c.name for c in cams] == ["Canon EOS 6D"]
        assert [c.name for c in val] == [want]


def test_unknown_holdout_is_a_one_line_error():
    with pytest.raises(KpntError, match="--holdout 'Nikon D999'"):
        T._cameras(_args("--camera", "all", "--holdout", "Nikon D999"), "bayer")
