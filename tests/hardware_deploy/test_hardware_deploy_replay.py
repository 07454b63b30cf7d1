"""Replay: offline (recorded obs -> policy vs recorded actions) and online (actions through the runner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from hardware.deploy_app import replay_episode
from hardware.replay import compare_actions, path_error
from hardware.simple_policies import TinyTorchConfig, TinyTorchPolicy
from toto_robot.action import ATTR_KEY, ActionConvention, ActionConventionError
from toto_robot.config import CONF_DIR
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import SpecError, franka_shape_meta

SM = franka_shape_meta(["agentview_image"], 32)
CONVENTION = {ATTR_KEY: ActionConvention().to_dict()}  # what collect_demos / the runner write
HOME_Q = np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398], np.float32)


def _store(tmp_path, policy: TinyTorchPolicy, steps: int = 12) -> str:
    rng = np.random.default_rng(0)
    ep = {
        "agentview_image": rng.integers(0, 256, (steps, 32, 32, 3), dtype=np.uint8),
        "eef_pos": (np.array([0.45, 0.0, 0.3]) + rng.normal(0, 0.01, (steps, 3))).astype(np.float32),
        "eef_quat": np.tile(np.array([0, 1, 0, 0], np.float32), (steps, 1)),
        "gripper_width": np.full((steps, 1), 0.08, np.float32),
        "joint_pos": rng.normal(0, 0.1, (steps, 7)).astype(np.float32),
    }
    ep["action"] = np.stack([policy.select_action({k: ep[k][t] for k in SM.obs}) for t in range(steps)])
    path = tmp_path / "demo.zarr"
    EpisodeStore.create(path, SM, attrs=CONVENTION).add_episode(ep)
    return str(path)


def test_offline_replay_reproduces_its_own_actions_and_flags_another_policy(tmp_path):
    teacher = TinyTorchPolicy(TinyTorchConfig(width=16, seed=0), SM)
    ckpt = teacher.save(tmp_path / "teacher.safetensors")
    store = _store(tmp_path, teacher)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        same = compose("replay_episode", [f"store={store}", f"checkpoint={ckpt}", f"record.log_dir={tmp_path / 'out'}"])
        other = compose("replay_episode", [f"store={store}", "policy.type=tiny_torch", "+policy.seed=1", "+policy.width=16",
                                           "image_size=32", f"record.log_dir={tmp_path / 'other'}"])
    s = replay_episode(same)
    assert s["mae_mean"] < 1e-6 and s["gripper_agreement"] == 1.0 and s["steps"] == 12
    assert (tmp_path / "out" / "replay_episode_0.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "replay_episode_0.json").read_text())["steps"] == 12
    assert replay_episode(other)["mae_mean"] > 0.01


def test_offline_replay_rejects_a_mismatched_store(tmp_path):
    store = EpisodeStore.open(_store(tmp_path, TinyTorchPolicy(TinyTorchConfig(width=16), SM)))
    wrong = TinyTorchPolicy(TinyTorchConfig(width=16), franka_shape_meta(["agentview_image"], 64))
    with pytest.raises(SpecError, match="agentview_image.*expects"):
        compare_actions(wrong, store.get_episode(0), progress=False)


def test_stores_without_or_with_another_action_convention_are_refused(tmp_path):
    ep = {k: np.zeros((3, *s.shape), s.dtype) for k, s in SM.data_spec().items()}
    EpisodeStore.create(tmp_path / "old.zarr", SM, attrs={"control_hz": 10.0}).add_episode(ep)  # made before: no convention
    other = {ATTR_KEY: {**ActionConvention().to_dict(), "max_translation": 0.05}}
    EpisodeStore.create(tmp_path / "other.zarr", SM, attrs=other).add_episode(ep)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        old = compose("replay_episode", [f"store={tmp_path / 'old.zarr'}", "mode=online", "sim=true", "robot=franky_sim"])
        changed = compose("replay_episode", [f"store={tmp_path / 'other.zarr'}", "policy.type=scripted"])
    with pytest.raises(ActionConventionError, match="old.zarr records no action convention.*made before.*move the arm differently"):
        replay_episode(old)  # refused before anything starts or moves
    with pytest.raises(ActionConventionError, match="another action convention.*max_translation: recorded 0.05, expected 0.02"):
        replay_episode(changed)


def test_path_error_is_relative_to_each_start_pose():
    rec = np.cumsum(np.tile([0.02, 0, 0], (10, 1)), axis=0)
    rep = rec + [0.1, -0.2, 0.05]  # the same motion from another start: no error
    assert path_error(rec, rep)["max_m"] == pytest.approx(0.0, abs=1e-12)
    rep[5:, 2] += 0.01  # a 1 cm dip halfway
    e = path_error(rec, rep)
    assert e["max_m"] == pytest.approx(0.01) and e["mean_m"] == pytest.approx(0.005) and e["steps"] == 10


def test_online_replay_through_the_runner_on_franky_sim(tmp_path):
    steps = 15
    recorded = np.zeros((steps, 7), np.float32)
    recorded[:, 0] = 1.0  # full scale: +2 cm per step along x
    recorded[:, 6] = -1.0
    ep = {k: np.zeros((steps, *s.shape), s.dtype) for k, s in SM.obs.items()}
    ep["joint_pos"][:] = HOME_Q  # where the recorded episode started (and, here, stayed)
    ep["eef_pos"] = np.array([0.307, 0.0, 0.487], np.float32) + np.outer(np.arange(steps), [0.02, 0, 0]).astype(np.float32)
    EpisodeStore.create(tmp_path / "src.zarr", SM, attrs=CONVENTION).add_episode({**ep, "action": recorded})
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("replay_episode", [
            f"store={tmp_path / 'src.zarr'}", "mode=online", "sim=true", "robot=franky_sim", "robot.home_speed=0.5",
            "camera=synthetic", "~camera.wrist_image", "camera.agentview_image.width=64", "camera.agentview_image.height=48",
            "image_size=32", f"record.store={tmp_path / 'replayed.zarr'}", f"record.log_dir={tmp_path / 'logs'}",
        ])
    summary = replay_episode(cfg)
    (row,) = summary["episodes"]
    assert row["stop_reason"] == "done" and row["steps"] == steps
    out = EpisodeStore.open(tmp_path / "replayed.zarr")
    assert out.attrs[ATTR_KEY] == ActionConvention().to_dict()  # the replay's own record says what its actions mean
    ep_out = out.get_episode(0)
    np.testing.assert_allclose(ep_out["action"][:, 0], 1.0, atol=1e-5)  # within the safety limits: sent as recorded
    np.testing.assert_allclose(ep_out["joint_pos"][0], HOME_Q, atol=0.01)  # started where the episode started
    assert ep_out["eef_pos"][-1, 0] - ep_out["eef_pos"][0, 0] > 0.25
    assert row["eef_path_error_mean_m"] < 0.01 and row["eef_path_error_max_m"] < 0.02
