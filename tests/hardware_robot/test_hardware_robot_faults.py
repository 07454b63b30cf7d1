"""Error and recovery paths: the real franky backend with injected franky faults, and a
franky-sim process killed mid-motion."""

import time

import numpy as np
import pytest

from hardware.faults import FaultInjectingRobot
from hardware.franky_robot import FrankyConfig
from hardware.franky_sim_server import SimServer
from hardware.robot import RobotConnectionError, RobotError, RobotReflexError

franky = pytest.importorskip("franky")
FORWARD = np.array([0.5, 0, 0, 0, 0, 0, -1], dtype=np.float32)  # 1 cm per step


@pytest.fixture(scope="module")
def sim():
    with SimServer(host=None, realtime=False) as server:
        yield server


def faulty(sim, faults) -> FaultInjectingRobot:
    robot = FaultInjectingRobot(FrankyConfig(host=sim.host, realtime_config="ignore", use_gripper=False), faults=faults)
    robot.connect()
    robot.move_home()  # from home FORWARD moves the arm every step (at the box face it would hold, issuing nothing)
    return robot


def test_reflex_raised_latched_and_recovered_with_log(sim, caplog):
    robot = faulty(sim, {2: "reflex"})
    try:
        robot.send_action(FORWARD)
        robot.send_action(FORWARD)
        with pytest.raises(RobotReflexError) as err:
            robot.send_action(FORWARD)
        assert err.value.reflexes == ("cartesian_reflex",)
        assert isinstance(err.value.__cause__, franky.ControlException)
        state = robot.get_state()
        assert state.mode == "Reflex" and not state.ok
        # Latched: refused before any motion is issued.
        with pytest.raises(RobotReflexError, match="recover"):
            robot.send_action(FORWARD)
        assert robot.step == 3
        assert robot.recover() is True
        assert "recovering from ('cartesian_reflex',)" in caplog.text and "recovery succeeded" in caplog.text
        p = robot.get_state().eef_pos
        cmd = robot.send_action(FORWARD)  # resumes from the measured pose, not a stale target
        np.testing.assert_allclose(cmd.target_pos, p + [0.01, 0, 0], atol=1e-9)
        assert {k: n for k, n in robot.events.items() if n} == {"reflexes": 1, "recoveries": 1}
        assert robot.reflex_counts == {"cartesian_reflex": 1}
    finally:
        robot.close()


def test_recover_once_then_stop(sim):
    """The deployment policy: a reflex is recovered once; the second one stops the run."""
    robot = faulty(sim, {2: "reflex", 5: "reflex"})
    recoveries, stopped_at = 0, None
    try:
        for step in range(10):
            try:
                robot.send_action(FORWARD)
            except RobotReflexError:
                if recoveries == 0 and robot.recover():
                    recoveries += 1
                    continue
                robot.stop()
                stopped_at = step
                break
            time.sleep(0.05)
        assert stopped_at is not None and recoveries == 1
        assert robot.events["reflexes"] == 2 and robot.latched_reflex == ("cartesian_reflex",)
        p = robot.get_state().eef_pos
        time.sleep(0.3)
        np.testing.assert_allclose(robot.get_state().eef_pos, p, atol=1e-3)  # the arm stays stopped
    finally:
        robot.close()


def test_silent_latched_reflex_still_refuses(sim):
    robot = faulty(sim, {1: "silent_reflex"})
    try:
        robot.send_action(FORWARD)
        with pytest.raises(RobotReflexError):
            robot.send_action(FORWARD)
        assert robot.get_state().ok  # the controller reads Idle with no error...
        with pytest.raises(RobotReflexError):  # ...but the backend's latch holds
            robot.send_action(FORWARD)
        assert robot.recover()
        assert robot.send_action(FORWARD).sent
    finally:
        robot.close()


def test_reflex_of_running_motion_surfaces_at_next_command(sim):
    robot = faulty(sim, {1: "async_reflex"})
    try:
        robot.send_action(FORWARD)
        robot.send_action(FORWARD)  # accepted; the motion dies afterwards
        with pytest.raises(RobotReflexError, match="motion check"):
            robot.send_action(FORWARD)
        assert robot.recover()
    finally:
        robot.close()


def test_recovery_failure_reported(sim):
    robot = faulty(sim, {0: "recover_fails", 1: "reflex"})
    try:
        robot.send_action(FORWARD)
        with pytest.raises(RobotReflexError):
            robot.send_action(FORWARD)
        assert robot.recover() is False and robot.latched_reflex is not None
        assert robot.events["failed_recoveries"] == 1
        assert robot.recover() is True
    finally:
        robot.close()


def test_injected_network_fault_is_a_connection_error(sim):
    robot = faulty(sim, {1: "network"})
    try:
        robot.send_action(FORWARD)
        with pytest.raises(RobotConnectionError) as err:
            robot.send_action(FORWARD)
        assert isinstance(err.value.__cause__, franky.NetworkException)
        assert not robot.is_connected
        with pytest.raises(RobotConnectionError, match="lost"):
            robot.get_state()
    finally:
        robot.close()


def test_unknown_fault_rejected():
    with pytest.raises(ValueError, match="unknown faults"):
        FaultInjectingRobot(FrankyConfig(), faults={0: "meteor"})


def test_fault_backend_from_config(sim):
    from omegaconf import OmegaConf

    from hardware import build_robot

    cfg = OmegaConf.create({"backend": "franky_faults", "host": sim.host, "realtime_config": "ignore",
                            "use_gripper": False, "faults": {1: "reflex"}})
    robot = build_robot(cfg)
    assert isinstance(robot, FaultInjectingRobot) and robot.faults == {1: "reflex"}
    robot.connect()
    try:
        robot.send_action(FORWARD)
        with pytest.raises(RobotReflexError):
            robot.send_action(FORWARD)
    finally:
        robot.close()


def test_planner_failures_are_replanned_then_a_clear_robot_error(sim, caplog):
    # Motions 1-3 are accepted and then fail in the planner. The first two failures are re-planned
    # from the measured pose (max_planner_retries=2, logged and counted); the third in a row raises.
    robot = faulty(sim, {1: "planner", 2: "planner", 3: "planner"})
    try:
        robot.send_action(FORWARD)
        robot.send_action(FORWARD)  # motion 1: fails in the planner afterwards
        p = robot.get_state().eef_pos
        cmd = robot.send_action(FORWARD)  # sees failure 1: re-planned from the measured pose
        np.testing.assert_allclose(cmd.target_pos, p + [0.01, 0, 0], atol=2e-3)
        robot.send_action(FORWARD)  # sees failure 2: re-planned
        assert robot.events["planner_errors"] == 2 and "tolerated up to 2" in caplog.text
        with pytest.raises(RobotError, match=r"motion planner rejected the target \(Ruckig error -100: invalid input") as err:
            robot.send_action(FORWARD)  # failure 3 in a row
        assert not isinstance(err.value, RobotReflexError) and robot.latched_reflex is None
        assert isinstance(err.value.__cause__, RuntimeError)
        p = robot.get_state().eef_pos
        cmd = robot.send_action(FORWARD)  # no recover() needed; the reference was re-anchored
        np.testing.assert_allclose(cmd.target_pos, p + [0.01, 0, 0], atol=2e-3)
        robot.send_action(FORWARD)  # a success resets the streak
        assert robot._planner_streak == 0
    finally:
        robot.close()
