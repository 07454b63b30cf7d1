"""Smooth tracking of end-effector targets that arrive at the control rate (10-20 Hz).

Sending each target as its own asynchronous point-to-point motion (the "naive" mode) makes the
planner bring the arm to rest at every target: if it gets there before the next one arrives the
arm stops, and the speed oscillates with the control period (stop-and-go; on a real Franka this
also invites acceleration-discontinuity reflexes when motions are swapped).

The "smooth" mode sends every target as a waypoint *with a velocity* (the filtered velocity of
the target stream) and a minimum duration of one control period (measured on the controller's
clock, filtered), followed by a braking waypoint
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

from toto_robot.rotations import quat_conj, quat_from_rotvec, quat_mul, quat_normalize, rotvec_from_quat

MODES = ("smooth", "naive")


@dataclass
class TrackingConfig:
    """mode: "smooth" (waypoints with velocity) or "naive" (point-to-point, for comparison).

    velocity_filter: weight of the newest target-velocity estimate in an exponential filter
    (1 = no filtering); brake_time_s: places the braking waypoint v * brake_time_s / 2 past the
    target (0: the arm comes to rest exactly on the last target when the stream stops, after a
    short overshoot of about v^2 / 2a); relative_dynamics_factor:
    fraction of the Franka's velocity/acceleration/jerk limits the planner may use (0.2: up to
    2.6 m/s^2); face_brake_accel: near a workspace face (the floor guard), the speed towards it is
    capped so that such an overshoot stays inside the box.
    """

    mode: str = "smooth"
    velocity_filter: float = 0.6
    brake_time_s: float = 0.0
    relative_dynamics_factor: float = 0.2
    face_brake_accel: float = 1.0  # m/s^2: towards a workspace face, waypoint speed <= sqrt(2 * this * distance)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tracking mode must be one of {MODES}, got {self.mode!r}")
        if not 0 < self.velocity_filter <= 1:
            raise ValueError(f"velocity_filter must be in (0, 1], got {self.velocity_filter}")
        if self.brake_time_s < 0 or not 0 < self.relative_dynamics_factor <= 1 or self.face_brake_accel <= 0:
            raise ValueError("brake_time_s must be >= 0, relative_dynamics_factor in (0, 1] and face_brake_accel > 0")


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
        self._prev_t: float | None = None
        self._lin = np.zeros(3)
        self._ang = np.zeros(3)
        self.period_estimate = period_s

    def reset(self, pos: np.ndarray | None = None, quat: np.ndarray | None = None) -> None:
        """Forget the stream (after a stop): the next target starts from rest at (pos, quat)."""
        self._prev = None if pos is None or quat is None else (np.asarray(pos, float).copy(), quat_normalize(quat))
        self._prev_t = None
        self.period_estimate = self.period_s
        self._lin = np.zeros(3)
        self._ang = np.zeros(3)

    @property
    def velocity(self) -> tuple[np.ndarray, np.ndarray]:
        """Filtered stream velocity: linear (3,) m/s, angular (3,) rad/s."""
        return self._lin.copy(), self._ang.copy()

    def plan(self, pos: np.ndarray, quat: np.ndarray, t: float | None = None) -> TrackPlan:
        """Plan for the next target (pos (3,) m, quat (4,) wxyz). `t` [s]: the controller's clock
        when the target is issued; with it, the period is measured rather than assumed, so the
        arm keeps pace with a loop that runs late (or a simulator slower than real time)."""
        pos = np.asarray(pos, dtype=np.float64)
        quat = quat_normalize(quat)
        cfg = self.config
        a = cfg.velocity_filter
        dt = self.period_s
        if t is not None and self._prev_t is not None:
            dt = float(np.clip(t - self._prev_t, 0.5 * self.period_s, 2.0 * self.period_s))
            self.period_estimate = a * dt + (1 - a) * self.period_estimate
        self._prev_t = t
        if self._prev is not None:
            lin = (pos - self._prev[0]) / dt
            ang = rotvec_from_quat(quat_mul(quat, quat_conj(self._prev[1]))) / dt
            self._lin = a * lin + (1 - a) * self._lin
            self._ang = a * ang + (1 - a) * self._ang
        self._prev = (pos.copy(), quat.copy())
        zero = np.zeros(3)
        if cfg.mode == "naive":
            return TrackPlan((Waypoint(pos, quat, zero, zero),))
        lin = self._lin.copy()
        if self.bounds is not None:
            # A target near a box face must not be passed at speed towards it: the arm runs on
            # about v^2 / 2a past a waypoint before braking back, and the floor of the box is the
            # floor guard. Capping the speed at sqrt(2 a_face d) keeps that overshoot under the
            # distance d to the face (a_face is below the planner's deceleration); on the face, zero.
            lo, hi = self.bounds
            a = 2.0 * cfg.face_brake_accel
            lin = np.clip(lin, -np.sqrt(a * np.maximum(pos - lo, 0.0)), np.sqrt(a * np.maximum(hi - pos, 0.0)))
        reach = Waypoint(pos, quat, lin, self._ang.copy(), min_time_s=self.period_estimate)
        half = 0.5 * cfg.brake_time_s
        brake_pos = pos + lin * half
        if self.bounds is not None:
            brake_pos = np.clip(brake_pos, self.bounds[0], self.bounds[1])
        brake_quat = quat_normalize(quat_mul(quat_from_rotvec(self._ang * half), quat))
        return TrackPlan((reach, Waypoint(brake_pos, brake_quat, zero, zero)))


# ---------------------------------------------------------------------- measurement
@dataclass(frozen=True)
class SmoothnessReport:
    """How a robot followed a constant-velocity target stream (all from the controller's clock).

    stream_speed [m/s] in the controller's clock; realtime_factor: controller seconds per wall
    second (below 1 when a simulator cannot keep up);
    stops: target intervals in which the arm's speed fell below 10% of the stream speed;
    min_speed_ratio: lowest speed / stream speed while streaming (1 = never slowed down);
    speed_cv: std / mean of the speed while streaming (0 = perfectly even);
    max_accel [m/s^2], max_jerk [m/s^3]: of the measured end effector, on a 10 ms grid;
    tracking_error_rms/max [m]: distance to the previous target when the next one is sent.
    """

    mode: str
    n_targets: int
    stream_speed: float
    realtime_factor: float
    stops: int
    min_speed_ratio: float
    speed_cv: float
    max_accel: float
    max_jerk: float
    tracking_error_rms: float
    tracking_error_max: float


def smoothness(t: np.ndarray, pos: np.ndarray, t_targets: np.ndarray, stream_speed: float, grid_dt: float = 0.01) -> dict[str, float]:
    """Metrics of end-effector samples t (N,) s, pos (N, 3) m, over the target times (K,) s."""
    order = np.argsort(t, kind="stable")
    t, pos = t[order], pos[order]
    keep = np.concatenate([[True], np.diff(t) > 0])
    t, pos = t[keep], pos[keep]
    g = np.arange(t[0], t[-1], grid_dt)
    x = np.stack([np.interp(g, t, pos[:, k]) for k in range(3)], axis=1)
    v = np.gradient(x, grid_dt, axis=0)
    a = np.gradient(v, grid_dt, axis=0)
    j = np.gradient(a, grid_dt, axis=0)
    speed = np.linalg.norm(v, axis=1)
    # Interior of the stream: from the 2nd target (the first starts from rest) to the last one.
    inside = (g >= t_targets[1]) & (g <= t_targets[-1])
    stops = 0
    for t0, t1 in zip(t_targets[1:-1], t_targets[2:]):
        sel = (g >= t0) & (g < t1)
        if sel.any() and speed[sel].min() < 0.1 * stream_speed:
            stops += 1
    s = speed[inside]
    return {
        "stops": stops,
        "min_speed_ratio": float(s.min() / stream_speed),
        "speed_cv": float(s.std() / max(s.mean(), 1e-9)),
        "max_accel": float(np.linalg.norm(a[2:-2], axis=1).max()),
        "max_jerk": float(np.linalg.norm(j[3:-3], axis=1).max()),
    }


def stream_line(robot, direction: np.ndarray, speed: float, duration_s: float, sample_period_s: float = 0.003) -> SmoothnessReport:
    """Send targets moving at `speed` m/s along `direction` (base frame) for `duration_s` at the
    robot's control rate through `robot.send_target`, sample its state in a thread, and measure.

    `robot` is a connected `Robot`; the arm is left where the stream ended.
    """
    import threading
    import time

    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    period = 1.0 / robot.config.control_hz
    start = robot.get_state()
    samples: list[tuple[float, np.ndarray]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            s = robot.get_state()
            samples.append((s.t_device, s.eef_pos))
            time.sleep(sample_period_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    n = int(round(duration_s / period))
    t_targets, errors = [], []
    prev = start.eef_pos
    t0 = time.monotonic()
    for k in range(1, n + 1):
        state = robot.get_state()
        errors.append(float(np.linalg.norm(state.eef_pos - prev)))
        t_targets.append(state.t_device)
        prev = start.eef_pos + d * speed * period * k
        robot.send_target(prev, start.eef_quat)
        # Paced on the controller's clock: franky-sim runs slower than wall time on a loaded machine.
        robot.wait(max(0.0, start.t_device + k * period - robot.get_state().t_device))
    robot.wait(0.5)
    done.set()
    sampler.join(timeout=2.0)
    t = np.array([s[0] for s in samples])
    pos = np.array([s[1] for s in samples])
    wall = time.monotonic() - t0
    # Measured in the controller's clock too (the stream's period there is `period` up to polling).
    t_targets = np.array(t_targets)
    sim_speed = speed * period / float(np.mean(np.diff(t_targets)))
    m = smoothness(t, pos, t_targets, sim_speed)
    err = np.array(errors[2:])  # the first targets start from rest
    return SmoothnessReport(
        mode=robot.config.tracking.mode,
        n_targets=n,
        stream_speed=sim_speed,
        realtime_factor=float((t_targets[-1] - t_targets[0]) / (wall - period)),
        tracking_error_rms=float(np.sqrt(np.mean(err**2))),
        tracking_error_max=float(err.max()),
        **m,
    )
