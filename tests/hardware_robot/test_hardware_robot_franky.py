"""FrankyRobot against franky-sim on loopback: connect, state, home, relative moves, gripper, safety.

One in-process simulator per module (running as fast as the CPU allows); each test homes the arm.
Steps are paced on the controller's clock (`Robot.wait`), so a loaded machine changes nothing.
"""

import time

import numpy as np
import pytest

from hardware.franky_robot import FrankyConfig, FrankyRobot
from hardware.franky_sim_server import SimServer
from hardware.robot import RobotConnectionError
from toto_robot.rotations import quat_angle, quat_from_rotvec, quat_mul
from hardware.safety import SafetyConfig

pytest.importorskip("franky")
HOME_Q = np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398])
OBS_SPECS = {"eef_pos": (3,), "eef_quat": (4,), "gripper_width": (1,), "joint_pos": (7,)}


@pytest.fixture(scope="module")
def sim():
    with SimServer(host=None, realtime=False, cube=True) as server:
        yield server


def make_robot(sim, safety=None, **kw) -> FrankyRobot:
    return FrankyRobot(FrankyConfig(host=sim.host, realtime_config="ignore", **kw), safety)


@pytest.fixture
def robot(sim):
    with make_robot(sim) as r:
        r.move_home()
        yield r


def run(robot, action, steps, settle=0.4):
    """Send `action` for `steps` control steps at 10 Hz, then let the arm settle (>= `settle` s)."""
    cmds = []
    for _ in range(steps):
        cmds.append(robot.send_action(np.asarray(action, dtype=np.float32)))
        robot.wait(0.1)
    robot.wait(settle)
    at_rest(robot)
    return cmds


def at_rest(robot, max_s=5.0):
    """Wait until the motion has ended: the brake after a stream overshoots and comes back."""
    waited = 0.0
    while robot.get_state().motion_active and waited < max_s:
        robot.wait(0.05)
        waited += 0.05


def test_connect_and_read_state(robot):
    a, b = robot.get_state(), robot.get_state()
    assert a.mode == "Idle" and a.ok and a.errors == ()
    assert b.t_host > a.t_host and b.t_device >= a.t_device
    assert np.linalg.norm(a.eef_quat) == pytest.approx(1.0) and a.eef_quat[0] >= 0
    obs = a.as_obs()
    assert {k: v.shape for k, v in obs.items()} == OBS_SPECS
    assert all(v.dtype == np.float32 for v in obs.values())
    # Home of an FR3 with hand: ~0.31 m in front, ~0.49 m up, pointing down (z axis down).
    np.testing.assert_allclose(a.eef_pos, [0.307, 0.0, 0.487], atol=0.01)
    assert quat_angle(a.eef_quat, [0, 1, 0, 0]) < 0.02


def test_move_home_from_elsewhere(robot):
    run(robot, [1.0, 0.8, -0.8, 0, 0, 1.0, 1.0], 6)
    assert np.abs(robot.get_state().joint_pos - HOME_Q).max() > 0.05
    robot.move_home()
    robot.wait(0.3)  # the simulated servos settle
    s = robot.get_state()
    np.testing.assert_allclose(s.joint_pos, HOME_Q, atol=0.01)
    assert s.gripper_width > 0.07


def test_relative_cartesian_moves_in_base_frame(robot):
    p0 = robot.get_state().eef_pos
    cmds = run(robot, [1.0, 0, 0, 0, 0, 0, -1], 5)  # full scale: 2 cm per step along base +x
    assert all(c.sent and not c.clamps for c in cmds)
    p1 = robot.get_state().eef_pos
    np.testing.assert_allclose(p1 - p0, [0.1, 0, 0], atol=0.003)
    np.testing.assert_allclose(cmds[-1].target_pos, p0 + [0.1, 0, 0], atol=1e-6)
    run(robot, [0, -0.5, 0.5, 0, 0, 0, -1], 5)  # 1 cm per step along -y and +z
    np.testing.assert_allclose(robot.get_state().eef_pos - p1, [0, -0.05, 0.05], atol=0.003)


def test_rotation_about_base_z(robot):
    q0 = robot.get_state().eef_quat
    cmds = run(robot, [0, 0, 0, 0, 0, 1.0, -1], 4)  # full scale: 0.04 rad per step about base z
    assert not any(c.clamps for c in cmds)
    q1 = robot.get_state().eef_quat
    expected = quat_mul(quat_from_rotvec([0, 0, 0.16]), q0)
    assert quat_angle(q1, expected) < 0.01


def test_gripper_grasp_and_open(robot):
    assert robot.grasp() is False  # nothing between the fingers: closes fully, not a grasp
    assert robot.get_state().gripper_width < 0.004
    robot.open_gripper()
    assert robot.get_state().gripper_width > 0.07


def move_to(robot, goal, quat, tol=0.003, max_steps=150):
    """Stream `goal` until the hand is within `tol` m (a loaded machine starves libfranka's loop and
    slows the arm down, hence the generous step budget)."""
    for _ in range(max_steps):
        robot.send_target(goal, quat)
        robot.wait(0.1)
        if np.linalg.norm(robot.get_state().eef_pos - goal) < tol:
            break
    robot.wait(0.3)
    at_rest(robot)
    assert np.linalg.norm(robot.get_state().eef_pos - goal) < tol, (robot.get_state().eef_pos, goal)


def test_grasp_and_lift_cube(sim):
    with make_robot(sim, SafetyConfig(workspace_min=[0.25, -0.35, 0.0])) as robot:
        robot.move_home()
        quat = robot.get_state().eef_quat
        cube = sim.cube_pos()  # 5 cm cube resting on the table
        move_to(robot, cube + [0, 0, 0.12], quat)
        move_to(robot, cube, quat)
        assert robot.grasp() is True
        assert robot.get_state().gripper_width == pytest.approx(0.05, abs=0.006)
        move_to(robot, cube + [0, 0, 0.1], quat)
        assert sim.cube_pos()[2] > cube[2] + 0.08  # lifted with the hand
        robot.move_home()  # opens the hand: drops the cube


def test_gripper_action_debounced_then_sent(robot):
    cmds = run(robot, [0, 0, 0, 0, 0, 0, 1.0], 3, settle=1.0)
    assert [c.gripper for c in cmds] == [None, "close", None] and cmds[0].gripper_debounced
    assert robot.get_state().gripper_width < 0.004


def test_nan_action_refused_and_arm_holds(robot):
    p0 = robot.get_state().eef_pos
    cmds = run(robot, [np.nan, 0.5, 0, 0, 0, 0, -1], 3)
    assert not any(c.sent for c in cmds) and all("NaN" in c.reason for c in cmds)
    np.testing.assert_allclose(robot.get_state().eef_pos, p0, atol=1e-3)
    assert robot.safety.counts["refused"] == 3


def test_workspace_box_holds_and_far_target_refused(sim):
    top = 0.52  # home z is ~0.487
    safety = SafetyConfig(workspace_max=[0.75, 0.35, top])
    with make_robot(sim, safety) as robot:
        robot.move_home()
        run(robot, [0, 0, 1.0, 0, 0, 0, -1], 8)  # pushes up at 0.2 m/s into the lid
        s = robot.get_state()
        assert s.eef_pos[2] <= top + 0.002 and s.eef_pos[2] > top - 0.005
        assert robot.safety.counts["workspace"] >= 1
        cmd = robot.send_target(s.eef_pos + [0.5, 0, 0], s.eef_quat)
        assert not cmd.sent and "outside the workspace" in cmd.reason
        robot.wait(0.3)
        np.testing.assert_allclose(robot.get_state().eef_pos, s.eef_pos, atol=1e-3)


def test_stop_clears_queue_no_stale_motion(robot):
    for _ in range(3):
        robot.send_action(np.array([0.6, 0, 0, 0, 0, 0, -1], np.float32))
        robot.wait(0.05)
    robot.stop()
    s = robot.get_state()
    np.testing.assert_allclose(robot.safety.ref_pos, s.eef_pos)  # re-anchored on the measured pose
    cmd = robot.send_action(np.zeros(7, np.float32) - np.eye(7, dtype=np.float32)[6])
    np.testing.assert_allclose(cmd.target_pos, s.eef_pos, atol=1e-9)
    robot.wait(0.4)
    np.testing.assert_allclose(robot.get_state().eef_pos, s.eef_pos, atol=2e-3)


def test_no_robot_clear_errors():
    robot = FrankyRobot(FrankyConfig(host="127.0.0.213", realtime_config="ignore"))
    with pytest.raises(RobotConnectionError, match="connect"):
        robot.send_action(np.zeros(7, np.float32))
    t = time.monotonic()
    with pytest.raises(RobotConnectionError, match="127.0.0.213"):
        robot.connect()
    assert time.monotonic() - t < 10
