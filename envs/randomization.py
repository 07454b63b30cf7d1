"""Seeded domain randomization of the cube_pick scene.

`sample_params` draws one episode's parameters from a numpy Generator into a flat dict of plain
arrays (so it can be stored in `get_state()` and replayed); `apply_params` writes them into the
MjModel. Nominal values are captured once so repeated resets do not drift.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import mujoco
import numpy as np

from envs.config import RandomizationConfig
from toto_robot.scene import CUBE_CENTER, CUBE_HALF, CUBE_RGBA, TABLE_RGBA, TABLE_TEXTURES, resize_cube


@dataclass
class Nominal:
    """Model values before any randomization."""

    cam_pos: np.ndarray
    cam_quat: np.ndarray
    light_pos: np.ndarray
    table_rgba: np.ndarray

    @classmethod
    def capture(cls, model: mujoco.MjModel, table_mat: int) -> Nominal:
        return cls(model.cam_pos.copy(), model.cam_quat.copy(), model.light_pos.copy(), model.mat_rgba[table_mat].copy())


def _random_rotation_quat(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    quat = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat, axis, np.deg2rad(rng.uniform(-max_deg, max_deg)))
    return quat


def sample_params(cfg: RandomizationConfig, rng: np.random.Generator, n_cameras: int, n_arm: int) -> dict[str, np.ndarray]:
    """One episode's randomization; with `enabled` false every value is nominal (cube centred)."""
    on = cfg.enabled
    p: dict[str, np.ndarray] = {}
    p["cube_xy"] = np.asarray(CUBE_CENTER) + (rng.uniform(-1, 1, 2) * [cfg.cube_x_range, cfg.cube_y_range] if on else 0.0)
    p["cube_yaw"] = np.array(rng.uniform(-np.pi / 4, np.pi / 4) if on and cfg.cube_yaw else 0.0)
    p["cube_half"] = np.array(rng.uniform(*cfg.cube_size) / 2 if on else CUBE_HALF)
    hue = rng.uniform()
    p["cube_rgba"] = np.array([*colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1), rng.uniform(0.6, 1)), 1.0]) if on and cfg.cube_color else np.array(CUBE_RGBA)
    p["table_rgba"] = np.array([*colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0, 0.4), rng.uniform(0.35, 0.9)), 1.0]) if on and cfg.table_color else np.array(TABLE_RGBA)
    p["table_texture"] = np.array(rng.integers(len(TABLE_TEXTURES)) if on and cfg.table_texture else 0)
    p["light_offset"] = rng.uniform(-1, 1, 3) * cfg.light_pos_jitter if on else np.zeros(3)
    p["light_level"] = np.array(rng.uniform(*cfg.light_intensity) if on else 0.7)
    p["cam_offset"] = rng.uniform(-1, 1, (n_cameras, 3)) * cfg.camera_pos_jitter if on else np.zeros((n_cameras, 3))
    p["cam_rot"] = np.stack([_random_rotation_quat(rng, cfg.camera_rot_jitter) if on else np.array([1.0, 0, 0, 0]) for _ in range(n_cameras)])
    p["arm_noise"] = rng.uniform(-1, 1, n_arm) * cfg.robot_qpos_noise if on else np.zeros(n_arm)
    return p


def apply_params(model: mujoco.MjModel, p: dict[str, np.ndarray], nominal: Nominal, cube_geom: int,
                 table_geom: int, table_mats: list[int], light: int) -> None:
    """Write episode parameters into the model (geometry, inertia, colours, light, cameras)."""
    resize_cube(model, float(p["cube_half"]))
    model.geom_rgba[cube_geom] = p["cube_rgba"]
    mat = table_mats[int(p["table_texture"])]
    model.geom_matid[table_geom] = mat
    model.mat_rgba[mat] = p["table_rgba"]
    model.light_pos[light] = nominal.light_pos[light] + p["light_offset"]
    model.light_diffuse[light] = float(p["light_level"])
    for cam in range(model.ncam):
        model.cam_pos[cam] = nominal.cam_pos[cam] + p["cam_offset"][cam]
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, p["cam_rot"][cam], nominal.cam_quat[cam])
        model.cam_quat[cam] = quat
