"""Scripted cube-picking expert using privileged state (the cube pose) from a CubePickEnv.

Phases: approach (above the cube, yaw aligned to a cube face) -> descend -> close -> lift; it
goes back to approach if the cube is not in the hand while lifting. Gaussian action noise keeps
demonstrations from being identical. Implements toto_robot.policy.Policy.

Actions follow the env's action convention (`env.action_convention`): each asks the target to
move by the remaining error to the phase's goal (capped at one full-scale step), measured from
the observed TCP, which the arm brings onto each target within the step. The demonstrations stay
inside the robot's default safety limits (floor guard, yaw relative to the arm's azimuth), so
they replay on the robot unclipped.
"""

from __future__ import annotations

from collections.abc import Mapping

import gymnasium as gym
import mujoco
import numpy as np

from envs.controller import quat_error
from toto_robot.scene import FLOOR_GUARD

APPROACH_HEIGHT = 0.08  # TCP above the cube top while aligning [m]
LIFT_Z = 0.25  # TCP height to carry the cube to [m]
GRASP_DEPTH = 0.025  # TCP below the cube top when grasping [m]
HOLD_NOISE_SCALE = 0.3  # action noise once the cube is grasped, relative to `noise`
CLOSE_STEPS = 3  # minimum control steps closing; then until the fingers stop moving
# Largest hand yaw relative to the azimuth of the cube [rad]: under the safety filter's max_yaw
# (1.0 rad, conf/safety/default.yaml), which keeps joint 7 off its limits on the robot.
MAX_RELATIVE_YAW = 0.8


def _wrap(angle: float) -> float:
    """Angle into [-pi, pi) [rad]."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def _wrap_quarter(angle: float) -> float:
    """Angle mod 90 degrees into [-45, 45) degrees [rad] (a cube looks the same every quarter turn)."""
    return (angle + np.pi / 4) % (np.pi / 2) - np.pi / 4


class ScriptedExpert:
    """Policy over a CubePickEnv (or a gymnasium wrapper of one); `noise` is the action std.
    After each `select_action`, `clean_action` holds the action before the noise was added."""

    done = False  # the env decides when an episode ends

    def __init__(self, env: gym.Env, noise: float = 0.05, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.shape_meta = self.env.shape_meta
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.phase = "approach"
        self._closing = 0
        self._last_width = 1.0
        self._grasp_quat_held = np.array([0.0, 1.0, 0.0, 0.0])

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        conv = self.env.action_convention
        cube_pos, cube_quat, half = self.env.cube_pose()
        eef = np.asarray(obs["eef_pos"], dtype=np.float64)
        eef_quat = np.asarray(obs["eef_quat"], dtype=np.float64)
        target_quat = self._grasp_quat(cube_quat, eef_quat, cube_pos)
        rot_err = quat_error(target_quat, eef_quat)
        # Pads (1.7 cm tall) centred on the TCP; keep the cube top 2.5 cm under the TCP so it
        # never touches the palm, and the TCP on or above the floor guard (fingertips above the table).
        grasp_z = max(cube_pos[2] + half - GRASP_DEPTH, FLOOR_GUARD)
        above = np.array([cube_pos[0], cube_pos[1], cube_pos[2] + half + APPROACH_HEIGHT])
        xy_err = np.linalg.norm(eef[:2] - cube_pos[:2])
        gripper = -1.0

        if self.phase == "approach":
            target = above
            if xy_err < 0.01 and abs(eef[2] - above[2]) < 0.03 and np.linalg.norm(rot_err) < 0.08:
                self.phase = "descend"
        if self.phase == "descend":
            target = np.array([cube_pos[0], cube_pos[1], grasp_z])
            if xy_err > 0.025:
                self.phase, target = "approach", above
            elif eef[2] - grasp_z < 0.006:
                self.phase = "close"
        if self.phase == "close":
            target, gripper = np.array([cube_pos[0], cube_pos[1], grasp_z]), 1.0
            self._closing += 1
            width = float(obs["gripper_width"][0])
            settled = abs(width - self._last_width) < 0.001
            self._last_width = width
            if self._closing >= CLOSE_STEPS and settled:
                self.phase, self._closing = "lift", 0
        if self.phase == "lift":
            target, gripper = np.array([eef[0], eef[1], LIFT_Z]), 1.0
            if np.linalg.norm(eef - cube_pos) > 0.04 + half:  # the cube slipped out: start over
                self.phase, target, gripper = "approach", above, -1.0

        if self.phase in ("approach", "descend"):
            self._grasp_quat_held = target_quat
            rotvec, noise = rot_err, self.noise
        else:
            # Fingers closed: hold the grasp orientation (chasing the yaw of a cube in the hand
            # would twist it further) and shake it less.
            rotvec, noise = quat_error(self._grasp_quat_held, eef_quat), self.noise * HOLD_NOISE_SCALE
        action = conv.to_action(target - eef, rotvec, gripper).astype(np.float64)
        self.clean_action = np.clip(action, -1.0, 1.0).astype(np.float32)
        action[:6] += self.rng.normal(0.0, noise, 6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    @staticmethod
    def _grasp_quat(cube_quat: np.ndarray, eef_quat: np.ndarray, cube_pos: np.ndarray) -> np.ndarray:
        """Pointing down, finger axis (hand y) along the cube face nearest the current yaw, or
        the next face toward the cube's azimuth when that one is more than MAX_RELATIVE_YAW off it."""
        w, x, y, z = cube_quat
        cube_yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        mat = np.empty(9)
        mujoco.mju_quat2Mat(mat, eef_quat)
        hand_y = mat.reshape(3, 3)[:, 1]
        finger_yaw = np.arctan2(hand_y[1], hand_y[0])
        # Pointing-down quaternion (0, 1, 0, 0) has hand y at -90 deg; rotate about world z from there.
        alpha = finger_yaw + _wrap_quarter(cube_yaw - finger_yaw) + np.pi / 2
        off = _wrap(alpha - np.arctan2(cube_pos[1], cube_pos[0]))
        if abs(off) > MAX_RELATIVE_YAW:
            alpha -= np.sign(off) * np.pi / 2
        quat = np.empty(4)
        mujoco.mju_mulQuat(quat, np.array([np.cos(alpha / 2), 0, 0, np.sin(alpha / 2)]), np.array([0.0, 1.0, 0.0, 0.0]))
        return quat
