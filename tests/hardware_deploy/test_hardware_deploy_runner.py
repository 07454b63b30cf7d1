"""The deploy loop against franky-sim (real libfranka protocol on 127.0.0.x), with real cameras classes.

The loop runs on the wall clock, as on a robot; on a loaded machine franky-sim runs slower than that
(realtime factor 0.2-0.5 measured on a 2-core box at load 10), inferences miss their deadline and
camera threads starve. So these tests check what the loop does, not how fast: rate, latency and zero
overruns are figures of bench/deploy_latency.py. The frame-age watchdog gets 1 s here except where
it is the subject.
"""

from __future__ import annotations

import _thread
import json
import threading
import time

import numpy as np
import pytest

from hardware.camera import SyntheticCamera, SyntheticCameraConfig
from hardware.franky_robot import FrankyConfig, FrankyRobot
from hardware.franky_sim_server import SimServerProcess
from hardware.recording import DRY_RUN, REFUSED, SENT, SUCCESS, open_rollout_store
from hardware.runner import DeployRunner, RunnerConfig
from hardware.safety import SafetyConfig
from hardware.simple_policies import ReplayPolicy, TinyTorchConfig, TinyTorchPolicy
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import ArraySpec, ShapeMeta

SHAPE_META = ShapeMeta(
    obs={
        "agentview_image": ArraySpec((32, 32, 3), "uint8", "rgb"),
        "eef_pos": ArraySpec((3,), "float32"),
        "eef_quat": ArraySpec((4,), "float32"),
        "gripper_width": ArraySpec((1,), "float32"),
        "joint_pos": ArraySpec((7,), "float32"),
    }
)
HZ = 10.0


def robot_config(host: str) -> FrankyConfig:
    return FrankyConfig(host=host, realtime_config="ignore", home_speed=0.4)


@pytest.fixture(scope="module")
def sim():
    # Its own process: in this one its 1 kHz Python loop would compete for the GIL with the runner.
    with SimServerProcess(host=None, realtime=True) as server:
        yield server


@pytest.fixture(scope="module")
def robot(sim):
    with FrankyRobot(robot_config(sim.host), SafetyConfig()) as r:
        r.move_home()
        yield r


def camera(**kw) -> SyntheticCamera:
    cfg = SyntheticCameraConfig(width=64, height=48, fps=30, warmup_frames=1, **kw)
    return SyntheticCamera(cfg, name="agentview_image")


# A blocking call would wait for the gripper's fingers (> 1 s); one that returns at once can still be
# held up ~0.1-0.2 s by the scheduler of a loaded 2-core machine.
NON_BLOCKING_MS = 400


def run(robot, policy, cam=None, **cfg):
    cam = cam or camera()
    config = RunnerConfig(**{"control_hz": HZ, "home_at_start": False, "trigger_camera": "agentview_image",
                             "max_frame_age_ms": 1000.0, **cfg})
    with cam, DeployRunner(robot, {"agentview_image": cam}, policy, config) as runner:
        return runner, runner.run_episode()


def tiny(**kw) -> TinyTorchPolicy:
    # Translation and rotation; the gripper is kept open so that the runs stay deterministic.
    return TinyTorchPolicy(TinyTorchConfig(width=16, fixed_gripper=-1.0, **kw), SHAPE_META)


def test_tiny_torch_policy_runs_at_10hz_inside_the_box_and_is_recorded(robot, tmp_path):
    store = open_rollout_store(tmp_path / "rollouts.zarr", SHAPE_META, ["agentview_image"], {"source": "test"})
    runner, result = run(robot, tiny(action_scale=1.0), max_steps=30)
    s = result.log.summary()
    assert result.stop_reason == "max_steps" and s["steps"] == 30 and result.n_steps == 30 - s["overruns"]
    assert s["achieved_hz"] <= HZ * 1.01  # never faster than the rate (no bursts after falling behind)
    ep = result.episode
    lo, hi = np.array(SafetyConfig().workspace_min), np.array(SafetyConfig().workspace_max)
    assert np.all(ep["eef_pos"] >= lo - 0.01) and np.all(ep["eef_pos"] <= hi + 0.01)
    assert np.all(ep["status"] == SENT)
    assert np.linalg.norm(ep["eef_pos"][-1] - ep["eef_pos"][0]) > 0.01  # the arm did move
    # the recorded action is the filtered one, in range; timestamps ordered per step
    assert np.all(np.abs(ep["action"]) <= 1.0)
    ticks = np.diff(ep["t_tick"][:, 0]) / 0.1  # whole periods: a missed tick is skipped, never squeezed in
    assert np.all(ticks >= 1 - 1e-5) and np.allclose(ticks, np.round(ticks), atol=1e-5)
    assert np.all(ep["t_frame_agentview_image"][:, 0] > ep["t_tick"][:, 0])  # frame arrived after the tick
    assert np.all(ep["t_command"][:, 0] > ep["t_state"][:, 0])
    index = runner.save(result, store, success=SUCCESS, log_dir=tmp_path / "logs")
    back = EpisodeStore.open(tmp_path / "rollouts.zarr").get_episode(index)
    np.testing.assert_array_equal(back["eef_pos"], ep["eef_pos"])
    assert np.all(back["success"] == SUCCESS)
    log = json.loads((tmp_path / "logs" / "rollout_00000.json").read_text())
    assert log["summary"]["steps"] == 30 and log["cameras"]["agentview_image"]["type"] == "synthetic"


def test_nan_actions_are_refused_and_recorded(robot):
    actions = np.zeros((6, 7), np.float32)
    actions[2, 0] = np.nan
    _, result = run(robot, ReplayPolicy(actions, SHAPE_META), max_steps=10)
    assert result.stop_reason == "done" and result.n_steps == 6
    assert result.episode["status"][:, 0].tolist() == [SENT, SENT, REFUSED, SENT, SENT, SENT]
    assert result.log.safety_counts["refused"] == 1


def test_camera_that_stops_delivering_stops_the_run(robot):
    _, result = run(robot, tiny(), cam=camera(stop_after_s=1.0), max_steps=40, max_frame_age_ms=100.0)
    assert result.stop_reason == "stale_frame"
    assert 1 <= result.n_steps <= 12
    time.sleep(0.3)  # stop() was issued: the motion has ended
    assert not robot.get_state().motion_active
    assert robot.get_state().ok


def test_gripper_toggling_through_the_runner_keeps_the_rate(robot):
    # The gripper runs in its own process: grasp/open commands issued while another one runs never
    # hold up the 10 Hz loop (they used to block the whole process).
    actions = np.zeros((30, 7), np.float32)
    actions[:, 6] = np.where((np.arange(30) // 6) % 2 == 0, 1.0, -1.0)  # close 0.6 s, open 0.6 s, ...
    _, result = run(robot, ReplayPolicy(actions, SHAPE_META), max_steps=60)  # room for overrun ticks
    assert result.stop_reason == "done" and result.n_steps == 30
    s = result.log.summary()
    assert s["latency_ms"]["command"]["max"] < NON_BLOCKING_MS
    assert robot._gripper.counts["submitted"] >= 4  # the commands did go out
    assert robot._gripper.pop_error() is None
    widths = result.episode["gripper_width"][:, 0]
    assert widths.max() - widths.min() > 0.005  # the fingers moved while the loop ran
    robot.open_gripper()


def test_joint_limit_stops_the_run(robot):
    # A joint nearing its limit stops the arm before the controller would (franky-sim would not):
    # here joint 1's limit is moved next to home, and the policy drives sideways into it.
    upper = list(robot.config.joint_upper)
    robot.config.joint_upper = [0.2, *upper[1:]]
    try:
        sideways = np.tile([0, 1.0, 0, 0, 0, 0, -1], (100, 1)).astype(np.float32)  # 100 steps: the sim may lag
        _, result = run(robot, ReplayPolicy(sideways, SHAPE_META), max_steps=100)
        assert result.stop_reason == "joint_limit", result.message
        assert "joint 1" in result.message and "move home" in result.message
        assert result.n_steps < 100
        assert result.log.summary()["robot_events"] == {"joint_limit_stops": 1}
    finally:
        robot.config.joint_upper = upper
    robot.move_home()  # homing is how an operator goes on
    assert abs(robot.get_state().joint_pos[0]) < 0.01


def test_slow_policy_overruns_are_reported_and_rate_is_held(robot):
    _, result = run(robot, tiny(min_latency_ms=140), max_steps=12)
    s = result.log.summary()
    assert result.stop_reason == "max_steps"
    assert s["overruns"] >= 4  # every inference spans two ticks
    assert s["latency_ms"]["period"]["p50"] >= 95  # ticks are never squeezed (their rate: bench/deploy_latency.py)
    assert result.n_steps == 12 - s["overruns"]  # skipped ticks send and record nothing


def test_slow_policy_stops_the_run_when_configured(robot):
    _, result = run(robot, tiny(min_latency_ms=140), max_steps=12, on_overrun="stop")
    assert result.stop_reason == "overrun" and "deadline" in result.message
    assert result.n_steps == 0 and result.episode is None


def test_dry_run_moves_nothing(robot):
    before = robot.get_state().eef_pos
    _, result = run(robot, tiny(action_scale=1.0), max_steps=10, dry_run=True)
    assert result.stop_reason == "max_steps"
    assert np.all(result.episode["status"] == DRY_RUN)
    assert np.abs(result.episode["action"][:, :3]).max() > 0.01  # actions were computed and filtered
    np.testing.assert_allclose(robot.get_state().eef_pos, before, atol=1e-3)
    assert result.log.commands_sent == 0


def test_ctrl_c_stops_and_returns_home(robot):
    home = np.asarray(robot.config.home_joints)
    timer = threading.Timer(1.0, _thread.interrupt_main)
    timer.start()
    _, result = run(robot, tiny(action_scale=1.0), max_steps=100)
    timer.join()
    assert result.stop_reason == "interrupted"
    assert 1 <= result.n_steps < 20
    assert "returned home after Ctrl-C" in result.log.events
    np.testing.assert_allclose(robot.get_state().joint_pos, home, atol=0.02)


def test_second_ctrl_c_during_homing_stops_the_arm_where_it_is(robot, monkeypatch):
    home = np.asarray(robot.config.home_joints)
    homing = robot.move_home

    def move_home_interrupted(*args, **kwargs):  # the operator presses Ctrl-C again while the arm goes home
        threading.Timer(0.4, _thread.interrupt_main).start()
        return homing(*args, **kwargs)

    actions = np.tile(np.array([0, 1.0, 0, 0, 0, 0, 1.0], np.float32), (100, 1))  # sideways, gripper closed
    threading.Timer(1.5, _thread.interrupt_main).start()
    monkeypatch.setattr(robot, "move_home", move_home_interrupted)
    _, result = run(robot, ReplayPolicy(actions, SHAPE_META), max_steps=100)
    monkeypatch.undo()
    assert result.stop_reason == "interrupted"
    assert any("second Ctrl-C" in e for e in result.log.events), result.log.events
    time.sleep(0.5)
    s = robot.get_state()
    assert not s.motion_active and s.ok  # stopped, not faulted
    assert np.abs(s.joint_pos - home).max() > 0.03  # held where it stopped, not home
    assert s.gripper_width < 0.01  # the gripper was not opened
    robot.move_home()


def test_simulator_killed_mid_run_stops_cleanly_and_keeps_the_rollout(tmp_path):
    path = tmp_path / "rollouts.zarr"
    with SimServerProcess(host=None, realtime=True) as proc:
        with FrankyRobot(robot_config(proc.host)) as r:
            store = open_rollout_store(path, SHAPE_META, ["agentview_image"], {})
            killer = threading.Timer(1.5, proc.kill)
            killer.start()
            runner, result = run(r, tiny(action_scale=1.0), max_steps=100)
            killer.join()
            assert result.stop_reason == "connection_lost", result.message
            assert "connection" in result.message
            assert 5 <= result.n_steps < 40
            runner.save(result, store)
    back = EpisodeStore.open(path)
    assert back.n_episodes == 1 and back.n_steps == result.n_steps
    np.testing.assert_array_equal(back.get_episode(0)["eef_pos"], result.episode["eef_pos"])


def test_reflex_is_recovered_once_then_the_run_stops():
    from hardware.faults import FaultInjectingRobot

    # Its own simulator: the controller serves one client and the module's robot holds the other.
    with SimServerProcess(host=None, realtime=True) as sim, FaultInjectingRobot(robot_config(sim.host), faults={4: "reflex"}) as r:
        _, once = run(r, tiny(), max_steps=12)
    assert once.stop_reason == "max_steps", once.message
    s = once.log.summary()
    assert s["reflexes"] == {"cartesian_reflex": 1} and s["recoveries"] == 1
    assert any("recovered at step" in e for e in s["events"])
    assert (once.episode["status"][:, 0] == REFUSED).sum() == 1  # the step that hit the reflex sent nothing

    with SimServerProcess(host=None, realtime=True) as sim, \
            FaultInjectingRobot(robot_config(sim.host), faults={3: "reflex", 7: "silent_reflex"}) as r:
        _, twice = run(r, tiny(), max_steps=20)
        assert twice.stop_reason == "reflex" and "after 1 recovery" in twice.message
        assert sum(twice.log.reflexes.values()) == 2 and twice.log.recoveries == 1
        assert twice.n_steps < 12


def test_scripted_policy_drives_toward_the_cube_inside_the_box(robot):
    from hardware.simple_policies import ScriptedPickConfig, ScriptedPickPolicy

    cube = [0.45, 0.1, 0.2]
    # tolerance 0: the hover waypoint 0.1 m above the cube is approached but never "reached", so no
    # grasp is issued (closing the gripper is covered by the backend's own tests)
    policy = ScriptedPickPolicy(ScriptedPickConfig(cube_pos=cube, hover=0.1, tolerance=0.0), SHAPE_META)
    _, result = run(robot, policy, max_steps=30)
    ep = result.episode
    assert result.stop_reason == "max_steps"
    lo, hi = np.array(SafetyConfig().workspace_min), np.array(SafetyConfig().workspace_max)
    assert np.all(ep["eef_pos"] >= lo - 0.01) and np.all(ep["eef_pos"] <= hi + 0.01)
    target = np.array(cube) + [0, 0, 0.1]
    dist = np.linalg.norm(ep["eef_pos"] - target, axis=1)
    assert dist[-1] < dist[0] - 0.03  # closer (by how much depends on how fast franky-sim runs)
    assert np.all(ep["action"][:, 6] == -1.0)


def test_end_effector_outside_the_box_stops_the_run():
    box = SafetyConfig(workspace_min=[0.25, -0.35, 0.05], workspace_max=[0.75, 0.35, 0.2])  # the ready pose is ~0.48 m high
    with SimServerProcess(host=None, realtime=True) as sim, FrankyRobot(robot_config(sim.host), box) as r:
        start = r.get_state().eef_pos
        _, result = run(r, tiny(), max_steps=10)
    assert start[2] > 0.25, start
    assert result.stop_reason == "workspace" and "outside the workspace box" in result.message
    assert result.episode is None


def test_measured_hand_below_the_floor_guard_stops_the_run():
    # The ready pose is ~0.487 m high; a floor guard at 0.50 m puts the measured hand 1.3 cm below it.
    guard = SafetyConfig(workspace_min=[0.25, -0.35, 0.5], workspace_max=[0.75, 0.35, 0.65])
    with SimServerProcess(host=None, realtime=True) as sim, FrankyRobot(robot_config(sim.host), guard) as r:
        r.move_home()
        _, result = run(r, tiny(), max_steps=10)
        _, within = run(r, tiny(), max_steps=3, floor_stop_margin=0.02)  # tolerance for tracking overshoot
    assert result.stop_reason == "floor_guard" and "below the floor guard" in result.message
    assert result.episode is None  # stopped before any command
    assert within.stop_reason == "max_steps"
