"""Observation and action specs: the one place where keys, shapes and dtypes are written.

Environments, the episode store, encoders, policies and the hardware runner all read a
`ShapeMeta` instead of repeating shapes. A spec round-trips through plain dicts so it can be
stored in zarr attributes and checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toto_robot.cli import UserError

KINDS = ("rgb", "depth", "low_dim", "action", "meta")


class SpecError(UserError, ValueError):
    """An array does not match its spec (missing key, wrong shape or dtype, non-finite)."""


@dataclass(frozen=True)
class ArraySpec:
    """Shape (without time/batch dims), numpy dtype name and kind of one array."""

    shape: tuple[int, ...]
    dtype: str
    kind: str = "low_dim"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        object.__setattr__(self, "dtype", np.dtype(self.dtype).name)
        if self.kind not in KINDS:
            raise SpecError(f"unknown array kind {self.kind!r}; expected one of {KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype, "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ArraySpec:
        try:
            return cls(tuple(d["shape"]), d["dtype"], d.get("kind", "low_dim"))
        except KeyError as e:
            raise SpecError(f"array spec {dict(d)!r} lacks {e.args[0]!r}") from None

    def check(self, key: str, value: Any, batch_dims: int = 0) -> np.ndarray:
        """Return `value` as an array after checking shape and dtype; raise SpecError naming `key`."""
        arr = np.asarray(value)
        if arr.shape[batch_dims:] != self.shape or arr.ndim != batch_dims + len(self.shape):
            raise SpecError(
                f"{key!r}: expected shape {('*',) * batch_dims + self.shape}, got {arr.shape}"
            )
        if arr.dtype != np.dtype(self.dtype):
            raise SpecError(f"{key!r}: expected dtype {self.dtype}, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise SpecError(f"{key!r}: contains NaN or inf")
        return arr


@dataclass(frozen=True)
class ShapeMeta:
    """Observation keys -> ArraySpec, plus the action spec. Images are HxWx3 uint8."""

    obs: dict[str, ArraySpec]
    action: ArraySpec = field(default_factory=lambda: ArraySpec((7,), "float32", "action"))

    @property
    def rgb_keys(self) -> list[str]:
        return [k for k, s in self.obs.items() if s.kind == "rgb"]

    @property
    def low_dim_keys(self) -> list[str]:
        return [k for k, s in self.obs.items() if s.kind == "low_dim"]

    def data_spec(self) -> dict[str, ArraySpec]:
        """Arrays an episode holds: every observation key plus `action`."""
        return {**self.obs, "action": self.action}

    def check_obs(self, obs: Mapping[str, Any], batch_dims: int = 0) -> dict[str, np.ndarray]:
        missing = [k for k in self.obs if k not in obs]
        if missing:
            raise SpecError(f"observation lacks keys {missing}; has {sorted(obs)}")
        return {k: s.check(k, obs[k], batch_dims) for k, s in self.obs.items()}

    def check_action(self, action: Any, batch_dims: int = 0) -> np.ndarray:
        return self.action.check("action", np.asarray(action, dtype=self.action.dtype), batch_dims)

    def to_dict(self) -> dict[str, Any]:
        return {"obs": {k: s.to_dict() for k, s in self.obs.items()}, "action": self.action.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ShapeMeta:
        if "obs" not in d or "action" not in d:
            raise SpecError(f"shape meta needs 'obs' and 'action', got keys {sorted(d)}")
        return cls(
            obs={k: ArraySpec.from_dict(v) for k, v in d["obs"].items()},
            action=ArraySpec.from_dict(d["action"]),
        )


EEF_QUAT_REFERENCE = (0.0, 1.0, 0.0, 0.0)  # w-x-y-z: gripper pointing down, the Franka's home orientation


def franka_shape_meta(image_keys: list[str], image_size: int) -> ShapeMeta:
    """The observation/action spec of a Franka + hand rig, in sim and on the robot.

    One `<camera>_image` rgb key per camera (image_size^2 x 3 uint8) and the robot state:
    eef_pos (3) [m], eef_quat (4) w-x-y-z with the sign of `EEF_QUAT_REFERENCE`'s hemisphere
    (continuous; see `toto_robot.rotations.quat_canonical`), gripper_width (1) [m], joint_pos (7)
    [rad]; action (7) float32 in [-1, 1] (`toto_robot.action`).
    """
    obs = {k: ArraySpec((image_size, image_size, 3), "uint8", "rgb") for k in image_keys}
    obs.update(eef_pos=ArraySpec((3,), "float32"), eef_quat=ArraySpec((4,), "float32"),
               gripper_width=ArraySpec((1,), "float32"), joint_pos=ArraySpec((7,), "float32"))
    return ShapeMeta(obs=obs, action=ArraySpec((7,), "float32", "action"))


def check_finite_action(action: Any, dim: int) -> np.ndarray:
    """float64 copy of a `dim`-vector action; SpecError on wrong size, NaN or inf."""
    arr = np.asarray(action, dtype=np.float64)
    if arr.shape != (dim,):
        raise SpecError(f"action must have shape ({dim},), got {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise SpecError(f"action has NaN/inf at indices {np.flatnonzero(bad).tolist()}: {arr}")
    return arr
