"""Task-space control of the arm: damped-least-squares differential IK feeding joint servos that
track targets the way a Franka does under franky.

Once per control step, `DiffIKController.joint_goal` runs two DLS iterations on a kinematic
scratch copy of the arm (starting from the measured joints, so a blocked arm never winds up; the
arm sits on its previous target, so two reach a full-scale step as well as four) with a null-space
pull toward the rest posture (the FR3 is redundant; without it the elbow drifts).
`ServoTrajectory` then plans the joint set-points of the step's physics substeps: a cubic from
the previous goal (with its velocity) to the new goal (arriving with the step's mean velocity),
the same shape as franky's waypoint-with-velocity motions, so the torque-limited servos (87/12 Nm)
never see a step change, and with velocity feed-forward, so the arm reaches each goal within the
step instead of lagging a servo time constant behind it.
"""

from __future__ import annotations

import mujoco
import numpy as np


def quat_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) [rad] rotating `current` to `target` in the world frame (w-x-y-z quaternions)."""
    conj = np.empty(4)
    mujoco.mju_negQuat(conj, current)
    diff = np.empty(4)
    mujoco.mju_mulQuat(diff, target, conj)
    vel = np.empty(3)
    mujoco.mju_quat2Vel(vel, diff, 1.0)
    return vel


class DiffIKController:
    """Joint goals that put the `site_id` site at a target pose.

    `arm_qpos` / `arm_dof` index the 7 arm joints in qpos and qvel; `q_rest` (7,) [rad] is the
    posture the null-space term pulls toward.
    """

    def __init__(self, model: mujoco.MjModel, site_id: int, arm_qpos: np.ndarray, arm_dof: np.ndarray,
                 q_rest: np.ndarray, damping: float = 0.03, iters: int = 2, nullspace_gain: float = 0.05) -> None:
        self.model = model
        self.site_id = site_id
        self.arm_qpos = arm_qpos
        self.arm_dof = arm_dof
        self.q_rest = np.asarray(q_rest, dtype=float)
        self._damping_eye = damping**2 * np.eye(6)
        self.iters = iters
        self.nullspace_gain = nullspace_gain
        self.scratch = mujoco.MjData(model)
        self._jac = np.zeros((6, model.nv))
        rng = model.jnt_range[model.dof_jntid[arm_dof]]
        margin = 0.02  # stay off the hard limits [rad]
        self._lo, self._hi = rng[:, 0] + margin, rng[:, 1] - margin

    def joint_goal(self, qpos: np.ndarray, target_pos: np.ndarray, target_quat: np.ndarray,
                   iters: int | None = None) -> np.ndarray:
        """Arm joints (7,) [rad] reaching (target_pos [m], target_quat w-x-y-z) from full `qpos`."""
        s = self.scratch
        s.qpos[:] = qpos
        err = np.empty(6)
        cur = np.empty(4)
        rhs = np.empty((6, 2))
        for _ in range(self.iters if iters is None else iters):
            mujoco.mj_kinematics(self.model, s)
            mujoco.mj_comPos(self.model, s)
            err[:3] = target_pos - s.site_xpos[self.site_id]
            mujoco.mju_mat2Quat(cur, s.site_xmat[self.site_id])
            err[3:] = quat_error(target_quat, cur)
            mujoco.mj_jacSite(self.model, s, self._jac[:3], self._jac[3:], self.site_id)
            jac = self._jac[:, self.arm_dof]
            q = s.qpos[self.arm_qpos]
            posture = self.nullspace_gain * (self.q_rest - q)
            # dq = J+ err + (I - J+ J) posture with J+ = J^T (J J^T + lambda^2 I)^-1: one 6x6 solve.
            rhs[:, 0], rhs[:, 1] = err, jac @ posture
            x = np.linalg.solve(jac @ jac.T + self._damping_eye, rhs)
            dq = jac.T @ (x[:, 0] - x[:, 1]) + posture
            s.qpos[self.arm_qpos] = np.clip(q + dq, self._lo, self._hi)
        return s.qpos[self.arm_qpos].copy()

    def site_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Site position [m] and rotation matrix (3, 3) of the last `joint_goal` result."""
        mujoco.mj_kinematics(self.model, self.scratch)
        return self.scratch.site_xpos[self.site_id].copy(), self.scratch.site_xmat[self.site_id].reshape(3, 3).copy()


class ServoTrajectory:
    """Joint position-servo set-points (substeps, 7) for one control step of `period` [s].

    A position servo with stiffness kp and damping kv pulls toward its set-point with
    kp * (ctrl - q) - kv * dq; writing ctrl = q_d + (kv / kp) * dq_d turns that into
    kp * (q_d - q) + kv * (dq_d - dq): tracking of the desired trajectory with velocity
    feed-forward, no lag in steady motion. `lag` (7,) [s] is kv / kp per joint.
    """

    def __init__(self, lag: np.ndarray, period: float, substeps: int) -> None:
        self.lag = np.asarray(lag, dtype=float)
        self.period = period
        s = np.arange(1, substeps + 1, dtype=float)[:, None] / substeps
        # Cubic Hermite basis (position and time derivative) at the end of each substep.
        self._h = np.hstack([2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2])
        self._dh = np.hstack([6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, 3 * s**2 - 2 * s]) / period
        self.q = np.zeros(len(self.lag))
        self.v = np.zeros(len(self.lag))

    def reset(self, q: np.ndarray, v: np.ndarray | None = None) -> None:
        """Start from joints q (7,) [rad] moving at v (7,) [rad/s] (at rest by default)."""
        self.q = np.asarray(q, dtype=float).copy()
        self.v = np.zeros_like(self.q) if v is None else np.asarray(v, dtype=float).copy()

    def plan(self, q_goal: np.ndarray) -> np.ndarray:
        """Set-points (substeps, 7) taking the servos from the last goal to `q_goal` [rad] in one period."""
        q0, v0, T = self.q, self.v, self.period
        v1 = (q_goal - q0) / T  # arrive with the step's mean velocity, as franky passes a waypoint
        coeff = np.stack([q0, T * v0, q_goal, T * v1])  # (4, 7)
        ctrl = self._h @ coeff + self.lag * (self._dh @ coeff)
        self.q, self.v = np.asarray(q_goal, dtype=float).copy(), v1
        return ctrl
