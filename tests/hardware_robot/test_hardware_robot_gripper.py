"""The gripper child process against franky-sim (in its own process): commands, coalescing, faults.

Every fault here used to hang or crash the caller when the gripper ran in-process: a dead child,
a hung child (SIGSTOP: as if stuck inside a GIL-holding franky call) and a controller killed
mid-grasp must each end in a clear RobotConnectionError within a bounded time.
"""

import os
import signal
import time

import pytest

from hardware.franky_sim_server import SimServerProcess, free_loopback_host
from hardware.gripper_process import GripperProcess
from hardware.robot import RobotConnectionError

pytest.importorskip("franky")
OPEN = {"width": 0.08, "speed": 0.1}
GRASP = {"width": 0.0, "speed": 0.1, "force": 20.0, "epsilon_inner": 0.0, "epsilon_outer": 0.08}


@pytest.fixture(scope="module")
def sim():
    with SimServerProcess(host=None, realtime=True) as proc:
        yield proc


@pytest.fixture
def gripper(sim):
    g = GripperProcess(sim.host, timeout_s=5.0, stall_s=1.0).start()
    yield g
    g.close(timeout_s=2.0)


def test_commands_run_one_at_a_time_newest_wins(gripper):
    t = gripper.submit("grasp", **GRASP)
    assert t.wait(5.0) and not t.error
    assert t.width < 0.01 and gripper.width < 0.01  # empty hand closes fully
    first = gripper.submit("open", **OPEN)
    t0 = time.monotonic()
    middle = [gripper.submit(k, **(GRASP if k == "grasp" else OPEN)) for k in ("grasp", "open", "grasp")]
    newest = gripper.submit("open", **OPEN)
    assert time.monotonic() - t0 < 0.05  # submitting never waits for the hand
    assert newest.wait(8.0) and not newest.error and newest.width > 0.07
    older = [first, *middle]
    assert all(o.done.is_set() for o in older)
    assert all(not o.error or "superseded" in o.error for o in older)  # ran, or was dropped for a newer one
    assert sum("superseded" in o.error for o in older) >= 2  # waiting commands were coalesced
    assert gripper.counts["coalesced"] >= 2 and gripper.pop_error() is None
    assert not gripper.busy


def test_ctrl_c_in_the_terminal_leaves_the_gripper_to_the_parent(gripper):
    # SIGINT reaches the whole process group; the parent's Ctrl-C handling homes the arm and opens
    # the gripper afterwards, so the child must still be serving.
    os.kill(gripper.pid, signal.SIGINT)
    time.sleep(0.3)
    t = gripper.submit("open", **OPEN)
    assert t.wait(5.0) and not t.error


def test_no_gripper_server_is_a_clear_connection_error():
    host = free_loopback_host(first=100, last=127)  # nothing listens there
    t = time.monotonic()
    with pytest.raises(RobotConnectionError, match=f"cannot connect to the gripper at {host}"):
        GripperProcess(host, start_timeout_s=15.0).start()
    assert time.monotonic() - t < 15.0


def test_killed_child_fails_open_and_new_commands(gripper):
    running = gripper.submit("grasp", **GRASP)
    os.kill(gripper.pid, signal.SIGKILL)
    assert running.wait(3.0) and "exited" in running.error
    with pytest.raises(RobotConnectionError, match="gripper process (exited|is gone)"):
        gripper.submit("open", **OPEN)


def test_hung_child_is_detected_and_killed_on_close(gripper):
    os.kill(gripper.pid, signal.SIGSTOP)
    time.sleep(1.3)  # > stall_s without a report
    with pytest.raises(RobotConnectionError, match="silent for"):
        gripper.submit("open", **OPEN)
    t = time.monotonic()
    assert gripper.close(timeout_s=0.5) is False  # had to be killed
    assert time.monotonic() - t < 5.0


def test_controller_killed_mid_grasp_never_blocks_the_caller():
    with SimServerProcess(host=None, realtime=True) as proc:
        g = GripperProcess(proc.host, timeout_s=3.0, stall_s=1.0).start()
        try:
            t = g.submit("grasp", **{**GRASP, "speed": 0.02})  # slow: still running when the link dies
            time.sleep(0.2)
            proc.kill()
            t0 = time.monotonic()
            assert t.wait(8.0), "the grasp's ticket never ended"
            assert t.error  # failed, timed out or the child exited: reported, not hidden
            assert time.monotonic() - t0 < 8.0
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:  # the next command is refused (child gone or silent)...
                try:
                    g.submit("open", **OPEN).wait(1.0)
                except RobotConnectionError:
                    break
                time.sleep(0.2)
            else:  # ...or, if the child still answers, its commands fail
                assert g.pop_error() is not None
        finally:
            t0 = time.monotonic()
            g.close(timeout_s=1.0)
            assert time.monotonic() - t0 < 6.0
