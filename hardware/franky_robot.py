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
- The hand runs in a child process (`hardware.gripper_process`): franky's gripper calls can block
  while holding the GIL, which must never stall this process's control loop.

franky names are imported explicitly: `from franky import *` would shadow the builtin Exception.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import re
import threading
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

from hardware.gripper_process import GripperProcess, GripperTicket
from hardware.robot import Robot, RobotConfig, RobotConnectionError, RobotError, RobotLimitError, RobotReflexError, RobotState
from toto_robot.rotations import quat_angle
from hardware.safety import SafetyConfig, SentCommand
from hardware.tracking import TargetTracker, TrackingConfig, TrackPlan

log = logging.getLogger(__name__)

ERROR_NAMES = tuple(n for n in dir(Errors) if not n.startswith("_") and isinstance(getattr(Errors, n), property))
FAULT_MODES = ("Reflex", "UserStopped", "Other")
GRIPPER_CLOSE_TIMEOUT_S = 5.0  # close() waits this long for a running gripper command


@dataclass
class FrankyConfig(RobotConfig):
    """conf/robot/franky*.yaml. realtime_config: "enforce" on a real robot (needs a PREEMPT_RT
    kernel), "ignore" for franky-sim; collision thresholds [Nm], [N] are the controller's reflexes."""

    realtime_config: str = "enforce"
    connect_timeout_s: float = 5.0  # libfranka's handshake must finish within this (it waits forever itself)
    torque_threshold: float = 20.0
    force_threshold: float = 30.0
    use_gripper: bool = True
    # Joint limits [rad] (FR3; a Panda's are in conf/robot/franky_panda.yaml). A measured joint
    # closer than joint_limit_margin to one stops the arm (RobotLimitError) before the controller must.
    joint_lower: list[float] = field(default_factory=lambda: [-2.7437, -1.7837, -2.9007, -3.0421, -2.8065, 0.5445, -3.0159])
    joint_upper: list[float] = field(default_factory=lambda: [2.7437, 1.7837, 2.9007, -0.1518, 2.8065, 4.5169, 3.0159])
    joint_limit_margin: float = 0.1
    max_planner_retries: int = 2  # motion-planner failures in a row re-planned from the measured pose before raising
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self) -> None:
        if self.realtime_config not in ("enforce", "ignore"):
            raise ValueError(f"realtime_config must be 'enforce' or 'ignore', got {self.realtime_config!r}")
        if len(self.home_joints) != 7:
            raise ValueError(f"home_joints needs 7 values, got {len(self.home_joints)}")
        lo, hi, home = (np.asarray(v, dtype=np.float64) for v in (self.joint_lower, self.joint_upper, self.home_joints))
        if lo.shape != (7,) or hi.shape != (7,) or self.joint_limit_margin < 0:
            raise ValueError("joint_lower / joint_upper need 7 values each and joint_limit_margin >= 0")
        if not np.all((home > lo + self.joint_limit_margin) & (home < hi - self.joint_limit_margin)):
            raise ValueError(f"home_joints {self.home_joints} are not inside the joint limits minus joint_limit_margin")


# Ruckig's result codes, as franky's MotionPlannerException reports them.
PLANNER_ERRORS = {
    -100: "invalid input: a waypoint or its velocity is beyond the scaled velocity/acceleration limits",
    -101: "trajectory duration beyond numerical limits: the target cannot be reached from the current state",
    -102: "positional limits exceeded",
    -104: "zero limits",
    -110: "execution time calculation failed: the arm is not following the commanded state",
    -111: "synchronization calculation failed",
}


# A state read on a dead link raises a plain RuntimeError("Net Exception"), not NetworkException.
_NETWORK_FAILURE = re.compile(r"Net Exception|TCP (send|receive)|UDP receive|[Cc]onnection (reset|refused|closed)")


def _planner_code(message: str) -> int | None:
    """The Ruckig code in franky's "Motion planner failed with error code -100", else None."""
    m = re.search(r"[Mm]otion planner failed with error code (-?\d+)", message)
    return int(m.group(1)) if m else None


def error_names(errors: Errors) -> tuple[str, ...]:
    """Names of the flags set in a libfranka `Errors` (e.g. ("cartesian_reflex",))."""
    return tuple(n for n in ERROR_NAMES if getattr(errors, n))


def _open_robot(host: str, realtime_config: RealtimeConfig, timeout_s: float) -> _FrankyRobot:
    """franky's `Robot(host)`, given up after `timeout_s` [s] with a RobotConnectionError.

    libfranka waits without limit for the handshake answer, and a controller (or franky-sim)
    that already serves a client accepts the TCP connection and never answers. The constructor
    releases the GIL while it waits, so it runs on a daemon thread that this one can abandon
    (Ctrl-C works meanwhile); if it connects after all, it drops the robot, which closes the link.
    """
    lock, done = threading.Lock(), threading.Event()
    box: dict[str, object] = {}

    def construct() -> None:
        try:
            robot = _FrankyRobot(host, realtime_config=realtime_config)
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e
        else:
            with lock:
                if not box.get("abandoned"):
                    box["robot"] = robot
        done.set()

    threading.Thread(target=construct, name=f"franky-connect-{host}", daemon=True).start()
    try:
        done.wait(timeout_s)
    finally:
        with lock:
            box["abandoned"] = "robot" not in box and "error" not in box
    if "error" in box:
        raise box["error"]
    if "robot" not in box:
        raise RobotConnectionError(
            f"cannot connect to the robot at {host}: no libfranka handshake within {timeout_s} s. The controller "
            f"is probably serving another client (another script, or a crashed one that still holds it: stop it), "
            f"or {host} is not a Franka controller"
        )
    return box["robot"]


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
        self._gripper: GripperProcess | None = None  # the hand, served by a child process
        self._latched: tuple[str, ...] | None = None  # reflex names, set until recover()
        self._max_lin_vel = self._max_ang_vel = 0.0  # m/s, rad/s; read from the robot at connect
        self._lost = False
        self._planner_streak = 0  # motion-planner failures in a row
        self._last_plan: TrackPlan | None = None  # the last plan sent as a motion (until the queue is cleared)
        self.events.update(reflexes=0, recoveries=0, failed_recoveries=0, planner_busy=0, planner_errors=0, joint_limit_stops=0)
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
                self._robot = _open_robot(cfg.host, rt, cfg.connect_timeout_s)
            except (NetworkException, ConnectionError, OSError) as e:
                raise RobotConnectionError(f"cannot connect to the robot at {cfg.host}: {e}") from e
            self._robot.set_collision_behavior(cfg.torque_threshold, cfg.force_threshold)
            if cfg.use_gripper:
                self._gripper = GripperProcess(cfg.host, timeout_s=cfg.motion_timeout_s).start()
        self._lost = False
        # Waypoint velocities above the planner's limits, scaled by this motion's and the robot's
        # global dynamics factors, make it fail with error -100 (invalid input).
        scale = 0.9 * cfg.tracking.relative_dynamics_factor * float(self._robot.relative_dynamics_factor.velocity)
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
        if self._gripper is not None:
            # A grasp in flight may finish (bounded); then the child is stopped, killed if need be.
            self._gripper.close(timeout_s=GRIPPER_CLOSE_TIMEOUT_S)
        self._robot = None
        self._gripper = None

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
        state = self._check_joint_limits(self._check_ready())
        cmd = self.safety.filter_action(action, state.eef_pos)
        self._execute(cmd, state.t_device)
        return cmd

    def send_target(self, pos: np.ndarray, quat: np.ndarray, gripper: float | None = None) -> SentCommand:
        state = self._check_joint_limits(self._check_ready())
        cmd = self.safety.filter_target(pos, quat, gripper, state.eef_pos)
        self._execute(cmd, state.t_device)
        return cmd

    def move_home(self, timeout_s: float | None = None) -> None:
        self.move_joints(self.config.home_joints, timeout_s, what="home")
        if self._gripper is not None:
            self.open_gripper(wait=True)
        self.clear_queue()

    def move_joints(self, joints: list[float] | np.ndarray, timeout_s: float | None = None, what: str = "joint") -> None:
        cfg = self.config
        timeout_s = cfg.motion_timeout_s if timeout_s is None else timeout_s
        q = np.asarray(joints, dtype=np.float64)
        lo, hi = np.asarray(cfg.joint_lower), np.asarray(cfg.joint_upper)
        if q.shape != (7,) or not np.all(np.isfinite(q)) or np.any(q < lo + cfg.joint_limit_margin) or np.any(q > hi - cfg.joint_limit_margin):
            raise RobotError(f"joint target {np.round(q, 3).tolist()} is not 7 finite angles inside the joint limits minus {cfg.joint_limit_margin} rad")
        self._check_ready()
        robot = self._require()
        if robot.is_in_control:
            # A streamed Cartesian motion is still running, and franky cannot switch a running
            # motion to a joint motion (InvalidMotionTypeException): end it first.
            self.stop()
            if robot.is_in_control:
                raise RobotError(f"move {what}: the running motion did not end after stop(); call stop() and retry")
        motion = JointMotion(q, relative_dynamics_factor=cfg.home_speed)
        with self._translate(f"move {what}"):
            robot.move(motion, asynchronous=True)
            finished = self._join_motion(robot, timeout_s)
        if not finished:
            self.stop()
            raise RobotError(f"{what} motion did not finish within {timeout_s} s of the controller's clock; stopped")
        self.clear_queue()

    def _execute(self, cmd: SentCommand, t_device: float | None) -> None:
        if not cmd.sent:
            return
        plan = self.tracker.plan(cmd.target_pos, cmd.target_quat, t_device)
        if not self._holds_like_last(plan):
            self._move(self._to_motion(plan))
            self._last_plan = plan
        if self._gripper is None:  # use_gripper=false: the action's gripper part is ignored
            return
        if cmd.gripper == "close":
            self.grasp(wait=False)
        elif cmd.gripper == "open":
            self.open_gripper(wait=False)

    def _holds_like_last(self, plan: TrackPlan) -> bool:
        """`plan` holds the arm still where the last issued plan already holds it.

        Re-issuing it gives the planner a zero-length move, which Ruckig now and then fails
        (-111, synchronization); the running motion already does the job.
        """
        last = self._last_plan
        if last is None or len(last.waypoints) != len(plan.waypoints):
            return False
        for w, v in zip(plan.waypoints, last.waypoints):
            moving = max(np.abs(w.lin_vel).max(), np.abs(w.ang_vel).max(), np.abs(v.lin_vel).max(), np.abs(v.ang_vel).max())
            if moving > 1e-3 or np.abs(w.pos - v.pos).max() > 1e-6 or quat_angle(w.quat, v.quat) > 1e-6:
                return False
        return True

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
        cfg = self.config
        ticket = self._require_gripper().submit("open", width=cfg.gripper_open_width, speed=cfg.gripper_speed)
        self.safety.gripper_closed = False
        if wait:
            self._wait_gripper(ticket)

    def grasp(self, force: float | None = None, wait: bool = True) -> bool:
        cfg = self.config
        ticket = self._require_gripper().submit(
            "grasp", width=0.0, speed=cfg.gripper_speed, force=cfg.grasp_force if force is None else force,
            epsilon_inner=0.0, epsilon_outer=cfg.gripper_epsilon,
        )
        self.safety.gripper_closed = True
        if not wait:
            return False
        self._wait_gripper(ticket)
        # With a wide epsilon libfranka also reports success on an empty hand: check the width.
        return ticket.ok and ticket.width > cfg.gripper_empty_width

    def _wait_gripper(self, ticket: GripperTicket) -> None:
        """Block (bounded) until `ticket` ended; raise RobotError if it failed or was dropped."""
        timeout = self.config.motion_timeout_s + 1.0
        if not ticket.wait(timeout):
            raise RobotError(f"gripper {ticket.kind} did not finish within {timeout} s")
        if ticket.error:
            self._gripper.acknowledge(ticket)
            raise RobotError(ticket.error)

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
        with self._translate("stop"), contextlib.suppress(ControlException, CommandException, InvalidOperationException):
            robot.stop()
        self._drain(robot)
        self.clear_queue()

    def clear_queue(self) -> None:
        state = self.get_state()
        self.safety.reset(state.eef_pos, state.eef_quat, gripper_closed=self.safety.gripper_closed)
        self.tracker.reset(state.eef_pos, state.eef_quat)
        self._last_plan = None

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
        except RobotError as e:
            tolerated = False
            if not isinstance(e, RobotReflexError) and _planner_code(str(e.__cause__)) is not None:
                # The failed motion's targets are gone: restart from the measured pose. Ruckig
                # fails now and then on a near-zero move (-111); an isolated failure costs one
                # step, a run of them is a real problem.
                self.clear_queue()
                self.events["planner_errors"] += 1
                self._planner_streak += 1
                tolerated = self._planner_streak <= self.config.max_planner_retries
            # Already latched: how the old motion ended (e.g. its preemption) is not news; the
            # latched reflex is refused below.
            if not latched_before:
                if not tolerated:
                    raise
                log.warning("%s (%d in a row, tolerated up to %d)", e, self._planner_streak, self.config.max_planner_retries)
        else:
            self._planner_streak = 0
        if self._gripper is not None and (failure := self._gripper.pop_error()) is not None:
            raise RobotError(failure)
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

    def _check_joint_limits(self, state: RobotState) -> RobotState:
        """Stop the arm and raise RobotLimitError if a measured joint is within the margin of a limit.

        Cartesian limits (box, tilt, yaw, reach) keep the hand where the arm can go, but a
        redundant arm's wrist can still wind up; the real controller would stop it with a reflex,
        franky-sim would let the hand wander off. Stopping here is the same on both.
        """
        cfg = self.config
        q = state.joint_pos
        lo, hi = np.asarray(cfg.joint_lower), np.asarray(cfg.joint_upper)
        near = np.flatnonzero((q < lo + cfg.joint_limit_margin) | (q > hi - cfg.joint_limit_margin))
        if near.size == 0:
            return state
        self.events["joint_limit_stops"] += 1
        self.stop()
        j = int(near[0])
        limit = lo[j] if q[j] < lo[j] + cfg.joint_limit_margin else hi[j]
        raise RobotLimitError(
            f"joint {j + 1} at {q[j]:.3f} rad is within {cfg.joint_limit_margin} rad of its limit {limit:.4f}: "
            f"arm stopped; move home to continue (joints {np.round(q, 2).tolist()})"
        )

    @staticmethod
    def _join_motion(robot: _FrankyRobot, timeout_s: float, stall_s: float = 10.0) -> bool:
        """Wait for the running motion to end; False after `timeout_s` of the controller's clock.

        The controller's clock, not the wall clock: franky-sim runs slower than the wall clock on a
        loaded machine (on a real arm the two agree). A clock that stands still for `stall_s` wall
        seconds also ends the wait.
        """
        t = float(robot.state.time.to_sec())
        end, last, t_last = t + timeout_s, t, time.monotonic()
        while not robot.join_motion(timeout=0.05):
            t = float(robot.state.time.to_sec())
            if t > last:
                last, t_last = t, time.monotonic()
            if t >= end or time.monotonic() - t_last > stall_s:
                return False
        return True

    @staticmethod
    def _drain(robot: _FrankyRobot) -> None:
        """Wait for a stopped motion to end and drop the exception it leaves (its preemption, the
        reflex already latched, a planner failure), so that it does not surface at the next command."""
        with contextlib.suppress(ControlException, CommandException, InvalidOperationException, RuntimeError):
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
        except RuntimeError as e:  # franky's MotionPlannerException ("error code -100") arrives as RuntimeError
            code = _planner_code(str(e))
            if code is None and _NETWORK_FAILURE.search(str(e)):  # libfranka's bare "Net Exception"
                self._lost = True
                raise RobotConnectionError(f"{what}: connection to the robot lost: {e}") from e
            if code is None:
                raise RobotError(f"{what}: {e}") from e
            raise RobotError(
                f"{what}: the motion planner rejected the target (Ruckig error {code}: "
                f"{PLANNER_ERRORS.get(code, 'unknown')}); the arm holds its last command, the next command starts from the measured pose"
            ) from e

    def _require(self) -> _FrankyRobot:
        if self._robot is None:
            raise RobotConnectionError("robot is not connected: call connect() first")
        if self._lost:
            raise RobotConnectionError("connection to the robot was lost; reconnect")
        return self._robot

    def _require_gripper(self) -> GripperProcess:
        self._require()
        if self._gripper is None:
            raise RobotError("this robot has no gripper (use_gripper=false)")
        return self._gripper
