"""Replay: offline (recorded obs -> policy vs recorded actions) and online (actions through the runner)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from hardware.deploy_app import replay_episode
from toto_robot.spec import franka_shape_meta
from hardware.replay import compare_actions
from hardware.safety import SafetyConfig
from hardware.simple_policies import TinyTorchConfig, TinyTorchPolicy
from toto_robot.config import CONF_DIR
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import SpecError

SM = franka_shape_meta(["agentview_image"], 32)


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
    EpisodeStore.create(path, SM).add_episode(ep)
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


def test_online_replay_through_the_runner_on_franky_sim(tmp_path):
    recorded = np.zeros((15, 7), np.float32)
    recorded[:, 0] = 0.4  # +2 cm per step along x
    recorded[:, 6] = -1.0
    ep = {k: np.zeros((15, *s.shape), s.dtype) for k, s in SM.obs.items()}
    EpisodeStore.create(tmp_path / "src.zarr", SM).add_episode({**ep, "action": recorded})
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("replay_episode", [
            f"store={tmp_path / 'src.zarr'}", "mode=online", "sim=true", "robot=franky_sim", "robot.home_speed=0.5",
            "camera=synthetic", "~camera.wrist_image", "camera.agentview_image.width=64", "camera.agentview_image.height=48",
            "image_size=32", f"record.store={tmp_path / 'replayed.zarr'}", f"record.log_dir={tmp_path / 'logs'}",
        ])
    summary = replay_episode(cfg)
    assert summary["stop_reason"] == "done"
    out = EpisodeStore.open(tmp_path / "replayed.zarr").get_episode(0)
    np.testing.assert_array_equal(out["policy_action"], recorded[: len(out["policy_action"])])  # replayed as recorded
    # Sent: what the safety filter let through. At rest the first steps go out whole; later ones are
    # shortened only by the lead limit, when franky-sim lags the wall clock on a loaded machine.
    sent = out["action"][:, 0]
    assert sent[0] == pytest.approx(0.4) and np.all((sent > 0) & (sent <= 0.4 + 1e-6))
    # The arm follows the targets to within the lead limit (targets integrate the sent steps).
    commanded = 0.05 * sent[:-1].sum()  # m (0.05 m per unit action), up to the last measured step
    moved = out["eef_pos"][-1, 0] - out["eef_pos"][0, 0]
    assert moved > commanded - SafetyConfig().max_lead - 0.01 and moved > 0.02
