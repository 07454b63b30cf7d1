"""The one action convention the simulator and the robot share.

A 7-D action in [-1, 1] means, at every control step (1 / control_hz s):

- [0:3] translation of the end-effector *target* in the robot base frame: the vector is clipped
  to [-1, 1] per axis, scaled by `max_translation` [m] and its length capped at `max_translation`
  (a full diagonal moves as far as a full single-axis action: one speed limit, in every direction);
- [3:6] axis-angle rotation of the target orientation in the base frame, scaled and capped the
  same way by `max_rotation` [rad];
- [6] gripper: > 0 closes, <= 0 opens.

Targets are integrated on the *previous target*, not on the measured pose, and may lead the
measured end effector by at most `max_lead` [m] (pressing on a table or a cube never winds the
target up). This is what a Franka executes faithfully at 10-20 Hz under franky: each target is
reached within the step unless a velocity limit binds, and `max_translation * control_hz` is
kept under the safety filter's speed limit so that a full-scale action is never cut.

`next_target` is the only implementation: the env's controller and the robot's safety filter
both call it. The convention is stored in every episode store (attrs key `ATTR_KEY`) and every
policy checkpoint, and data made under another convention is refused by `check_convention`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from toto_robot.rotations import quat_from_rotvec, quat_mul, quat_normalize
from toto_robot.spec import SpecError

ATTR_KEY = "action_convention"  # key in episode-store attrs and policy-checkpoint metadata
NAME = "eef_delta_target"  # v1 (before this module): translation aimed from the measured pose
VERSION = 2


class ActionConventionError(SpecError):
    """Data or a checkpoint was made under another action convention (or none is recorded)."""


@dataclass(frozen=True)
class ActionConvention:
    """What an action means (conf/action/*.yaml). m, rad, Hz."""

    control_hz: float = 10.0
    max_translation: float = 0.02  # m per step at full scale (0.2 m/s at 10 Hz)
    max_rotation: float = 0.04  # rad per step at full scale (0.4 rad/s at 10 Hz)
    max_lead: float = 0.04  # m the target may run ahead of the measured end effector
    name: str = NAME
    version: int = VERSION

    def __post_init__(self) -> None:
        bad = [k for k in ("control_hz", "max_translation", "max_rotation", "max_lead") if not float(getattr(self, k)) > 0]
        if bad:
            raise ValueError(f"action convention values must be positive: {bad}")

    @property
    def dim(self) -> int:
        return 7

    def at_rate(self, control_hz: float) -> ActionConvention:
        """The same full-scale speeds [m/s, rad/s] at another control rate (benches, tests)."""
        k = self.control_hz / control_hz
        return replace(self, control_hz=control_hz, max_translation=self.max_translation * k, max_rotation=self.max_rotation * k)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """(translation (3,) m, rotation vector (3,) rad, close gripper?) of one action."""
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        return (_cap(a[:3] * self.max_translation, self.max_translation),
                _cap(a[3:6] * self.max_rotation, self.max_rotation), bool(a[6] > 0))

    def next_target(self, ref_pos: np.ndarray, ref_quat: np.ndarray, action: np.ndarray,
                    measured_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        """The next end-effector target (pos (3,) m, quat (4,) w-x-y-z, close gripper?).

        ref_pos / ref_quat: the previous target (the measured pose after a reset or a stop);
        measured_pos: the end effector now, bounding how far the target may lead it.
        """
        delta, rotvec, close = self.step(action)
        measured = np.asarray(measured_pos, dtype=np.float64)
        pos = np.asarray(ref_pos, dtype=np.float64) + delta
        lead = pos - measured
        n = float(np.linalg.norm(lead))
        if n > self.max_lead:
            pos = measured + lead * (self.max_lead / n)
        quat = quat_normalize(quat_mul(quat_from_rotvec(rotvec), np.asarray(ref_quat, dtype=np.float64)))
        return pos, quat, close

    def to_action(self, delta: np.ndarray, rotvec: np.ndarray, gripper: float) -> np.ndarray:
        """The action (7,) float32 that asks for translation `delta` [m] and rotation `rotvec` [rad]
        (each clipped to what one step can do), gripper value in [-1, 1]."""
        a = np.concatenate([np.asarray(delta, float) / self.max_translation,
                            np.asarray(rotvec, float) / self.max_rotation, [gripper]])
        a[:3] = _cap(a[:3], 1.0)
        a[3:6] = _cap(a[3:6], 1.0)
        return np.clip(a, -1.0, 1.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ActionConvention:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ActionConventionError(f"unknown action convention keys {unknown}; known: {sorted(known)}")
        return cls(**dict(d))


def check_convention(stored: Mapping[str, Any] | None, expected: ActionConvention, what: str) -> None:
    """Raise ActionConventionError naming `what` unless `stored` (a to_dict()) equals `expected`."""
    if stored is None:
        raise ActionConventionError(
            f"{what} records no action convention: it was made before actions meant targets integrated "
            f"on the previous target ({NAME} v{VERSION}); its actions would move the arm differently. "
            f"Collect it again with this version."
        )
    want = expected.to_dict()
    got = dict(stored)
    diff = {k: (got.get(k), want.get(k)) for k in sorted(set(got) | set(want)) if got.get(k) != want.get(k)}
    if diff:
        lines = ", ".join(f"{k}: recorded {a!r}, expected {b!r}" for k, (a, b) in diff.items())
        raise ActionConventionError(f"{what} was made under another action convention ({lines})")


def _cap(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v * (limit / n) if n > limit else v
