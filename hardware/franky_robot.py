"""Franka FR3/Panda backend on franky (libfranka): asynchronous Cartesian motions, checked and safe.

- Every step's target goes through the `SafetyFilter`, then the `TargetTracker` turns it into an
  asynchronous `CartesianWaypointMotion` that replaces the running one mid-flight, so the policy
  loop never waits for a motion (`send_action` costs ~2 ms: one state read + one `move`).
- Before each motion the previous motion's outcome (`poll_motion`), the robot mode and the
  current errors are checked. A reflex is *latched* here: once seen, every command is refused
  until `recover()` is called, because after a reflex the controller can report mode Idle with
  no current error (the errors move to `last_motion_errors`), which must not read as "fine".
- franky exceptions become `RobotReflexError` / `RobotConnectionError` / `RobotError`, with the
  franky exception as `__cause__`. Recovery is explicit and logged.

franky names are imported explicitly: `from franky import *` would shadow the builtin Exception.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from franky import (
    Affine,
    CartesianState,
    CartesianWaypoint,
    CartesianWaypointMotion,
    CommandException,
    ControlException,
    Duration,
    Errors,
    Gripper,
    GripperException,
    InvalidOperationException,
    JointMotion,
    NetworkException,
    RealtimeConfig,
    ReferenceType,
    RobotPose,
    Twist,
)
from franky import Robot as _FrankyRobot

from hardware.robot import Robot, RobotConfig, RobotConnectionError, RobotError, RobotReflexError, RobotState
from hardware.safety import SafetyConfig, SentCommand
from hardware.tracking import TargetTracker, TrackingConfig, TrackPlan

log = logging.getLogger(__name__)

ERROR_NAMES = tuple(n for n in dir(Errors) if not n.startswith("_") and isinstance(getattr(Errors, n), property))
FAULT_MODES = ("Reflex", "UserStopped", "Other")


@dataclass
class FrankyConfig(RobotConfig):
    """conf/robot/franky*.yaml. realtime_config: "enforce" on a real robot (needs a PREEMPT_RT
    kernel), "ignore" for franky-sim; collision thresholds [Nm], [N] are the controller's reflexes."""

    realtime_config: str = "enforce"
    torque_threshold: float = 20.0
    force_threshold: float = 30.0
    use_gripper: bool = True
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.realtime_config not in ("enforce", "ignore"):
            raise ValueError(f"realtime_config must be 'enforce' or 'ignore', got {self.realtime_config!r}")
        if len(self.home_joints) != 7:
            raise ValueError(f"home_joints needs 7 values, got {len(self.home_joints)}")


def error_names(errors: Errors) -> tuple[str, ...]:
    """Names of the flags set in a libfranka `Errors` (e.g. ("cartesian_reflex",))."""
    return tuple(n for n in ERROR_NAMES if getattr(errors, n))


def _cap(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v


def _xyzw(quat_wxyz: np.ndarray) -> np.ndarray:
    return np.array([quat_wxyz[1], quat_wxyz[2], quat_wxyz[3], quat_wxyz[0]], dtype=np.float64)


def _wxyz(quat_xyzw: np.ndarray) -> np.ndarray:
    q = np.asarray(quat_xyzw, dtype=np.float64)
    q = np.array([q[3], q[0], q[1], q[2]])
    return -q if q[0] < 0 else q


class FrankyRobot(Robot):
    """A Franka arm + hand through franky. Connect with `connect()` or `with FrankyRobot(...)`."""

    config: FrankyConfig

    def __init__(self, config: FrankyConfig, safety: SafetyConfig | None = None) -> None:
        super().__init__(config, safety)
        lo = np.asarray(self.safety.config.workspace_min, dtype=np.float64)
        hi = np.asarray(self.safety.config.workspace_max, dtype=np.float64)
        self.tracker = TargetTracker(config.tracking, 1.0 / config.control_hz, bounds=(lo, hi))
        self._robot: _FrankyRobot | None = None
        self._gripper: Gripper | None = None
        self._gripper_future = None  # the in-flight gripper command's future, kept alive until the next one
        self._latched: tuple[str, ...] | None = None  # reflex names, set until recover()
        self._max_lin_vel = self._max_ang_vel = 0.0  # m/s, rad/s; read from the robot at connect
        self._lost = False
        self.events: dict[str, int] = {"reflexes": 0, "recoveries": 0, "failed_recoveries": 0, "planner_busy": 0}
        self.reflex_counts: dict[str, int] = {}

    # ------------------------------------------------------------------ connection
    def connect(self) -> None:
        cfg = self.config
        rt = RealtimeConfig.Enforce if cfg.realtime_config == "enforce" else RealtimeConfig.Ignore
        # The controller serves one client. A closed franky Robot kept alive only by a reference
        # cycle (an exception traceback holding a frame that holds it) still owns the connection
        # and makes this connect hang: collect such cycles first.
        gc.collect()
        with self._translate("connect"):
            try:
                self._robot = _FrankyRobot(cfg.host, realtime_config=rt)
            except (NetworkException, ConnectionError, OSError) as e:
                raise RobotConnectionError(f"cannot connect to the robot at {cfg.host}: {e}") from e
            self._robot.set_collision_behavior(cfg.torque_threshold, cfg.force_threshold)
            if cfg.use_gripper:
                self._gripper = Gripper(cfg.host)
        self._lost = False
        # Waypoint velocities above the planner's (scaled) limits make it fail with error -100.
        scale = 0.9 * cfg.tracking.relative_dynamics_factor
        self._max_lin_vel = scale * float(self._robot.translation_velocity_limit.get())
        self._max_ang_vel = scale * float(self._robot.rotation_velocity_limit.get())
        state = self.get_state()
        if not state.ok:
            self._latch(state.errors or (state.mode,))
            log.warning("robot at %s connected in mode %s with errors %s: call recover()", cfg.host, state.mode, state.errors)
        self.clear_queue()
        log.info("connected to robot at %s (mode %s)", cfg.host, state.mode)

    def close(self) -> None:
        # franky closes the connection when its objects are destroyed. Destroying a Robot whose
        # motion thread still holds an exception (e.g. after the controller vanished) crashed
        # the process in our tests: join it first and drop what it raises.
        if self._robot is not None:
            with contextlib.suppress(ControlException, NetworkException, CommandException, InvalidOperationException, RuntimeError):
                self._robot.join_motion(timeout=3.0)
        self._robot = None
        self._gripper = None
        self._gripper_future = None

    @property
    def is_connected(self) -> bool:
        return self._robot is not None and not self._lost

    # ------------------------------------------------------------------ state
    def get_state(self) -> RobotState:
        robot = self._require()
        with self._translate("read state"):
            s = robot.state
            t_host = time.monotonic()
            twist = s.O_dP_EE_est
            if twist is None:
                twist = robot.current_cartesian_velocity.end_effector_twist
            width = self._gripper.width if self._gripper is not None else 0.0
        pose = s.O_T_EE
        return RobotState(
            joint_pos=np.asarray(s.q, dtype=np.float64).copy(),
            joint_vel=np.asarray(s.dq, dtype=np.float64).copy(),
            eef_pos=np.asarray(pose.translation, dtype=np.float64).copy(),
            eef_quat=_wxyz(pose.quaternion),
            eef_vel=np.concatenate([twist.linear, twist.angular]).astype(np.float64),
            gripper_width=float(width),
            t_device=float(s.time.to_sec()),
            t_host=t_host,
            mode=s.robot_mode.name,
            errors=error_names(s.current_errors),
            motion_active=bool(robot.is_in_control),
        )

    # ------------------------------------------------------------------ motion
    def send_action(self, action: np.ndarray) -> SentCommand:
        state = self._check_ready()
        cmd = self.safety.filter_action(action, state.eef_pos)
        self._execute(cmd, state.t_device)
        return cmd

    def send_target(self, pos: np.ndarray, quat: np.ndarray, gripper: float | None = None) -> SentCommand:
        state = self._check_ready()
        cmd = self.safety.filter_target(pos, quat, gripper, state.eef_pos)
        self._execute(cmd, state.t_device)
        return cmd

    def move_home(self, timeout_s: float | None = None) -> None:
        cfg = self.config
        timeout_s = cfg.motion_timeout_s if timeout_s is None else timeout_s
        self._check_ready()
        robot = self._require()
        motion = JointMotion(np.asarray(cfg.home_joints, dtype=np.float64), relative_dynamics_factor=cfg.home_speed)
        with self._translate("move home"):
            robot.move(motion, asynchronous=True)
            finished = robot.join_motion(timeout=timeout_s)
        if not finished:
            self.stop()
            raise RobotError(f"home motion did not finish within {timeout_s} s; stopped")
        if self._gripper is not None:
            self.open_gripper(wait=True)
        self.clear_queue()

    def _execute(self, cmd: SentCommand, t_device: float | None) -> None:
        if not cmd.sent:
            return
        self._move(self._to_motion(self.tracker.plan(cmd.target_pos, cmd.target_quat, t_device)))
        if self._gripper is None:  # use_gripper=false: the action's gripper part is ignored
            return
        if cmd.gripper == "close":
            self.grasp(wait=False)
        elif cmd.gripper == "open":
            self.open_gripper(wait=False)

    def _to_motion(self, plan: TrackPlan) -> CartesianWaypointMotion:
        waypoints = []
        for w in plan.waypoints:
            pose = RobotPose(Affine(w.pos, _xyzw(w.quat)))
            lin, ang = _cap(w.lin_vel, self._max_lin_vel), _cap(w.ang_vel, self._max_ang_vel)
            target = CartesianState(pose, Twist(lin, ang)) if np.any(lin) or np.any(ang) else pose
            min_time = None if w.min_time_s is None else Duration(int(round(w.min_time_s * 1000)))
            waypoints.append(CartesianWaypoint(target, ReferenceType.Absolute, minimum_time=min_time))
        return CartesianWaypointMotion(waypoints, relative_dynamics_factor=self.config.tracking.relative_dynamics_factor)

    def _move(self, motion: object) -> None:
        """Issue an asynchronous motion; it takes over from the running one seamlessly."""
        robot = self._require()
        try:
            with self._translate("move"):
                self._issue(robot, motion)
        except RobotError as e:
            # The planner was still busy with the previous target (libfranka -101): skip this
            # step rather than fail; the next target supersedes it anyway.
            if "-101" in str(e.__cause__) and not isinstance(e, RobotReflexError):
                self.events["planner_busy"] += 1
                log.debug("planner busy, target skipped: %s", e.__cause__)
                return
            raise

    # ------------------------------------------------------------------ gripper
    def open_gripper(self, wait: bool = True) -> None:
        gripper = self._require_gripper()
        cfg = self.config
        with self._translate("open gripper"):
            fut = gripper.move_async(cfg.gripper_open_width, cfg.gripper_speed)
            self._gripper_future = fut
            if wait and not fut.wait(timeout=cfg.motion_timeout_s):
                raise RobotError(f"gripper did not open within {cfg.motion_timeout_s} s")
        self.safety.gripper_closed = False

    def grasp(self, force: float | None = None, wait: bool = True) -> bool:
        gripper = self._require_gripper()
        cfg = self.config
        force = cfg.grasp_force if force is None else force
        with self._translate("grasp"):
            fut = gripper.grasp_async(0.0, cfg.gripper_speed, force, epsilon_inner=0.0, epsilon_outer=cfg.gripper_epsilon)
            self._gripper_future = fut
            self.safety.gripper_closed = True
            if not wait:
                return False
            if not fut.wait(timeout=cfg.motion_timeout_s):
                raise RobotError(f"grasp did not finish within {cfg.motion_timeout_s} s")
            # With a wide epsilon libfranka also reports success on an empty hand: check the width.
            return bool(fut.get()) and gripper.width > cfg.gripper_empty_width

    # ------------------------------------------------------------------ errors
    def recover(self) -> bool:
        robot = self._require()
        log.warning("recovering from %s", self._latched or "an error state")
        self._drain(robot)
        with self._translate("recover"):
            ok = bool(self._recover_controller(robot))
        state = self.get_state()
        ok = ok and state.ok
        if ok:
            self._latched = None
            self.events["recoveries"] += 1
            self.clear_queue()
            log.warning("recovery succeeded (mode %s)", state.mode)
        else:
            self.events["failed_recoveries"] += 1
            log.error("recovery failed: mode %s, errors %s", state.mode, state.errors)
        return ok

    def stop(self) -> None:
        robot = self._require()
        with contextlib.suppress(ControlException, CommandException, InvalidOperationException):
            robot.stop()
        self._drain(robot)
        self.clear_queue()

    def clear_queue(self) -> None:
        state = self.get_state()
        self.safety.reset(state.eef_pos, state.eef_quat, gripper_closed=self.safety.gripper_closed)
        self.tracker.reset(state.eef_pos, state.eef_quat)

    @property
    def latched_reflex(self) -> tuple[str, ...] | None:
        return self._latched

    # ------------------------------------------------------------------ internals (hooks for faults.py)
    def _check_ready(self) -> RobotState:
        """Raise if the last motion failed, a reflex is latched or the mode/errors say stop."""
        robot = self._require()
        latched_before = self._latched is not None
        try:
            with self._translate("motion check"):
                self._poll_motion(robot)
        except RobotError:
            if not latched_before:
                raise
            # Already latched: how the old motion ended (e.g. its preemption) is not news; the
            # latched reflex is refused below.
        state = self.get_state()
        mode, errors = state.mode, state.errors
        if mode in FAULT_MODES or errors:
            self._latch(errors or (mode,))
        if self._latched is not None:
            raise RobotReflexError(
                f"robot stopped by reflex {list(self._latched)} (mode {mode}); call recover() before moving",
                self._latched,
            )
        return state

    @staticmethod
    def _drain(robot: _FrankyRobot) -> None:
        """Wait for a stopped motion to end and drop the exception it leaves (its preemption or the
        reflex already latched), so that it does not surface at the next command."""
        with contextlib.suppress(ControlException, CommandException, InvalidOperationException):
            robot.join_motion(timeout=2.0)

    def _poll_motion(self, robot: _FrankyRobot) -> None:
        robot.poll_motion()  # re-raises what ended the previous asynchronous motion

    def _issue(self, robot: _FrankyRobot, motion: object) -> None:
        robot.move(motion, asynchronous=True)

    def _recover_controller(self, robot: _FrankyRobot) -> bool:
        return robot.recover_from_errors()

    def _latch(self, names: tuple[str, ...]) -> None:
        if self._latched is None:
            self.events["reflexes"] += 1
            for n in names:
                self.reflex_counts[n] = self.reflex_counts.get(n, 0) + 1
            log.error("reflex latched: %s", list(names))
        self._latched = tuple(names)

    def _reflex_names(self, exc: BaseException) -> tuple[str, ...]:
        """Error flags of the motion a ControlException ended (from the controller), else from the message."""
        try:
            names = error_names(self._robot.state.last_motion_errors) if self._robot is not None else ()
        except Exception:  # the state may be unreadable right after a fault
            names = ()
        if names:
            return names
        text = str(exc)
        found = tuple(n for n in ERROR_NAMES if n in text)
        return found or ("control_exception",)

    @contextlib.contextmanager
    def _translate(self, what: str) -> Iterator[None]:
        """Turn franky exceptions into the interface's error types (franky's kept as __cause__)."""
        try:
            yield
        except RobotError:
            raise
        except NetworkException as e:
            self._lost = True
            raise RobotConnectionError(f"{what}: connection to the robot lost: {e}") from e
        except ControlException as e:
            if "preempted" in str(e).lower() or "-101" in str(e):
                # Our own stop() or a busy planner, not a reflex: nothing to latch.
                raise RobotError(f"{what}: {e}") from e
            names = self._reflex_names(e)
            self._latch(names)
            raise RobotReflexError(f"{what}: robot stopped by reflex {list(names)}: {e}", names) from e
        except (CommandException, InvalidOperationException, GripperException) as e:
            raise RobotError(f"{what}: {type(e).__name__}: {e}") from e
        except RuntimeError as e:  # franky reports planner failures ("error code -100") this way
            raise RobotError(f"{what}: {e}") from e

    def _require(self) -> _FrankyRobot:
        if self._robot is None:
            raise RobotConnectionError("robot is not connected: call connect() first")
        if self._lost:
            raise RobotConnectionError("connection to the robot was lost; reconnect")
        return self._robot

    def _require_gripper(self) -> Gripper:
        self._require()
        if self._gripper is None:
            raise RobotError("this robot has no gripper (use_gripper=false)")
        return self._gripper
