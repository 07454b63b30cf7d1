"""Task-space control of the arm: damped-least-squares differential IK feeding joint servos.

Once per control step, `joint_goal` runs a few DLS iterations on a kinematic scratch copy of the
arm (starting from the measured joints, so a blocked arm never winds up) with a null-space pull
toward the rest posture (the FR3 is redundant; without it the elbow drifts). The env then
moves the position-servo set-points from the previous goal to the new one in equal increments at
every physics substep, so the torque-limited servos (87/12 Nm) never see a step change.
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


def axis_angle_quat(rotvec: np.ndarray) -> np.ndarray:
    """w-x-y-z quaternion of an axis-angle vector [rad]."""
    angle = float(np.linalg.norm(rotvec))
    quat = np.array([1.0, 0.0, 0.0, 0.0])
    if angle > 1e-12:
        mujoco.mju_axisAngle2Quat(quat, rotvec / angle, angle)
    return quat


class DiffIKController:
    """Joint goals that put the `site_id` site at a target pose.

    `arm_qpos` / `arm_dof` index the 7 arm joints in qpos and qvel; `q_rest` (7,) [rad] is the
    posture the null-space term pulls toward.
    """

    def __init__(self, model: mujoco.MjModel, site_id: int, arm_qpos: np.ndarray, arm_dof: np.ndarray,
                 q_rest: np.ndarray, damping: float = 0.03, iters: int = 4, nullspace_gain: float = 0.05) -> None:
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
