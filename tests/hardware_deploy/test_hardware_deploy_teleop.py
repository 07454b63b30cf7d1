"""Teleop collection end to end: keys from a FIFO -> keyboard teleop -> runner -> franky-sim -> store."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
from hydra import compose, initialize_config_dir

from hardware.deploy_app import collect_teleop
from hardware.recording import SENT, SUCCESS
from hardware.teleop import KeyboardTeleop
from toto_robot.config import CONF_DIR
from toto_robot.episode_store import EpisodeStore


def _type_keys(fifo: str, driving: threading.Event, script: list[tuple[float, str]]) -> None:
    with open(fifo, "w") as f:  # opening blocks until the reader opens its end
        driving.wait(120)  # the loop runs (homing first takes long on a loaded machine)
        for delay, keys in script:
            time.sleep(delay)
            f.write(keys)
            f.flush()


def test_keyboard_teleop_episode_is_recorded_like_sim_demos(tmp_path, monkeypatch):
    fifo = str(tmp_path / "keys")
    os.mkfifo(fifo)
    # Keys are typed once the control loop asks the keyboard for motion (the arm is home).
    # Drive +x for ~1 s, close the gripper (space), end the episode while the grasp may still
    # run (the session then closes the robot with it in flight), keep it.
    driving = threading.Event()
    motion = KeyboardTeleop.motion
    monkeypatch.setattr(KeyboardTeleop, "motion", lambda self: (driving.set(), motion(self))[1])
    script = [(0.3, "")] + [(0.1, "w")] * 10 + [(0.1, " "), (0.5, "\n"), (0.3, "y")]
    typist = threading.Thread(target=_type_keys, args=(fifo, driving, script), daemon=True)
    typist.start()
    store_path = tmp_path / "teleop.zarr"
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("collect_teleop", overrides=[
            "sim=true", "robot=franky_sim", "robot.home_speed=0.5", "camera=synthetic",
            "camera.agentview_image.width=64", "camera.agentview_image.height=48",
            "camera.wrist_image.width=64", "camera.wrist_image.height=48",
            "image_size=32", "episodes=1", "teleop.device=keyboard", f"teleop.key_stream={fifo}",
            f"record.store={store_path}", f"record.log_dir={tmp_path / 'logs'}", "runner.max_steps=100",
        ])
    kept = collect_teleop(cfg)
    typist.join(timeout=5)
    assert kept == 1
    store = EpisodeStore.open(store_path)
    assert store.n_episodes == 1
    assert store.attrs["source"] == "teleop" and "agentview_image" in store.attrs["cameras"]
    assert set(store.shape_meta.obs) == {"agentview_image", "wrist_image", "eef_pos", "eef_quat", "gripper_width", "joint_pos"}
    ep = store.get_episode(0)
    assert np.all(ep["status"] == SENT) and np.all(ep["success"] == SUCCESS)
    assert ep["agentview_image"].shape[1:] == (32, 32, 3)
    assert ep["eef_pos"][-1, 0] - ep["eef_pos"][0, 0] > 0.015  # 'w' drove the arm along +x (franky-sim may lag)
    assert np.abs(ep["eef_pos"][-1, 1:] - ep["eef_pos"][0, 1:]).max() < 0.01
    grip = ep["action"][:, 6]
    assert grip[0] == -1.0 and grip[-1] == 1.0 and set(np.unique(grip)) == {-1.0, 1.0}  # opened, then closed
