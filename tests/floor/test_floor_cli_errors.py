"""Entry points report errors a user can act on as one line (exit code 2); bugs keep their traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from toto_robot.action import ATTR_KEY, ActionConvention
from toto_robot.cli import user_errors
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import franka_shape_meta

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = "/proc/forbidden.zarr"  # /proc takes no new files, not even from root


def run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    for key in [k for k, v in env.items() if v is None]:
        full_env.pop(key, None)
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=180)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unwritable_output_path_names_the_path_given(tmp_path):
    proc = run(["collect_demos.py", f"out={FORBIDDEN}", "n_episodes=2", "progress=false",
                f"hydra.run.dir={tmp_path / 'run'}"])
    line = one_error_line(proc)
    assert f"cannot create the episode store {FORBIDDEN} (is /proc a writable folder?)" in line and ".tmp" not in line

    debug = run(["collect_demos.py", f"out={FORBIDDEN}", "n_episodes=2", "progress=false", "--debug",
                 f"hydra.run.dir={tmp_path / 'run'}"])
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "EpisodeStoreError" in debug.stderr


def _store(tmp_path: Path) -> Path:
    sm = franka_shape_meta(["agentview_image"], 32)
    rng = np.random.default_rng(0)
    ep = {k: rng.uniform(-1, 1, (5, *s.shape)).astype(s.dtype) for k, s in sm.data_spec().items()}
    ep["agentview_image"] = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "demo.zarr"
    EpisodeStore.create(path, sm, attrs={ATTR_KEY: ActionConvention().to_dict()}).add_episode(ep)
    return path


def test_offline_replay_needs_a_checkpoint_or_says_it_is_untrained(tmp_path):
    store = _store(tmp_path)
    common = ["replay_episode.py", f"store={store}", f"record.log_dir={tmp_path / 'out'}",
              f"hydra.run.dir={tmp_path / 'run'}"]
    line = one_error_line(run(common))
    assert "checkpoint=PATH" in line and "untrained" in line

    proc = run([*common, "policy.type=tiny_torch", "image_size=32"])
    assert proc.returncode == 0, proc.stderr
    assert "UNTRAINED tiny_torch" in proc.stdout and "[UNTRAINED tiny_torch policy]: mean MAE" in proc.stdout


def test_damaged_store_is_one_line_for_replay(tmp_path):
    store = _store(tmp_path)
    os.remove(store / "data" / "agentview_image" / "2.0.0.0")
    line = one_error_line(run(["replay_episode.py", f"store={store}", "checkpoint=x.safetensors",
                               f"hydra.run.dir={tmp_path / 'run'}"]))
    assert "data/agentview_image, episode 0, chunk 2.0.0.0" in line


def test_gl_backend_that_cannot_work_headless(tmp_path):
    proc = run(["collect_demos.py", f"out={tmp_path / 'x.zarr'}", "n_episodes=1", "progress=false",
                f"hydra.run.dir={tmp_path / 'run'}"], MUJOCO_GL="glfw", DISPLAY=None, WAYLAND_DISPLAY=None)
    assert "MUJOCO_GL=glfw needs a display" in one_error_line(proc)
    # MuJoCo imported before envs with MUJOCO_GL unset picks GLFW by itself: named, not a FatalError.
    code = "import mujoco\nfrom envs.cube_pick import CubePickEnv\nCubePickEnv(render_size=32).reset(seed=0)\n"
    proc = run(["-c", code], MUJOCO_GL=None, DISPLAY=None, WAYLAND_DISPLAY=None)
    assert proc.returncode != 0 and "GLBackendError: MuJoCo was imported before MUJOCO_GL was set" in proc.stderr


def test_a_config_value_its_dataclass_refuses_is_one_line():
    line = one_error_line(run(["train_policy.py", "policy.chunk=0"]))
    assert "policy.chunk must be >= 1, got 0" in line


def test_bugs_keep_their_traceback():
    @user_errors
    def buggy() -> None:
        raise KeyError("a bug, not a user error")

    with pytest.raises(KeyError):
        buggy()

    @user_errors
    def missing() -> None:
        open("/nonexistent/file")

    with pytest.raises(SystemExit) as e:
        missing()
    assert e.value.code == 2
