"""Smooth tracking of end-effector targets that arrive at the control rate (10-20 Hz).

Sending each target as its own asynchronous point-to-point motion (the "naive" mode) makes the
planner bring the arm to rest at every target: if it gets there before the next one arrives the
arm stops, and the speed oscillates with the control period (stop-and-go; on a real Franka this
also invites acceleration-discontinuity reflexes when motions are swapped).

The "smooth" mode sends every target as a waypoint *with a velocity* (the filtered velocity of
the target stream) and a minimum duration of one control period, followed by a braking waypoint
a little further along at rest. In steady state the arm passes through each target at the
stream's speed exactly when the next target arrives, so the next motion takes over mid-flight;
if the stream stops, the arm brakes and settles on the braking waypoint (by default the last
target itself) instead of running on. The
planner (Ruckig inside franky) keeps velocity, acceleration and jerk within the robot's limits
scaled by `relative_dynamics_factor`.

`TargetTracker` is pure numpy (a `TrackPlan` of waypoints); the franky backend turns a plan into
a `CartesianWaypointMotion`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hardware.rotations import quat_conj, quat_from_rotvec, quat_mul, quat_normalize, rotvec_from_quat

MODES = ("smooth", "naive")


@dataclass
class TrackingConfig:
    """mode: "smooth" (waypoints with velocity) or "naive" (point-to-point, for comparison).

    velocity_filter: weight of the newest target-velocity estimate in an exponential filter
    (1 = no filtering); brake_time_s: places the braking waypoint v * brake_time_s / 2 past the
    target (0: the arm comes to rest exactly on the last target when the stream stops, after a
    short overshoot of about v^2 / 2a); relative_dynamics_factor:
    fraction of the Franka's velocity/acceleration/jerk limits the planner may use.
    """

    mode: str = "smooth"
    velocity_filter: float = 0.6
    brake_time_s: float = 0.0
    relative_dynamics_factor: float = 0.2

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tracking mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.velocity_filter <= 1:
            raise ValueError(f"velocity_filter must be in (0, 1], got {self.velocity_filter}")
        if self.brake_time_s < 0 or not 0 < self.relative_dynamics_factor <= 1:
            raise ValueError("brake_time_s must be >= 0 and relative_dynamics_factor in (0, 1]")


@dataclass(frozen=True)
class Waypoint:
    """pos (3,) m, quat (4,) wxyz, lin_vel (3,) m/s, ang_vel (3,) rad/s (base frame) to pass
    through; min_time_s: reach it no sooner than this after the motion starts (None: ASAP)."""

    pos: np.ndarray
    quat: np.ndarray
    lin_vel: np.ndarray
    ang_vel: np.ndarray
    min_time_s: float | None = None


@dataclass(frozen=True)
class TrackPlan:
    waypoints: tuple[Waypoint, ...]


class TargetTracker:
    """Turns a stream of targets (one per control period `period_s` [s]) into waypoint plans.

    bounds: optional (lo (3,), hi (3,)) box that braking waypoints are clipped into, so a
    braking overshoot never leaves the safety filter's workspace.
    """

    def __init__(self, config: TrackingConfig, period_s: float, bounds: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be positive, got {period_s}")
        self.config = config
        self.period_s = period_s
        self.bounds = bounds
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._lin = np.zeros(3)
        self._ang = np.zeros(3)

    def reset(self, pos: np.ndarray | None = None, quat: np.ndarray | None = None) -> None:
        """Forget the stream (after a stop): the next target starts from rest at (pos, quat)."""
        self._prev = None if pos is None or quat is None else (np.asarray(pos, float).copy(), quat_normalize(quat))
        self._lin = np.zeros(3)
        self._ang = np.zeros(3)

    @property
    def velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Filtered stream velocity: linear (3,) m/s, angular (3,) rad/s."""
        return self._lin.copy(), self._ang.copy()

    def plan(self, pos: np.ndarray, quat: np.ndarray) -> TrackPlan:
        pos = np.asarray(pos, dtype=np.float64)
        quat = quat_normalize(quat)
        cfg = self.config
        if self._prev is not None:
            lin = (pos - self._prev[0]) / self.period_s
            ang = rotvec_from_quat(quat_mul(quat, quat_conj(self._prev[1]))) / self.period_s
            a = cfg.velocity_filter
            self._lin = a * lin + (1 - a) * self._lin
            self._ang = a * ang + (1 - a) * self._ang
        self._prev = (pos.copy(), quat.copy())
        zero = np.zeros(3)
        if cfg.mode == "naive":
            return TrackPlan((Waypoint(pos, quat, zero, zero),))
        lin = self._lin.copy()
        if self.bounds is not None:
            # A target on the box face must not be passed at speed outwards: the arm would
            # overshoot the workspace before braking.
            lo, hi = self.bounds
            lin[(pos <= lo + 1e-6) & (lin < 0)] = 0.0
            lin[(pos >= hi - 1e-6) & (lin > 0)] = 0.0
        reach = Waypoint(pos, quat, lin, self._ang.copy(), min_time_s=self.period_s)
        half = 0.5 * cfg.brake_time_s
        brake_pos = pos + lin * half
        if self.bounds is not None:
            brake_pos = np.clip(brake_pos, self.bounds[0], self.bounds[1])
        brake_quat = quat_normalize(quat_mul(quat_from_rotvec(self._ang * half), quat))
        return TrackPlan((reach, Waypoint(brake_pos, brake_quat, zero, zero)))
