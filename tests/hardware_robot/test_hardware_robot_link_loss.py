"""Losing the controller mid-motion: a clean connection error within seconds.

In its own module so that no in-process franky-sim server (the other modules' `sim` fixtures) is
alive: franky's blocking calls hold the GIL, so an in-process server could not answer and the test
would deadlock instead of exercising the link loss.
"""

import time

import numpy as np
import pytest

from hardware.faults import FaultInjectingRobot
from hardware.franky_robot import FrankyConfig
from hardware.franky_sim_server import SimServerProcess
from hardware.robot import RobotConnectionError

franky = pytest.importorskip("franky")
FORWARD = np.array([0.5, 0, 0, 0, 0, 0, -1], dtype=np.float32)  # 1 cm per step


def test_simulator_killed_mid_motion_gives_clean_error():
    with SimServerProcess(host=None, realtime=False) as proc:
        robot = FaultInjectingRobot(FrankyConfig(host=proc.host, realtime_config="ignore"))
        robot.connect()
        for _ in range(3):
            robot.send_action(FORWARD)
            time.sleep(0.05)
        proc.kill()
        t = time.monotonic()
        with pytest.raises(RobotConnectionError, match="connection to the robot lost"):
            for _ in range(50):
                robot.send_action(FORWARD)
                time.sleep(0.05)
        assert time.monotonic() - t < 5.0
        assert not robot.is_connected
        robot.close()
