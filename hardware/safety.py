"""The one safety filter every robot command passes through before it leaves the process.

Actions mean what they mean in simulation: `toto_robot.action.ActionConvention.next_target`
turns each into the next target, integrated on a reference target (the last target sent,
re-anchored on the measured pose after any stop) and leading the measured end effector by at
most the convention's max_lead, so that a slow arm does not make targets pile up. The limits
below must admit the convention's full-scale step (checked at construction): a full-scale action
is never silently cut. Per step, in this order:

1. refuse non-finite or mis-shaped input (logged, nothing sent);
2. clip the action to [-1, 1] and take the convention's next target;
3. limit translation and rotation per step (and per second: `max_speed`, `max_angular_speed`);
   keep the gripper axis within `max_tilt` of pointing down and its yaw within `max_yaw` of the
   arm's azimuth: random rotations otherwise walk the wrist joints into their limits, where the
   hand stops following and leaves the box however well each target sits inside it;
   keep the wrist between `min_reach` and `max_reach` from the shoulder (parts of the box are out of reach);
4. limit how far the target may lead the measured end effector (`max_lead`);
5. workspace box: a target outside the box by more than `refuse_margin` is refused (logged, nothing
   sent); a target closer than that is clipped onto the box. The box floor is the floor guard:
   the lowest TCP height at which the fingertips still clear the table (`toto_robot.scene`);
6. debounce the gripper: a change must persist `gripper_debounce_steps` steps and be at least
   `gripper_min_interval_s` after the previous change.

Counts of refusals and clamps per limit are kept for the rollout log: a high clamp rate means a
policy or config bug.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from toto_robot.action import ActionConvention
from toto_robot.rotations import quat_angle, quat_conj, quat_from_rotvec, quat_mul, quat_normalize, quat_to_matrix, rotvec_from_quat
from toto_robot.scene import FLOOR_GUARD

log = logging.getLogger(__name__)


@dataclass
class SafetyConfig:
    """Limits (conf/safety/*.yaml). Conservative defaults for work next to people. m, rad, s.

    The workspace box is in the robot base frame and sized for a table in front of an FR3/Panda
    whose top is z = 0; its floor is the floor guard (fingertips just above the table).
    """

    workspace_min: list[float] = field(default_factory=lambda: [0.25, -0.35, FLOOR_GUARD])
    workspace_max: list[float] = field(default_factory=lambda: [0.75, 0.35, 0.65])
    refuse_margin: float = 0.05  # targets further out of the box than this are refused, not clipped
    max_step_translation: float = 0.03  # m per control step
    max_step_rotation: float = 0.2  # rad per control step
    max_speed: float = 0.25  # m/s (with the control rate, a second per-step bound)
    max_angular_speed: float = 0.5  # rad/s
    max_lead: float = 0.06  # m, target ahead of the measured end effector
    nominal_quat: list[float] = field(default_factory=lambda: [0.0, 1.0, 0.0, 0.0])  # wxyz, pointing down
    max_tilt: float = 0.5  # rad, gripper axis away from nominal_quat's (pointing down)
    max_yaw: float = 1.0  # rad, rotation about the vertical relative to the arm's azimuth
    shoulder_pos: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.333])  # m, FR3/Panda joint 2
    wrist_offset: float = 0.21  # m from the end effector back along its z axis to the wrist
    max_reach: float = 0.72  # m, shoulder-to-wrist distance kept off the stretched-arm singularity
    min_reach: float = 0.35  # m, and off the folded elbow's joint limit
    gripper_debounce_steps: int = 2
    gripper_min_interval_s: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be 3 values below workspace_max {self.workspace_max}")
        q = np.asarray(self.nominal_quat, float)
        if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) < 1e-6:
            raise ValueError(f"nominal_quat must be a unit quaternion w-x-y-z, got {self.nominal_quat}")
        positive = ("max_step_translation", "max_step_rotation", "max_speed", "max_angular_speed", "max_lead", "max_tilt", "max_yaw", "max_reach")
        bad = [k for k in positive if not getattr(self, k) > 0] + (["min_reach"] if not 0 <= self.min_reach < self.max_reach else [])
        if bad or self.refuse_margin < 0 or self.gripper_debounce_steps < 1 or self.gripper_min_interval_s < 0:
            raise ValueError(f"safety limits must be positive (bad: {bad or 'margin/debounce'})")


@dataclass(frozen=True)
class SentCommand:
    """What one command became after the safety filter (what the robot got; record this one).

    action: (7,) float32 in [-1, 1], the action equivalent of what was sent (refused -> zero motion);
    target_pos (3,) m, target_quat (4,) wxyz: end-effector target in the base frame (the previous
    target when refused); gripper: "close", "open", or None when no gripper command is issued this
    step; sent: False when refused (nothing reached the robot), with `reason`;
    clamps: names of the limits that modified it ("action_range", "translation", "speed",
    "rotation", "angular_speed", "tilt", "yaw", "lead", "workspace", "reach"); gripper_debounced: a gripper change was held
    back; t_host: time.monotonic() when filtered [s].
    """

    action: np.ndarray
    target_pos: np.ndarray
    target_quat: np.ndarray
    gripper: str | None
    sent: bool
    reason: str = ""
    clamps: tuple[str, ...] = ()
    gripper_debounced: bool = False
    t_host: float = field(default_factory=time.monotonic)

    @property
    def clamped(self) -> bool:
        return bool(self.clamps)


class SafetyFilter:
    """Stateful filter: holds the reference target and gripper state between steps.

    `action`: the shared action convention (its control rate sets the per-second limits' per-step
    share). ValueError when a limit would cut the convention's full-scale step.
    """

    def __init__(self, config: SafetyConfig, action: ActionConvention) -> None:
        hz = action.control_hz
        cut = {name: (limit, step) for name, limit, step in (
            ("max_step_translation", config.max_step_translation, action.max_translation),
            ("max_speed", config.max_speed / hz, action.max_translation),
            ("max_step_rotation", config.max_step_rotation, action.max_rotation),
            ("max_angular_speed", config.max_angular_speed / hz, action.max_rotation),
            ("max_lead", config.max_lead, action.max_lead),
        ) if limit < step * (1 - 1e-9)}
        if cut:
            raise ValueError("safety limits would cut a full-scale action of the action convention: " + ", ".join(
                f"{k} allows {a:.4g} per step < {b:.4g}" for k, (a, b) in cut.items()))
        self.config = config
        self.action = action
        self.control_hz = hz
        self._lo = np.asarray(config.workspace_min, dtype=np.float64)
        self._hi = np.asarray(config.workspace_max, dtype=np.float64)
        self._nominal = quat_normalize(config.nominal_quat)
        self._shoulder = np.asarray(config.shoulder_pos, dtype=np.float64)
        self.ref_pos: np.ndarray | None = None
        self.ref_quat: np.ndarray | None = None
        self.gripper_closed: bool | None = None
        self._pending = 0
        self._last_gripper_change = -np.inf
        self.counts: dict[str, int] = {}
        self.reset_counts()

    # ------------------------------------------------------------------ state
    def reset(self, pos: np.ndarray, quat: np.ndarray, gripper_closed: bool | None = None) -> None:
        """Anchor the reference on a measured pose (after connect, home, stop or recovery)."""
        self.ref_pos = np.asarray(pos, dtype=np.float64).copy()
        self.ref_quat = quat_normalize(quat)
        self.gripper_closed = gripper_closed
        self._pending = 0

    def reset_counts(self) -> None:
        self.counts = {"steps": 0, "sent": 0, "refused": 0, "clamped": 0, "gripper_debounced": 0}

    @property
    def clamp_rate(self) -> float:
        """Fraction of steps modified by a limit."""
        return self.counts["clamped"] / max(1, self.counts["steps"])

    def in_workspace(self, pos: np.ndarray, margin: float = 0.0) -> bool:
        p = np.asarray(pos, dtype=np.float64)
        return bool(np.all(p >= self._lo - margin) and np.all(p <= self._hi + margin))

    # ------------------------------------------------------------------ filtering
    def filter_action(self, action: np.ndarray, measured_pos: np.ndarray, now: float | None = None) -> SentCommand:
        """(7,) action in [-1, 1] + measured eef position (3,) m -> SentCommand."""
        now = time.monotonic() if now is None else now
        self._require_reference()
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (7,):
            return self._refuse(f"action must have shape (7,), got {a.shape}", now)
        bad = ~np.isfinite(a)
        if bad.any():
            return self._refuse(f"action has NaN/inf at indices {np.flatnonzero(bad).tolist()}", now)
        clamps: list[str] = []
        clipped = np.clip(a, -1.0, 1.0)
        if np.any(clipped != a):
            clamps.append("action_range")
        step, _, _ = self.action.step(clipped)
        pos, quat, _ = self.action.next_target(self.ref_pos, self.ref_quat, clipped, measured_pos)
        if np.linalg.norm(pos - (self.ref_pos + step)) > 1e-9:
            clamps.append("lead")
        rotvec = rotvec_from_quat(quat_mul(quat, quat_conj(self.ref_quat)))
        return self._finish(pos - self.ref_pos, rotvec, float(clipped[6]), measured_pos, clamps, now)

    def filter_target(
        self, pos: np.ndarray, quat: np.ndarray, gripper: float | None, measured_pos: np.ndarray, now: float | None = None
    ) -> SentCommand:
        """Absolute target (pos (3,) m, quat (4,) wxyz) -> SentCommand, per-step limits applied."""
        now = time.monotonic() if now is None else now
        self._require_reference()
        p = np.asarray(pos, dtype=np.float64)
        q = np.asarray(quat, dtype=np.float64)
        if p.shape != (3,) or q.shape != (4,):
            return self._refuse(f"target must be pos (3,) + quat (4,), got {p.shape} + {q.shape}", now)
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))) or (gripper is not None and not np.isfinite(gripper)):
            return self._refuse("target has NaN/inf", now)
        if np.linalg.norm(q) < 1e-6:
            return self._refuse("target quaternion has zero norm", now)
        if not self.in_workspace(p, self.config.refuse_margin):
            return self._refuse(f"target {np.round(p, 3).tolist()} outside the workspace box", now)
        rotvec = rotvec_from_quat(quat_mul(quat_normalize(q), quat_conj(self.ref_quat)))
        return self._finish(p - self.ref_pos, rotvec, gripper, measured_pos, [], now)

    # ------------------------------------------------------------------ internals
    def _finish(
        self,
        delta: np.ndarray,
        rotvec: np.ndarray,
        gripper: float | None,
        measured_pos: np.ndarray,
        clamps: list[str],
        now: float,
    ) -> SentCommand:
        cfg = self.config
        delta = _limit(delta, cfg.max_step_translation, cfg.max_speed / self.control_hz, "translation", "speed", clamps)
        rotvec = _limit(
            rotvec, cfg.max_step_rotation, cfg.max_angular_speed / self.control_hz, "rotation", "angular_speed", clamps
        )
        target = self.ref_pos + delta
        measured = np.asarray(measured_pos, dtype=np.float64)
        lead = target - measured
        if np.linalg.norm(lead) > cfg.max_lead:
            target = measured + lead * (cfg.max_lead / np.linalg.norm(lead))
            clamps.append("lead")
        if not self.in_workspace(target, cfg.refuse_margin):
            return self._refuse(f"target {np.round(target, 3).tolist()} outside the workspace box", now)
        if not self.in_workspace(target):
            target = np.clip(target, self._lo, self._hi)
            clamps.append("workspace")
        quat = self._limit_orientation(target, quat_normalize(quat_mul(quat_from_rotvec(rotvec), self.ref_quat)), clamps)
        target, quat = self._limit_reach(target, quat, clamps)
        grip_cmd, debounced = self._gripper(gripper, now)

        sent_delta = target - self.ref_pos
        sent_rot = rotvec_from_quat(quat_mul(quat, quat_conj(self.ref_quat)))
        self.ref_pos, self.ref_quat = target, quat
        self.counts["steps"] += 1
        self.counts["sent"] += 1
        self.counts["clamped"] += bool(clamps)
        for name in clamps:
            self.counts[name] = self.counts.get(name, 0) + 1
        self.counts["gripper_debounced"] += debounced
        if clamps:
            log.debug("safety clamps %s", clamps)
        return SentCommand(
            action=self._action(sent_delta, sent_rot),
            target_pos=target.copy(),
            target_quat=quat.copy(),
            gripper=grip_cmd,
            sent=True,
            clamps=tuple(clamps),
            gripper_debounced=debounced,
            t_host=now,
        )

    def orientation(self, pos: np.ndarray, quat: np.ndarray) -> tuple[float, float]:
        """(tilt, yaw) [rad] of an end-effector pose (pos (3,), quat wxyz), see `_limit_orientation`."""
        _, tilt, yaw = self._swing_tilt_yaw(pos, quat)
        return tilt, yaw

    def _swing_tilt_yaw(self, pos: np.ndarray, quat: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The swing part of `quat`'s rotation away from nominal, its angle (tilt) and the twist
        about the vertical relative to the azimuth of `pos` (yaw)."""
        swing, twist = _swing_twist_z(quat_mul(quat_normalize(quat), quat_conj(self._nominal)))
        return swing, quat_angle(swing, _IDENTITY), _wrap(_angle_about_z(twist) - _azimuth(pos))

    def _limit_orientation(self, pos: np.ndarray, quat: np.ndarray, clamps: list[str]) -> np.ndarray:
        """Keep the gripper axis within `max_tilt` of pointing down and its yaw within `max_yaw` of
        the arm's azimuth at `pos`.

        The rotation away from `nominal_quat` is split into a twist about the vertical (yaw) and a
        swing about a horizontal axis (tilt). Yaw is measured relative to the azimuth of the target
        (the angle joint 1 turns to reach it): joint 7 counter-rotates by exactly that relative yaw,
        and tilt is taken up by joints 5-6, so these two bounds keep the wrist joints off their
        limits wherever the hand is in the box. A reference already further out (the arm was left
        there) may hold or reduce its tilt/yaw, so the clamp never jumps the target.
        """
        ref_tilt, ref_yaw = self.orientation(self.ref_pos, self.ref_quat)
        swing, tilt, yaw = self._swing_tilt_yaw(pos, quat)
        max_tilt = max(self.config.max_tilt, ref_tilt)
        max_yaw = max(self.config.max_yaw, abs(ref_yaw))
        if tilt <= max_tilt * (1 + 1e-9) and abs(yaw) <= max_yaw * (1 + 1e-9):
            return quat
        if tilt > max_tilt * (1 + 1e-9):
            swing = quat_from_rotvec(rotvec_from_quat(swing) * (max_tilt / tilt))
            clamps.append("tilt")
        if abs(yaw) > max_yaw * (1 + 1e-9):
            yaw = float(np.clip(yaw, -max_yaw, max_yaw))
            clamps.append("yaw")
        twist = quat_from_rotvec(np.array([0.0, 0.0, _azimuth(pos) + yaw]))
        return quat_normalize(quat_mul(quat_mul(swing, twist), self._nominal))

    def reach(self, pos: np.ndarray, quat: np.ndarray) -> float:
        """Distance [m] from the shoulder to the wrist of an end-effector pose (pos (3,), quat wxyz)."""
        wrist = np.asarray(pos, dtype=np.float64) - quat_to_matrix(quat)[:, 2] * self.config.wrist_offset
        return float(np.linalg.norm(wrist - self._shoulder))

    def _limit_reach(self, target: np.ndarray, quat: np.ndarray, clamps: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Shorten the step so the wrist stays between `min_reach` and `max_reach` from the shoulder.

        Parts of the box are out of the arm's reach: far and low with the hand tilted stretches
        the arm into its elbow singularity, where it stops tracking; near and low folds the elbow
        (joint 4) onto its limit. A reference already outside the band may only move back in (or hold).
        """
        ref = self.reach(self.ref_pos, self.ref_quat)
        near, far = min(self.config.min_reach, ref), max(self.config.max_reach, ref)

        def ok(pos: np.ndarray, q: np.ndarray) -> bool:
            return near - 1e-9 <= self.reach(pos, q) <= far + 1e-9

        if ok(target, quat):
            return target, quat
        clamps.append("reach")
        if not ok(self.ref_pos, quat):
            quat = self.ref_quat  # the rotation alone would stretch or fold the arm: hold the orientation
        lo, hi = 0.0, 1.0  # fraction of the step that stays within reach (bisection)
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            if ok(self.ref_pos + mid * (target - self.ref_pos), quat):
                lo = mid
            else:
                hi = mid
        return self.ref_pos + lo * (target - self.ref_pos), quat

    def _gripper(self, value: float | None, now: float) -> tuple[str | None, bool]:
        """Debounced gripper command: ("close" | "open" | None, held back?)."""
        if value is None:
            self._pending = 0
            return None, False
        want_closed = value > 0
        if self.gripper_closed is None:  # unknown state: the first command establishes it
            self.gripper_closed = want_closed
            self._last_gripper_change = now
            return ("close" if want_closed else "open"), False
        if want_closed == self.gripper_closed:
            self._pending = 0
            return None, False
        self._pending += 1
        cfg = self.config
        if self._pending < cfg.gripper_debounce_steps or now - self._last_gripper_change < cfg.gripper_min_interval_s:
            return None, True
        self.gripper_closed = want_closed
        self._pending = 0
        self._last_gripper_change = now
        return ("close" if want_closed else "open"), False

    def _action(self, delta: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
        grip = 0.0 if self.gripper_closed is None else (1.0 if self.gripper_closed else -1.0)
        return self.action.to_action(delta, rotvec, grip)

    def _refuse(self, reason: str, now: float) -> SentCommand:
        self.counts["steps"] += 1
        self.counts["refused"] += 1
        log.warning("safety filter refused a command: %s", reason)
        return SentCommand(
            action=self._action(np.zeros(3), np.zeros(3)),
            target_pos=self.ref_pos.copy(),
            target_quat=self.ref_quat.copy(),
            gripper=None,
            sent=False,
            reason=reason,
            t_host=now,
        )

    def _require_reference(self) -> None:
        if self.ref_pos is None or self.ref_quat is None:
            raise RuntimeError("safety filter has no reference pose: call reset(pos, quat) after connecting")


def _limit(v: np.ndarray, step_max: float, rate_max: float, step_name: str, rate_name: str, clamps: list[str]) -> np.ndarray:
    """Scale `v` down to norm min(step_max, rate_max), recording which bound acted."""
    n = float(np.linalg.norm(v))
    bound = min(step_max, rate_max)
    if n <= bound * (1 + 1e-6):  # float32 actions at exactly the limit are not clamps
        return v
    clamps.append(step_name if step_max <= rate_max else rate_name)
    return v * (bound / n)


_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


def _swing_twist_z(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """q (wxyz) = swing * twist, twist about the base z axis, swing about a horizontal axis."""
    w, z = q[0], q[3]
    n = float(np.hypot(w, z))
    twist = _IDENTITY if n < 1e-9 else np.array([w / n, 0.0, 0.0, z / n])
    return quat_mul(q, quat_conj(twist)), twist


def _angle_about_z(twist: np.ndarray) -> float:
    return float(2.0 * np.arctan2(twist[3], twist[0]))


def _azimuth(pos: np.ndarray) -> float:
    """Angle [rad] of a position about the base z axis (0 straight ahead along +x)."""
    return float(np.arctan2(pos[1], pos[0]))


def _wrap(a: float) -> float:
    return float((a + np.pi) % (2.0 * np.pi) - np.pi)
