"""The one safety filter every robot command passes through before it leaves the process.

Actions are deltas (toto_robot action convention); the filter integrates them onto a reference
target (the last target sent, re-anchored on the measured pose after any stop), so that a slow
arm does not make targets pile up. Per step, in this order:

1. refuse non-finite or mis-shaped input (logged, nothing sent);
2. clip the action to [-1, 1];
3. limit translation and rotation per step (and per second: `max_speed`, `max_angular_speed`);
4. limit how far the target may lead the measured end effector (`max_lead`);
5. workspace box: a target outside the box by more than `refuse_margin` is refused (logged, nothing
   sent); a target closer than that is clipped onto the box;
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

from hardware.rotations import quat_conj, quat_from_rotvec, quat_mul, quat_normalize, rotvec_from_quat

log = logging.getLogger(__name__)


@dataclass
class SafetyConfig:
    """Limits (conf/safety/*.yaml). Conservative defaults for work next to people. m, rad, s.

    The workspace box is in the robot base frame and sized for a table in front of an FR3/Panda.
    """

    workspace_min: list[float] = field(default_factory=lambda: [0.25, -0.35, 0.05])
    workspace_max: list[float] = field(default_factory=lambda: [0.75, 0.35, 0.65])
    refuse_margin: float = 0.05  # targets further out of the box than this are refused, not clipped
    max_step_translation: float = 0.03  # m per control step
    max_step_rotation: float = 0.2  # rad per control step
    max_speed: float = 0.25  # m/s (with the control rate, a second per-step bound)
    max_angular_speed: float = 0.5  # rad/s
    max_lead: float = 0.06  # m, target ahead of the measured end effector
    gripper_debounce_steps: int = 2
    gripper_min_interval_s: float = 0.5

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.workspace_min, float), np.asarray(self.workspace_max, float)
        if lo.shape != (3,) or hi.shape != (3,) or not np.all(lo < hi):
            raise ValueError(f"workspace_min {self.workspace_min} must be 3 values below workspace_max {self.workspace_max}")
        positive = ("max_step_translation", "max_step_rotation", "max_speed", "max_angular_speed", "max_lead")
        bad = [k for k in positive if not getattr(self, k) > 0]
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
    "rotation", "angular_speed", "lead", "workspace"); gripper_debounced: a gripper change was held
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

    control_hz sets the per-second limits' per-step share; max_translation [m] and max_rotation
    [rad] are the action scales of the shared action convention.
    """

    def __init__(self, config: SafetyConfig, control_hz: float, max_translation: float, max_rotation: float) -> None:
        if control_hz <= 0 or max_translation <= 0 or max_rotation <= 0:
            raise ValueError("control_hz, max_translation and max_rotation must be positive")
        self.config = config
        self.control_hz = control_hz
        self.max_translation = max_translation
        self.max_rotation = max_rotation
        self._lo = np.asarray(config.workspace_min, dtype=np.float64)
        self._hi = np.asarray(config.workspace_max, dtype=np.float64)
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
        delta = clipped[:3] * self.max_translation
        rotvec = clipped[3:6] * self.max_rotation
        return self._finish(delta, rotvec, float(clipped[6]), measured_pos, clamps, now)

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
        quat = quat_normalize(quat_mul(quat_from_rotvec(rotvec), self.ref_quat))
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
        a = np.concatenate([delta / self.max_translation, rotvec / self.max_rotation, [grip]])
        return np.clip(a, -1.0, 1.0).astype(np.float32)

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
