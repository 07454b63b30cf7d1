"""collect_demos: store round trip + exact replay, resume, Ctrl-C, spec mismatch, CLI help."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from envs.collect import EXTRAS, SEED_KEY, CollectConfig, collect_demos
from envs.cube_pick import CubePickEnv, cube_pick_shape_meta
from toto_robot.action import ATTR_KEY, ActionConvention, ActionConventionError
from toto_robot.config import as_dataclass
from toto_robot.episode_store import EpisodeStore, EpisodeStoreError

ROOT = Path(__file__).resolve().parents[2]
TINY_ENV = {"render_size": 32, "render_mode": "fast"}


def _cfg(out: Path, n: int, **kw) -> CollectConfig:
    return as_dataclass(CollectConfig, {"n_episodes": n, "out": str(out), "workers": 2, "progress": False,
                                        "env": TINY_ENV, **kw})


def test_collect_round_trip_replay_and_resume(tmp_path):
    out = tmp_path / "demos.zarr"
    video = tmp_path / "demos.mp4"
    s = collect_demos(_cfg(out, 3, video_path=str(video), video_episodes=1))
    assert s["n_episodes"] == 3 and s["complete"] and not s["interrupted"]
    assert s["attempts"] >= 3 and s["successes"] >= 3 and s["frames_per_s"] > 0
    assert video.stat().st_size > 1000

    store = EpisodeStore.open(out)
    assert store.shape_meta.to_dict() == cube_pick_shape_meta(["agentview", "wrist"], 32).to_dict()
    attrs = store.attrs
    assert attrs["control_hz"] == 10.0 and attrs["env_config"]["render_size"] == 32
    assert attrs[ATTR_KEY] == ActionConvention().to_dict()  # what the stored actions mean
    assert set(attrs["camera_params"]) == {"agentview", "wrist"}
    assert np.asarray(attrs["camera_params"]["agentview"]["intrinsics"]).shape == (3, 3)
    assert attrs["code_version"]["toto_robot"] and attrs["code_version"]["git_commit"]
    ep = store.get_episode(0)
    assert np.all(np.abs(ep["action"]) <= 1) and ep["agentview_image"].dtype == np.uint8
    assert "cube_pos" in ep and len(set(ep[SEED_KEY].ravel().tolist())) == 1
    assert np.all((0.04 <= ep["cube_size"]) & (ep["cube_size"] <= 0.06))  # what a replay needs to place the cube

    # The stored actions replayed from the stored seed reproduce the stored observations exactly.
    env = CubePickEnv(attrs["env_config"])
    obs, _ = env.reset(seed=int(ep[SEED_KEY][0, 0]))
    for t in range(len(ep["action"])):
        for k in store.shape_meta.obs:
            np.testing.assert_array_equal(obs[k], ep[k][t], err_msg=f"{k} at step {t}")
        obs, _, _, _, info = env.step(ep["action"][t])
    assert info["is_success"]
    env.close()

    seeds_before = [int(store.get_episode(i)[SEED_KEY][0, 0]) for i in range(3)]
    s2 = collect_demos(_cfg(out, 5))
    assert s2["n_episodes"] == 5 and s2["n_new"] == 2
    store = EpisodeStore.open(out)
    seeds = [int(store.get_episode(i)[SEED_KEY][0, 0]) for i in range(5)]
    assert seeds[:3] == seeds_before and min(seeds[3:]) > max(seeds_before)  # no seed collected twice


def test_resume_with_other_spec_fails(tmp_path):
    out = tmp_path / "demos.zarr"
    EpisodeStore.create(out, cube_pick_shape_meta(["agentview"], 64))
    with pytest.raises(EpisodeStoreError, match="spec differs"):
        collect_demos(_cfg(out, 1))


def test_demos_made_under_another_or_no_action_convention_are_refused(tmp_path):
    old = tmp_path / "old.zarr"  # collected before the convention was recorded
    EpisodeStore.create(old, cube_pick_shape_meta(["agentview", "wrist"], 32), extras=EXTRAS, attrs={"control_hz": 10.0})
    with pytest.raises(ActionConventionError, match="old.zarr.*records no action convention.*Collect it again"):
        collect_demos(_cfg(old, 1))
    collect_demos(_cfg(tmp_path / "new.zarr", 1))
    faster = {"action": {"max_translation": 0.03}}
    with pytest.raises(ActionConventionError, match="max_translation: recorded 0.02, expected 0.03"):
        collect_demos(_cfg(tmp_path / "new.zarr", 2, env={**TINY_ENV, **faster}))


def test_bad_options_fail(tmp_path):
    with pytest.raises(ValueError, match="keep_failures"):
        collect_demos(_cfg(tmp_path / "x.zarr", 1, motion="random"))
    with pytest.raises(ValueError, match="motion"):
        collect_demos(_cfg(tmp_path / "x.zarr", 1, motion="teleop", keep_failures=True))
    with pytest.raises(Exception, match="n_episode"):
        as_dataclass(CollectConfig, {"n_episode": 3})


def test_sim_video_mode_keeps_every_episode(tmp_path):
    out = tmp_path / "videos.zarr"
    s = collect_demos(_cfg(out, 2, motion="random", keep_failures=True, workers=1,
                           env={**TINY_ENV, "episode_len": 12}))
    store = EpisodeStore.open(out)
    assert store.n_episodes == 2 and s["attempts"] == 2
    assert list(store.episode_lengths()) == [12, 12]  # random motion: no early success, full length


def _run_cli(args, **kw):
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.Popen([sys.executable, "collect_demos.py", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_cli_help():
    proc = _run_cli(["--help"])
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text
    assert "collect_demos" in text and "n_episodes" in text and "keep_failures" in text


def test_ctrl_c_leaves_a_valid_resumable_store(tmp_path):
    out = tmp_path / "demos.zarr"
    proc = _run_cli([f"out={out}", "n_episodes=200", "workers=1", "progress=false", "env.render_size=32",
                     "env.render_mode=fast", f"hydra.run.dir={tmp_path / 'run'}"])
    deadline = time.time() + 90
    n = 0
    while time.time() < deadline and n < 2:
        time.sleep(0.2)
        try:
            n = EpisodeStore.open(out).n_episodes
        except EpisodeStoreError:
            n = 0
        assert proc.poll() is None, proc.communicate()[0]
    assert n >= 2, "collection did not store episodes in time"
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, text
    assert "interrupted" in text
    store = EpisodeStore.open(out)
    n = store.n_episodes
    assert 2 <= n < 200 and store.n_steps == store.episode_ends[-1]
    store.get_episode(n - 1)
    s = collect_demos(_cfg(out, n + 1, workers=1))
    assert s["n_episodes"] == n + 1 and s["n_new"] == 1


def test_eval_seed_split_collects_held_out_seeds(tmp_path):
    """Probe data comes from envs.seeds.EVAL_SEEDS, never from the training range."""
    from envs.seeds import EVAL_SEEDS

    out = tmp_path / "probe.zarr"
    s = collect_demos(_cfg(out, 2, workers=1, motion="random", keep_failures=True, seed_split="eval",
                           env={**TINY_ENV, "episode_len": 3}))
    assert s["n_episodes"] == 2
    store = EpisodeStore.open(out)
    seeds = sorted(int(store.get_episode(i)[SEED_KEY][0, 0]) for i in range(2))
    assert seeds == [EVAL_SEEDS.start, EVAL_SEEDS.start + 1]
    with pytest.raises(ValueError, match="seed_split must be one of"):
        collect_demos(_cfg(tmp_path / "x.zarr", 1, seed_split="test"))


@pytest.mark.parametrize("label", ["executed", "expert"])
def test_expert_label_stores_the_noise_free_action_dart(label):
    """label=expert (DART): the env executes the noisy action, the store holds the expert's clean one."""
    from envs.collect import _run_episode
    from envs.expert import ScriptedExpert

    env = CubePickEnv(TINY_ENV)
    expert = ScriptedExpert(env, noise=0.3)
    executed, step = [], env.step
    env.step = lambda a: (executed.append(np.array(a)), step(a))[1]
    ep, _, n = _run_episode(env, expert, seed=3, label=label)
    env.close()
    executed = np.stack(executed)
    assert n == len(executed) == len(ep["action"]) and np.all(np.abs(ep["action"]) <= 1)
    noise = executed[:, :6] - ep["action"][:, :6]
    if label == "executed":
        np.testing.assert_array_equal(noise, 0)
    else:
        assert 0.1 < noise.std() < 0.4  # the 0.3 noise (clipped at +-1) was executed, not stored
        np.testing.assert_array_equal(ep["action"][:, 6], executed[:, 6])  # no noise on the gripper
