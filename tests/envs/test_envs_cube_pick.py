"""cube_pick env: gym compliance, determinism, actions, replay, success detection, cameras, GL."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.cube_pick import CubePickEnv
from envs.expert import ScriptedExpert
from envs.gl import GLBackendError, select_gl_backend
from envs.rollout import evaluate
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS, eval_seeds, train_seeds
from toto_robot.rotations import quat_angle, quat_from_rotvec, quat_mul
from toto_robot.scene import FLOOR_GUARD, FLOOR_Z
from toto_robot.spec import EEF_QUAT_REFERENCE, SpecError

SMALL = {"render_size": 32, "render_mode": "fast"}


@pytest.fixture(scope="module")
def env():
    e = CubePickEnv(**SMALL)
    yield e
    e.close()


def rollout(env, actions, seed):
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in actions:
        out.append(env.step(a)[0])
    return out


def test_gym_make_and_check_env():
    e = gym.make(envs.ENV_ID, render_size=48, cameras=["wrist"], render_mode="fast")
    obs, _ = e.reset(seed=1)
    assert set(obs) == {"wrist_image", "eef_pos", "eef_quat", "gripper_width", "joint_pos"}
    assert obs["wrist_image"].shape == (48, 48, 3) and obs["wrist_image"].dtype == np.uint8
    assert e.unwrapped.shape_meta.check_obs(obs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(e.unwrapped)
    assert not [w for w in caught if "gymnasium" in str(w.filename) or "WARN" in str(w.message)], [str(w.message) for w in caught]
    e.close()


def test_unknown_config_key_and_camera_fail():
    with pytest.raises(Exception, match="rendr_size"):
        CubePickEnv(rendr_size=64)
    with pytest.raises(ValueError, match="unknown cameras"):
        CubePickEnv(cameras=["overhead"])


def test_seeded_determinism_and_seed_dependence(env):
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (8, 7)).astype(np.float32)
    other = CubePickEnv(**SMALL)
    a, b = rollout(env, actions, seed=5), rollout(other, actions, seed=5)
    for oa, ob in zip(a, b):
        for k in oa:
            np.testing.assert_array_equal(oa[k], ob[k], err_msg=k)
    c = rollout(other, actions, seed=6)
    assert not np.array_equal(a[0]["agentview_image"], c[0]["agentview_image"])
    other.close()


def test_train_and_eval_seeds_disjoint():
    assert set(TRAIN_SEEDS).isdisjoint(EVAL_SEEDS)
    assert train_seeds(3) == [0, 1, 2] and eval_seeds(2)[0] == EVAL_SEEDS.start
    with pytest.raises(ValueError):
        train_seeds(len(TRAIN_SEEDS) + 1)


def test_randomization_changes_scene_and_can_be_disabled():
    e = CubePickEnv(**SMALL)
    sizes = set()
    for seed in range(4):
        e.reset(seed=seed)
        sizes.add(round(e.cube_pose()[2], 5))
        assert 0.02 <= e.cube_pose()[2] <= 0.03
        x, y = e.cube_pose()[0][:2]
        assert abs(x - 0.5) <= 0.1 + 1e-9 and abs(y) <= 0.2 + 1e-9
    assert len(sizes) == 4
    nominal = CubePickEnv(**SMALL, randomization={"enabled": False})
    p1 = nominal.reset(seed=1)[0]
    p2 = nominal.reset(seed=2)[0]
    np.testing.assert_array_equal(p1["agentview_image"], p2["agentview_image"])
    e.close()
    nominal.close()


def test_actions_are_clipped_and_nan_rejected(env):
    big = np.array([5, -5, 3, 0, 0, 0, 9], dtype=np.float32)
    clipped = np.clip(big, -1, 1)
    a = rollout(env, [big] * 3, seed=3)[-1]
    b = rollout(env, [clipped] * 3, seed=3)[-1]
    np.testing.assert_array_equal(a["eef_pos"], b["eef_pos"])
    env.reset(seed=3)
    for bad in (np.array([np.nan, 0, 0, 0, 0, 0, 0]), np.array([0, 0, 0, np.inf, 0, 0, 0])):
        with pytest.raises(SpecError, match="NaN/inf"):
            env.step(bad)
    with pytest.raises(SpecError, match="shape"):
        env.step(np.zeros(6))


def test_translation_action_moves_tcp_in_base_frame(env):
    obs, _ = env.reset(seed=4)
    start = obs["eef_pos"].copy()
    for _ in range(4):
        obs = env.step(np.array([1, 0, 0, 0, 0, 0, -1], dtype=np.float32))[0]
    delta = obs["eef_pos"] - start
    assert delta[0] == pytest.approx(4 * env.action_convention.max_translation, abs=0.002)  # no servo lag
    assert abs(delta[1]) < 0.002 and abs(delta[2]) < 0.002


@pytest.mark.parametrize("action", [[1, 0, 0], [0, -0.5, 0], [0, 0, -0.2], [1, 1, 1], [0.5, 0, 0.5]])
def test_tcp_reaches_each_target_within_the_step(env, action):
    # The convention's target (integrated on the previous target, norm-capped), reached as on a Franka.
    conv = env.action_convention
    obs, _ = env.reset(seed=2)
    target, quat = obs["eef_pos"].astype(float), obs["eef_quat"].astype(float)  # the env starts on the measured pose
    a = np.array([*action, 0, 0, 0, -1], np.float32)
    for _ in range(6):
        target, quat, _ = conv.next_target(target, quat, a, obs["eef_pos"])
        obs = env.step(a)[0]
        assert np.linalg.norm(obs["eef_pos"] - target) < 0.002
    obs = env.step(np.array([0, 0, 0, 0, 0, 0.5, -1], np.float32))[0]  # half-scale yaw
    assert quat_angle(obs["eef_quat"], quat_mul(quat_from_rotvec([0, 0, 0.5 * conv.max_rotation]), quat)) < 0.003


def test_targets_stop_at_the_floor_guard(env):
    obs, _ = env.reset(seed=0)
    for _ in range(20):  # full scale down, 40 cm asked for from 25 cm up (away from the cube)
        obs = env.step(np.array([-0.3, 0, -1, 0, 0, 0, -1], np.float32))[0]
    assert obs["eef_pos"][2] == pytest.approx(FLOOR_GUARD, abs=0.002)  # fingertips clear the table


def test_eef_quat_sign_is_continuous_through_the_home_orientation(env):
    # Pointing down has w = 0: tilting through it flipped the sign of a w >= 0 quaternion.
    obs, _ = env.reset(seed=3)
    quats = [obs["eef_quat"]]
    for tilt in [1.0] * 5 + [-1.0] * 10:
        quats.append(env.step(np.array([0, 0, 0, tilt, 0, 0, -1], np.float32))[0]["eef_quat"])
    quats = np.array(quats, float)
    assert (quats[:, 0] > 0).any() and (quats[:, 0] < 0).any()  # w did cross 0
    assert np.linalg.norm(np.diff(quats, axis=0), axis=1).max() < 0.05
    assert np.all(quats @ np.array(EEF_QUAT_REFERENCE) > 0)


def test_floor_collides_a_dropped_cube_comes_to_rest():
    e = CubePickEnv(cameras=[], randomization={"enabled": False})
    e.reset(seed=0)
    q = e._cube_qpos
    e.data.qpos[q:q + 3] = [1.0, 0.0, 0.3]  # beyond the table's far edge (x = 0.7)
    for _ in range(15):
        e.step(np.array([0, 0, 0, 0, 0, 0, -1], np.float32))
    pos, _, half = e.cube_pose()
    assert pos[2] == pytest.approx(FLOOR_Z + half, abs=0.005)
    e.close()


def test_get_state_reset_to_replays_exactly(env):
    rng = np.random.default_rng(1)
    env.reset(seed=7)
    for a in rng.uniform(-1, 1, (5, 7)):
        env.step(a)
    state = env.get_state()
    actions = rng.uniform(-1, 1, (6, 7))
    first = [env.step(a) for a in actions]
    env.reset(seed=99)  # different scene in between
    obs0 = env.reset_to(state)
    assert obs0["eef_pos"].shape == (3,)
    second = [env.step(a) for a in actions]
    for (o1, r1, *_), (o2, r2, *_) in zip(first, second):
        assert r1 == r2
        for k in o1:
            np.testing.assert_array_equal(o1[k], o2[k], err_msg=k)


def test_expert_succeeds_on_seeded_batch():
    result = evaluate(lambda e: ScriptedExpert(e, noise=0.05), {"cameras": [], "render_mode": "fast"},
                      eval_seeds(12), progress=False)
    assert result["n_episodes"] == 12
    assert result["success_rate"] >= 11 / 12, result["episodes"]
    assert 10 < result["mean_steps"] < 100


def _run_until(env, policy, cond, max_steps=100):
    obs = env.reset(seed=11)[0]
    policy.reset()
    infos = []
    for _ in range(max_steps):
        obs, _, term, trunc, info = env.step(policy.select_action(obs))
        infos.append(info)
        if cond(info) or term or trunc:
            break
    return obs, infos


def test_success_needs_lift_grasp_and_hold():
    e = CubePickEnv(cameras=[], render_mode="fast", terminate_on_success=False)
    expert = ScriptedExpert(e, noise=0.0)
    obs, infos = _run_until(e, expert, lambda i: i["is_success"])
    assert infos[-1]["is_success"] and infos[-1]["reward_terms"]["success"] == 1.0
    held = [i["grasped"] and i["cube_height"] >= 0.05 for i in infos]
    run = len(held) - 1 - max([j for j, h in enumerate(held) if not h], default=-1)
    assert run == e.cfg.success.hold_steps  # success on exactly the 10th consecutive lifted+grasped step
    assert not any(i["is_success"] for i in infos[:-1])
    # Dropped: open the gripper -> no longer a success.
    for _ in range(5):
        obs, _, _, _, info = e.step(np.array([0, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    assert not info["is_success"] and not info["grasped"]
    e.close()


def test_pushed_or_thrown_cube_is_not_success():
    e = CubePickEnv(cameras=[], render_mode="fast", randomization={"enabled": False})
    obs, _ = e.reset(seed=0)
    cube = e.cube_pose()[0]
    # Push: go down beside the cube with the gripper closed, then sweep through it.
    moved = []
    for k in range(25):
        target = np.array([cube[0] - 0.08 + max(0, k - 14) * 0.03, cube[1], 0.02])
        obs, _, _, _, info = e.step(np.r_[np.clip((target - obs["eef_pos"]) / 0.05, -1, 1), 0, 0, 0, 1].astype(np.float32))
        moved.append(info["is_success"])
    assert e.cube_pose()[0][0] > cube[0] + 0.03  # it was pushed
    assert not any(moved) and info["cube_height"] < 0.01
    # Thrown: cube high in the air, not in the hand -> lifted but not a success.
    e.reset(seed=0)
    q = e._cube_qpos
    e.data.qpos[q + 2] = 0.3
    mujoco.mj_forward(e.model, e.data)
    info = e.step(np.zeros(7, dtype=np.float32))[4]
    assert info["cube_height"] > 0.05 and not info["grasped"] and not info["is_success"]
    e.close()


def test_camera_params_project_cube_onto_its_pixels():
    e = CubePickEnv(render_size=96, cameras=["agentview", "wrist"], render_mode="fast",
                    randomization={"enabled": False})
    obs, _ = e.reset(seed=0)
    params = e.camera_params()
    cube = e.cube_pose()[0]
    for cam in ("agentview", "wrist"):
        p = params[cam]
        assert p["intrinsics"].shape == (3, 3) and p["extrinsics"].shape == (4, 4) and p["height"] == 96
        cam_T_world = np.linalg.inv(p["extrinsics"])
        pc = cam_T_world[:3, :3] @ cube + cam_T_world[:3, 3]
        assert pc[2] > 0  # in front (OpenCV: z forward)
        u, v, _ = p["intrinsics"] @ (pc / pc[2])
        img = obs[f"{cam}_image"].astype(int)
        red = (img[..., 0] > 120) & (img[..., 1] < 60) & (img[..., 2] < 60)  # nominal cube colour
        assert red.sum() > 3, cam
        rows, cols = np.nonzero(red)
        assert abs(cols.mean() - u) < 4 and abs(rows.mean() - v) < 4, (cam, u, v, cols.mean(), rows.mean())
    e.close()


def test_unknown_mujoco_gl_is_rejected(monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(GLBackendError, match="MUJOCO_GL='vulkan'"):
        select_gl_backend()
    with pytest.raises(GLBackendError):
        CubePickEnv(**SMALL)


def test_env_reports_active_gl_backend(env):
    env.reset(seed=0)
    assert env.gl_backend in ("egl", "osmesa", "glfw")


def _python(code: str, mujoco_gl: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}  # set by this process's EGL import
    env["MUJOCO_GL"] = mujoco_gl
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_unknown_mujoco_gl_rejected_in_a_fresh_process():
    # glx is accepted by MuJoCo itself but cannot render headless; no-camera use still works.
    code = ("from envs.cube_pick import CubePickEnv\n"
            "CubePickEnv(cameras=[]).reset(seed=0)\n"
            "CubePickEnv(render_size=32)\n")
    proc = _python(code, "glx")
    assert proc.returncode != 0 and "GLBackendError: MUJOCO_GL='glx' is not supported" in proc.stderr, proc.stderr


def test_osmesa_backend_renders():
    code = ("from envs.cube_pick import CubePickEnv\n"
            "e = CubePickEnv(render_size=32, cameras=['agentview'], render_mode='fast')\n"
            "o, _ = e.reset(seed=0)\n"
            "print(e.gl_backend, o['agentview_image'].std() > 5)\n"
            "e.close()\n")
    proc = _python(code, "osmesa")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["osmesa", "True"]


def test_env_yaml_matches_config_defaults():
    from hydra import compose, initialize_config_dir

    from envs.config import CubePickConfig
    from toto_robot.action import ActionConvention
    from toto_robot.config import CONF_DIR, as_dataclass, to_dict

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        node = compose("collect_demos").env
    cfg = as_dataclass(CubePickConfig, node)
    assert to_dict(cfg) == to_dict(CubePickConfig())  # gym.make without a config gets conf/ too
    assert cfg.action == ActionConvention()  # conf/action/default.yaml, the one place for the scale


def test_gym_render_mode_rgb_array_returns_agentview():
    e = gym.make(envs.ENV_ID, render_mode="rgb_array", render_size=32, cameras=["wrist"])
    e.reset(seed=0)
    frame = e.render()
    assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
    e.close()
