"""deploy_policy.py as a user runs it: --help, --dry-run on franky-sim (nothing moves, all recorded), the
franky-sim rehearsal with the scripted pick."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hardware.recording import DRY_RUN
from toto_robot.config import CONF_DIR
from toto_robot.episode_store import EpisodeStore
from toto_robot.scene import CUBE_CENTER, FLOOR_GUARD
from toto_robot.spec import ArraySpec, franka_shape_meta

ROOT = CONF_DIR.parent


def test_help_explains_the_job():
    out = subprocess.run([sys.executable, "deploy_policy.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--dry-run" in out.stdout and "checkpoint" in out.stdout


def test_dry_run_on_franky_sim_records_without_moving(tmp_path):
    cmd = [sys.executable, "deploy_policy.py", "--dry-run", "sim=true", "robot=franky_sim", "camera=synthetic",
           "~camera.wrist_image", "camera.agentview_image.width=64", "camera.agentview_image.height=48",
           "image_size=32", "runner.max_steps=10", f"record.store={tmp_path / 'dry.zarr'}", "record.label=none",
           f"record.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "stop: max_steps" in out.stdout
    ep = EpisodeStore.open(tmp_path / "dry.zarr").get_episode(0)
    summary = json.loads((tmp_path / "logs" / "rollout_00000.json").read_text())["summary"]
    # A tick whose inference misses its deadline (a loaded machine) records nothing.
    assert summary["steps"] == 10 and len(ep["action"]) == 10 - summary["overruns"]
    assert np.all(ep["status"] == DRY_RUN)
    assert np.abs(ep["eef_pos"] - ep["eef_pos"][0]).max() < 1e-3  # the arm did not move


def scene_store(path, size: float, seed: int) -> None:
    """One recorded episode start: the nominal cube, `size` wide, yaw 30 degrees, from env seed `seed`."""
    cube = {"cube_pos": ArraySpec((3,), "float32", "low_dim"), "cube_quat": ArraySpec((4,), "float32", "low_dim"),
            "cube_size": ArraySpec((1,), "float32", "low_dim"), "episode_seed": ArraySpec((1,), "int64", "low_dim")}
    store = EpisodeStore.create(path, franka_shape_meta([], 128), extras=cube)
    half_yaw = np.deg2rad(30) / 2
    store.add_episode({"action": np.zeros((1, 7), np.float32), "eef_pos": np.zeros((1, 3), np.float32),
                       "eef_quat": np.array([[0, 1, 0, 0]], np.float32), "gripper_width": np.zeros((1, 1), np.float32),
                       "joint_pos": np.zeros((1, 7), np.float32),
                       "cube_pos": np.array([[*CUBE_CENTER, size / 2]], np.float32),
                       "cube_quat": np.array([[np.cos(half_yaw), 0, 0, np.sin(half_yaw)]], np.float32),
                       "cube_size": np.array([[size]], np.float32), "episode_seed": np.array([[seed]], np.int64)})


@pytest.mark.slow
def test_rehearsal_command_picks_the_cube_in_the_env_world(tmp_path):
    # The README's rehearsal: franky-sim in the cube_pick world, the env's two cameras rendered from it,
    # the scripted pick in the action convention; the grasp is above the floor guard. The cube is
    # placed as a recorded scene started (sim_scenes), and the runner ends the rollout on the robot-side
    # task-done check (held and lifted), before the scripted pick's own `done`.
    scene_store(tmp_path / "scenes.zarr", size=0.06, seed=1_000_123)
    cmd = [sys.executable, "deploy_policy.py", "sim=true", "robot=franky_sim", "camera=franky_sim", "policy.type=scripted",
           f"sim_scenes={tmp_path / 'scenes.zarr'}", f"record.store={tmp_path / 'rehearsal.zarr'}", "record.label=none",
           f"record.log_dir={tmp_path / 'logs'}", f"hydra.run.dir={tmp_path / 'run'}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "MUJOCO_GL": "egl"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "stop: done object held and lifted" in out.stdout and "(lifted)" in out.stdout, out.stdout[-2000:]
    assert "franky-sim rehearsal: 1/1 cubes lifted" in out.stdout, out.stdout[-2000:]
    outcome = json.loads((tmp_path / "logs" / "rehearsal.json").read_text())["outcomes"][0]
    assert outcome["scene_seed"] == 1_000_123 and outcome["cube_lifted"] and outcome["stop_reason"] == "done"
    ep = EpisodeStore.open(tmp_path / "rehearsal.zarr").get_episode(0)
    assert ep["agentview_image"].shape[1:] == ep["wrist_image"].shape[1:] == (128, 128, 3)
    assert ep["eef_pos"][:, 2].min() >= FLOOR_GUARD - 0.004  # the measured hand stayed on the floor guard
    assert ep["gripper_width"][-1, 0] > 0.055  # holding the scene's 6 cm cube (the nominal one is 5 cm)


def test_sim_scenes_without_sim_is_refused_before_connecting(tmp_path):
    scene_store(tmp_path / "scenes.zarr", size=0.05, seed=1)
    out = subprocess.run([sys.executable, "deploy_policy.py", "policy.type=scripted", f"sim_scenes={tmp_path / 'scenes.zarr'}",
                          f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "use it with sim=true" in out.stderr + out.stdout
