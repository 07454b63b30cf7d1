"""The robot interface the deployment runner, teleoperation and replay code against.

A `Robot` is a Franka-like arm with a parallel gripper, driven in Cartesian space at the control
rate by 7-D actions in [-1, 1] that mean what they mean in simulation (`toto_robot.action`,
`config.action`): the end-effector target moves by [0:3] x max_translation m and turns by [3:6] x
max_rotation rad (axis-angle, base frame) from the previous target; [6] > 0 closes the gripper.

Every command leaves the process through `send_action` / `send_target`, which pass it through the
backend's `SafetyFilter` and return the `SentCommand` actually sent (record that one, not the
policy's raw output). Motions are asynchronous: `send_action` returns within milliseconds.

Errors from the backend reach callers as the exception types below, with the backend's own
exception (a franky `ControlException`, ...) kept as `__cause__`:

- `RobotReflexError`: the arm stopped on a reflex (collision, joint limit, discontinuity...);
  call `recover()` once; the runner stops if it happens again.
- `RobotConnectionError`: the link to the controller is gone; stop cleanly, do not retry.
- `RobotError`: anything else (command refused by the controller, motion timeout).
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hardware.safety import SafetyConfig, SafetyFilter, SentCommand
from toto_robot.action import ActionConvention
from toto_robot.rotations import quat_canonical
from toto_robot.scene import HAND_OPEN_WIDTH
from toto_robot.spec import EEF_QUAT_REFERENCE


class RobotError(RuntimeError):
    """The robot refused or failed a command; see `__cause__` for the backend's exception."""


class RobotReflexError(RobotError):
    """The controller stopped the arm on a reflex; `reflexes` names them (e.g. "cartesian_reflex")."""

    def __init__(self, message: str, reflexes: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.reflexes = reflexes


class RobotLimitError(RobotError):
    """The arm is at a joint limit: it was stopped, and only `move_home` moves it again."""


class RobotConnectionError(RobotError):
    """The connection to the robot controller is lost or could not be made."""


@dataclass(frozen=True)
class RobotState:
    """One state sample. Positions in the robot base frame.

    joint_pos: (7,) rad; joint_vel: (7,) rad/s; eef_pos: (3,) m; eef_quat: (4,) w-x-y-z;
    eef_vel: (6,) [linear m/s, angular rad/s] base frame; gripper_width: m (finger distance).
    t_device: the controller's own clock [s] (None if the backend has none);
    t_host: time.monotonic() when the sample was received [s].
    mode: backend's robot mode name ("Idle", "Move", "Reflex", "UserStopped", ...);
    errors: names of the errors the controller currently reports (empty when fine);
    motion_active: a motion is executing.
    """

    joint_pos: np.ndarray
    joint_vel: np.ndarray
    eef_pos: np.ndarray
    eef_quat: np.ndarray
    eef_vel: np.ndarray
    gripper_width: float
    t_device: float | None
    t_host: float
    mode: str = "Idle"
    errors: tuple[str, ...] = ()
    motion_active: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and self.mode not in ("Reflex", "UserStopped", "Other")

    def as_obs(self) -> dict[str, np.ndarray]:
        """The low-dim observation keys of toto_robot's shape meta, float32."""
        return {
            "eef_pos": np.asarray(self.eef_pos, dtype=np.float32),
            # Sign in the hemisphere of the pointing-down home orientation, as in sim: continuous.
            "eef_quat": quat_canonical(self.eef_quat, EEF_QUAT_REFERENCE).astype(np.float32),
            "gripper_width": np.array([self.gripper_width], dtype=np.float32),
            "joint_pos": np.asarray(self.joint_pos, dtype=np.float32),
        }


@dataclass
class RobotConfig:
    """Backend-independent settings (conf/robot/*.yaml). Units: m, rad, s, N.

    `action` is the shared action convention (conf/action/default.yaml: control rate, scales);
    the safety limits live in `SafetyConfig`. `home_joints` is the FR3/Panda ready pose.
    """

    backend: str = "franky"
    host: str = "172.16.0.2"
    action: ActionConvention = field(default_factory=ActionConvention)
    home_joints: list[float] = field(
        default_factory=lambda: [0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398]
    )
    home_speed: float = 0.15  # fraction of the joint velocity/acceleration/jerk limits
    motion_timeout_s: float = 20.0  # [s] of the controller's clock (franky-sim's runs slow on a loaded machine)
    gripper_speed: float = 0.05  # m/s
    grasp_force: float = 20.0  # N
    gripper_open_width: float = HAND_OPEN_WIDTH  # m
    gripper_epsilon: float = HAND_OPEN_WIDTH  # m; grasp succeeds for any object width in [0, open width]
    gripper_empty_width: float = 0.004  # m; closing to below this means nothing was grasped

    @property
    def control_hz(self) -> float:
        return self.action.control_hz


class Robot(abc.ABC):
    """A Cartesian-controlled arm + gripper. Use as a context manager: exit stops and closes."""

    config: RobotConfig
    safety: SafetyFilter

    def __init__(self, config: RobotConfig, safety: SafetyConfig | None = None) -> None:
        self.config = config
        self.events: dict[str, int] = {}  # backend incidents by name (e.g. planner_errors), for rollout logs
        self.safety = SafetyFilter(safety or SafetyConfig(), config.action)

    # ------------------------------------------------------------------ connection
    @abc.abstractmethod
    def connect(self) -> None:
        """Open the connection (raises RobotConnectionError); reads the state once."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop any motion and release the connection. Safe to call twice."""

    @property
    @abc.abstractmethod
    def is_connected(self) -> bool: ...

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self.is_connected:
                self.stop()
        finally:
            self.close()

    # ------------------------------------------------------------------ state
    @abc.abstractmethod
    def get_state(self) -> RobotState:
        """Latest state; raises RobotConnectionError when the link is gone."""

    # ------------------------------------------------------------------ motion
    @abc.abstractmethod
    def move_home(self, timeout_s: float | None = None) -> None:
        """Blocking joint motion to `config.home_joints`, gripper opened; clears the command queue."""

    @abc.abstractmethod
    def move_joints(self, joints: list[float] | np.ndarray, timeout_s: float | None = None) -> None:
        """Blocking joint motion to `joints` (7,) [rad] (e.g. where a recorded episode started), at
        the homing speed; the gripper is left as it is; clears the command queue. RobotError for
        angles outside the joint limits (minus the stop margin)."""

    @abc.abstractmethod
    def send_action(self, action: np.ndarray) -> SentCommand:
        """Non-blocking: one (7,) action in [-1, 1] through the safety filter to the arm + gripper.

        Raises RobotReflexError / RobotConnectionError / RobotError when the controller reports
        one (checked before the motion is issued); a refused command returns `sent=False`.
        """

    @abc.abstractmethod
    def send_target(self, pos: np.ndarray, quat: np.ndarray, gripper: float | None = None) -> SentCommand:
        """Non-blocking absolute end-effector target (pos (3,) m, quat (4,) wxyz, base frame).

        Goes through the same safety filter as `send_action` (per-step limits relative to the
        current reference); `gripper` follows the action convention (> 0 close) or None.
        """

    # ------------------------------------------------------------------ gripper
    @abc.abstractmethod
    def open_gripper(self, wait: bool = True) -> None: ...

    @abc.abstractmethod
    def grasp(self, force: float | None = None, wait: bool = True) -> bool:
        """Close on an object with `force` N (config default); True when something is held."""

    # ------------------------------------------------------------------ errors
    @abc.abstractmethod
    def recover(self) -> bool:
        """Clear a reflex / error state (logged); True when the robot is usable again.

        Also clears the command queue, so no stale target is resumed.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop motion now (decelerating) and clear the command queue."""

    @abc.abstractmethod
    def clear_queue(self) -> None:
        """Drop pending targets and re-anchor the safety reference on the measured pose."""

    # ------------------------------------------------------------------ time
    def wait(self, seconds: float, stall_s: float = 10.0) -> None:
        """Block for `seconds` of the controller's clock (`RobotState.t_device`).

        On a real arm that clock runs with the wall clock; franky-sim's runs slower on a loaded
        machine (and faster with realtime=False), so a script or test that paces its commands on
        it moves the arm by the same amount per step whatever the load. Without a device clock
        this is `time.sleep`. RobotConnectionError if the clock stands still for `stall_s` [s].
        """
        t = self.get_state().t_device
        if t is None:
            time.sleep(seconds)
            return
        end, last, t_last = t + seconds, t, time.monotonic()
        while t < end:
            time.sleep(min(0.002, max(end - t, 0.0)))
            t = self.get_state().t_device
            if t > last:
                last, t_last = t, time.monotonic()
            elif time.monotonic() - t_last > stall_s:
                raise RobotConnectionError(f"the controller clock stood still for {stall_s} s at {t:.3f} s")
