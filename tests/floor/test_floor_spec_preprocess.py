"""ShapeMeta checks, action validation, shared image preprocessing, typed configs, registry."""

from dataclasses import dataclass

import numpy as np
import pytest
from omegaconf.errors import ConfigKeyError

from toto_robot.cli import UserError
from toto_robot.config import ConfigError, as_dataclass
from toto_robot.preprocess import crop_intrinsics, prepare_image
from toto_robot.registry import Registry
from toto_robot.spec import ArraySpec, ShapeMeta, SpecError, check_finite_action

SM = ShapeMeta(obs={"agentview_image": ArraySpec((8, 8, 3), "uint8", "rgb"), "eef_pos": ArraySpec((3,), "float32")})


def test_shape_meta_round_trip_and_checks():
    assert ShapeMeta.from_dict(SM.to_dict()) == SM
    assert SM.rgb_keys == ["agentview_image"] and SM.low_dim_keys == ["eef_pos"]
    good = {"agentview_image": np.zeros((8, 8, 3), np.uint8), "eef_pos": np.zeros(3, np.float32)}
    SM.check_obs(good)
    with pytest.raises(SpecError, match="lacks keys \\['eef_pos'\\]"):
        SM.check_obs({"agentview_image": good["agentview_image"]})
    with pytest.raises(SpecError, match="'agentview_image': expected dtype uint8"):
        SM.check_obs({**good, "agentview_image": np.zeros((8, 8, 3), np.float32)})
    with pytest.raises(SpecError, match="expected shape"):
        SM.check_obs({**good, "eef_pos": np.zeros((2, 3), np.float32)})
    SM.check_obs({k: v[None] for k, v in good.items()}, batch_dims=1)
    with pytest.raises(SpecError, match="unknown array kind"):
        ArraySpec((1,), "float32", "pixels")


def test_check_finite_action():
    np.testing.assert_array_equal(check_finite_action([0.1] * 7, 7), [0.1] * 7)
    with pytest.raises(SpecError, match="indices \\[2, 6\\]"):
        check_finite_action([0, 0, np.nan, 0, 0, 0, np.inf], 7)
    with pytest.raises(SpecError, match="shape \\(7,\\)"):
        check_finite_action([0.0] * 6, 7)


def test_prepare_image_crops_centre_and_resizes():
    img = np.zeros((480, 640, 3), np.uint8)
    img[:, 80:560] = 200  # the centre square is bright, the side bands dark
    out = prepare_image(img, 128)
    assert out.shape == (128, 128, 3) and out.dtype == np.uint8
    assert out.min() == 200
    same = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    assert prepare_image(same, 128) is same
    with pytest.raises(ValueError, match="HxWx3"):
        prepare_image(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(ValueError, match="uint8"):
        prepare_image(np.zeros((4, 4, 3), np.float32), 2)


def test_crop_intrinsics_maps_principal_point():
    k = np.array([[600.0, 0, 320], [0, 600.0, 240], [0, 0, 1]])
    out = crop_intrinsics(k, 480, 640, 128)
    np.testing.assert_allclose(out[0, 2], 64.0)
    np.testing.assert_allclose(out[1, 2], 64.0)
    np.testing.assert_allclose(out[0, 0], 600 * 128 / 480)


@dataclass
class _Cfg:
    lr: float = 1e-3
    steps: int = 10


def test_as_dataclass_rejects_misspelled_keys():
    assert as_dataclass(_Cfg, {"lr": 0.5}) == _Cfg(lr=0.5)
    with pytest.raises(ConfigError, match="stepz") as e:
        as_dataclass(_Cfg, {"stepz": 3})
    assert isinstance(e.value.__cause__, ConfigKeyError) and isinstance(e.value, UserError)


def test_registry_is_lazy_and_names_unknowns():
    reg = Registry("thing")
    reg.register("ordered", "collections:OrderedDict")
    assert reg.build("ordered", a=1) == {"a": 1}
    with pytest.raises(KeyError, match="unknown thing 'x'; known: \\['ordered'\\]"):
        reg.get("x")
