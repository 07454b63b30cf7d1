"""FrankyRobot.connect against peers that never answer, Ctrl-C while connecting, and homing
right after streamed actions (franky cannot switch a running Cartesian motion to a joint motion)."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("franky")

from hardware.franky_robot import FrankyConfig, FrankyRobot  # noqa: E402
from hardware.franky_sim_server import LIBFRANKA_PORT, SimServer, free_loopback_host  # noqa: E402
from hardware.robot import RobotConnectionError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HOME_Q = np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398])


def make_robot(host: str, **kw) -> FrankyRobot:
    return FrankyRobot(FrankyConfig(**{"host": host, "realtime_config": "ignore", "connect_timeout_s": 2.0, **kw}))


@pytest.fixture
def silent_peer():
    """A TCP server on the libfranka port that accepts connections and never says a word."""
    host = free_loopback_host()
    with socket.socket() as srv:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, LIBFRANKA_PORT))
        srv.listen(8)
        yield host


def test_connect_to_a_peer_that_never_answers_fails_fast(silent_peer):
    robot = make_robot(silent_peer, use_gripper=False)
    t = time.monotonic()
    with pytest.raises(RobotConnectionError, match=f"{silent_peer}: no libfranka handshake within 2.0 s"):
        robot.connect()
    assert time.monotonic() - t < 5
    assert not robot.is_connected


def test_second_client_is_refused_and_the_first_keeps_working():
    with SimServer(host=None, realtime=False) as sim:
        with make_robot(sim.host, use_gripper=False) as first:
            t = time.monotonic()
            with pytest.raises(RobotConnectionError, match="another client"):
                make_robot(sim.host, use_gripper=False).connect()
            assert time.monotonic() - t < 5
            first.move_home()
            first.wait(0.3)  # the simulated servos settle
            np.testing.assert_allclose(first.get_state().joint_pos, HOME_Q, atol=0.01)
        # The abandoned attempt connects once the first client leaves and lets go at once.
        with make_robot(sim.host, use_gripper=False, connect_timeout_s=10.0) as again:
            assert again.get_state().ok


def test_ctrl_c_while_connecting(silent_peer):
    code = ("from hardware.franky_robot import FrankyConfig, FrankyRobot; print('connecting', flush=True); "
            f"FrankyRobot(FrankyConfig(host={silent_peer!r}, realtime_config='ignore', connect_timeout_s=120.0, "
            "use_gripper=False)).connect()")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "connecting"
    time.sleep(1.0)
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t < 5, "Ctrl-C did not interrupt connect()"
    assert "KeyboardInterrupt" in err


def test_move_home_right_after_streaming():
    with SimServer(host=None, realtime=False) as sim, make_robot(sim.host) as robot:
        robot.move_home()
        for _ in range(6):
            robot.send_action(np.array([0.4, 0.3, -0.3, 0, 0, 0.3, 1.0], np.float32))
            time.sleep(0.1)
        assert robot.get_state().motion_active  # the streamed motion still runs
        robot.move_home()
        robot.wait(0.3)
        s = robot.get_state()
        np.testing.assert_allclose(s.joint_pos, HOME_Q, atol=0.01)
        assert s.gripper_width > 0.07
