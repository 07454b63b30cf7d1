"""Small parts with exact answers: temporal ensembling, Wilson intervals, normalization, random shift."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from policies.bc_policy import TemporalEnsembler
from policies.encoders import random_shift
from policies.evaluation import wilson_interval
from policies.normalize import Normalizers, canonical_low_dim


def test_temporal_ensembling_averages_every_prediction_for_the_current_step():
    ens = TemporalEnsembler(chunk=3, coeff=0.0)  # coeff 0: plain mean
    a = np.arange(3 * 2, dtype=float).reshape(3, 2)  # predictions for steps t, t+1, t+2
    np.testing.assert_allclose(ens.update(a), a[0])
    b = a + 10  # made at t+1: for t+1, t+2, t+3
    np.testing.assert_allclose(ens.update(b), (a[1] + b[0]) / 2)
    c = a + 20
    np.testing.assert_allclose(ens.update(c), (a[2] + b[1] + c[0]) / 3)
    d = a + 30  # a's chunk is used up: three chunks overlap at most
    np.testing.assert_allclose(ens.update(d), (b[2] + c[1] + d[0]) / 3)
    weighted = TemporalEnsembler(chunk=2, coeff=1.0)
    weighted.update(np.zeros((2, 1)))
    w0, w1 = 1.0, np.exp(-1.0)  # the older prediction weighs more (ACT: w_i = exp(-m i), i = 0 the oldest)
    np.testing.assert_allclose(weighted.update(np.ones((2, 1))), [w1 / (w0 + w1)])


def test_wilson_interval_matches_the_formula_and_stays_in_bounds():
    lo, hi = wilson_interval(47, 50)
    assert lo == pytest.approx(0.8378, abs=1e-4) and hi == pytest.approx(0.9794, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and wilson_interval(0, 50)[1] == pytest.approx(0.0713, abs=1e-4)
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_actions_are_scaled_to_the_training_range_and_clipped_back_into_it():
    acts = np.array([[-0.5, 0.0, 1.0], [0.5, 0.2, -1.0]], np.float32)
    norm = Normalizers.fit({"eef_pos": np.zeros((2, 3), np.float32)}, acts)
    n = norm.normalize_action(acts)
    np.testing.assert_allclose(n[:, 0], [-1, 1])
    np.testing.assert_allclose(n[:, 2], [1, -1])
    np.testing.assert_allclose(norm.unnormalize_action(n), acts, atol=1e-6)
    wild = norm.unnormalize_action(np.array([5.0, -5.0, 0.0], np.float32))
    np.testing.assert_allclose(wild, [0.5, 0.0, 0.0])  # never outside what the demos did
    assert Normalizers.from_dict(norm.to_dict()).to_dict() == norm.to_dict()


def test_eef_quat_sign_is_made_continuous():
    q = np.array([[0.01, 0.99, 0.1, 0.0], [-0.01, -0.99, -0.1, 0.0]], np.float32)  # one orientation, both signs
    out = canonical_low_dim("eef_quat", q)
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert out[0][1] > 0  # the hemisphere of the pointing-down home (0, 1, 0, 0)


def test_random_shift_moves_content_by_at_most_pad_and_keeps_shapes():
    torch.manual_seed(0)
    x = torch.zeros(8, 16, 16, 3)
    x[:, 8, 8] = 255.0
    y = random_shift(x, pad=2, channels_last=True)
    assert y.shape == x.shape
    for img in y:
        r, c = np.argwhere(img[..., 0].numpy() > 0)[0]
        assert abs(r - 8) <= 2 and abs(c - 8) <= 2
    assert len({tuple(np.argwhere(img[..., 0].numpy() > 0)[0]) for img in y}) > 1  # per-sample shifts


def test_train_policy_refuses_demos_collected_with_other_expert_settings(store_factory):
    from policies.pipeline import DemosConfig, check_collector

    store = store_factory()  # no collector attributes: collect_demos.py's defaults (noise 0.05, executed labels)
    check_collector(store, DemosConfig(expert_noise=0.05, label="executed"))
    with pytest.raises(ValueError, match=r"expert_noise 0.05 \(asked: 0.3\), label 'executed' \(asked: 'expert'\).*demos.out=PATH"):
        check_collector(store, DemosConfig())  # the main job's DART demos


def test_the_study_collects_demos_as_the_main_job_does():
    from omegaconf import OmegaConf

    from policies.pipeline import DemosConfig
    from policies.study import StudyConfig
    from toto_robot.config import CONF_DIR

    main = OmegaConf.load(CONF_DIR / "train_policy.yaml").demos
    study = OmegaConf.load(CONF_DIR / "study_sample_efficiency.yaml")
    settings = {(main.expert_noise, main.label), (study.expert_noise, study.label),
                (DemosConfig.expert_noise, DemosConfig.label), (StudyConfig.expert_noise, StudyConfig.label)}
    assert settings == {(0.3, "expert")}
