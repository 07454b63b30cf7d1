"""Quaternion helpers (w-x-y-z, the project's order) shared by the action convention, the env and the robot.

Small and numpy-only so the safety filter runs and is tested without franky or scipy.
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """Unit quaternion with w >= 0 (one of the two antipodal representatives)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"not a valid quaternion: {q}")
    q = q / n
    return -q if q[0] < 0 else q


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b (apply b, then a)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def quat_conj(q: np.ndarray) -> np.ndarray:
    return np.array([q[0], -q[1], -q[2], -q[3]])


def quat_from_rotvec(v: np.ndarray) -> np.ndarray:
    """Axis-angle (3,) rad -> unit quaternion."""
    v = np.asarray(v, dtype=np.float64)
    angle = np.linalg.norm(v)
    if angle < 1e-12:
        return np.array([1.0, *(0.5 * v)]) / np.sqrt(1.0 + 0.25 * angle**2)
    axis = v / angle
    return np.array([np.cos(angle / 2), *(np.sin(angle / 2) * axis)])


def rotvec_from_quat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion -> axis-angle (3,) rad with angle in [0, pi]."""
    q = quat_normalize(q)
    s = np.linalg.norm(q[1:])
    if s < 1e-12:
        return 2.0 * q[1:]
    return 2.0 * np.arctan2(s, q[0]) * q[1:] / s


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_normalize(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def quat_angle(a: np.ndarray, b: np.ndarray) -> float:
    """Rotation angle [rad] between two orientations."""
    d = abs(float(np.dot(quat_normalize(a), quat_normalize(b))))
    return 2.0 * float(np.arccos(min(1.0, d)))


def quat_canonical(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Unit quaternion of `q` with the sign that puts it in `reference`'s hemisphere (dot >= 0).

    q and -q are one orientation. Fixing w >= 0 flips the sign wherever w crosses 0 (the Franka's
    pointing-down home has w = 0); choosing the sign relative to a fixed reference orientation is
    continuous for every orientation within 180 degrees of it, which is all a policy observes.
    """
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-9:
        raise ValueError(f"not a valid quaternion: {q}")
    q = q / n
    return -q if float(np.dot(q, reference)) < 0 else q
