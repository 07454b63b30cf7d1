"""Observation and action normalization fitted on the training data and stored in the checkpoint.

Low-dim observations are standardised (mean / std, std floored so near-constant dimensions are
not blown up); actions are scaled per dimension from [min, max] seen in training to [-1, 1], the
range robomimic's tanh-squashed actor outputs, so an unnormalized prediction never leaves the
range of the demonstrations. `eef_quat` is put in the hemisphere of the home orientation first
(q and -q are one orientation; the sign must not jump between steps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toto_robot.rotations import quat_canonical
from toto_robot.spec import EEF_QUAT_REFERENCE

STD_FLOOR = 1e-2  # in the key's units (m, quaternion components, ...)
RANGE_FLOOR = 1e-4  # half-range floor of an action dimension


def canonical_low_dim(key: str, x: np.ndarray) -> np.ndarray:
    """float32 copy of low-dim rows (..., D); eef_quat with a continuous sign (`quat_canonical`)."""
    x = np.asarray(x, dtype=np.float32)
    if key == "eef_quat":
        flat = x.reshape(-1, x.shape[-1])
        x = np.stack([quat_canonical(q, EEF_QUAT_REFERENCE) for q in flat]).astype(np.float32).reshape(x.shape)
    return x


@dataclass
class Normalizers:
    """obs: key -> (mean, std) of low-dim keys; action_min / action_max per dimension."""

    obs: dict[str, tuple[np.ndarray, np.ndarray]]
    action_min: np.ndarray
    action_max: np.ndarray

    @classmethod
    def fit(cls, low_dim: Mapping[str, np.ndarray], actions: np.ndarray) -> Normalizers:
        """low_dim: key -> (N, D) rows already through `canonical_low_dim`; actions (N, A)."""
        if len(actions) == 0:
            raise ValueError("cannot fit normalizers on an empty dataset")
        obs = {k: (v.mean(0).astype(np.float32), np.maximum(v.std(0), STD_FLOOR).astype(np.float32)) for k, v in low_dim.items()}
        return cls(obs, actions.min(0).astype(np.float32), actions.max(0).astype(np.float32))

    def normalize_obs(self, key: str, x: np.ndarray) -> np.ndarray:
        mean, std = self.obs[key]
        return ((x - mean) / std).astype(np.float32)

    @property
    def _centre_half(self) -> tuple[np.ndarray, np.ndarray]:
        return (self.action_max + self.action_min) / 2, np.maximum((self.action_max - self.action_min) / 2, RANGE_FLOOR)

    def normalize_action(self, a: np.ndarray) -> np.ndarray:
        centre, half = self._centre_half
        return ((a - centre) / half).astype(np.float32)

    def unnormalize_action(self, a: np.ndarray) -> np.ndarray:
        """Normalized (..., A) -> action units, clipped to the range seen in training."""
        centre, half = self._centre_half
        return np.clip(a * half + centre, self.action_min, self.action_max).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"obs": {k: {"mean": m.tolist(), "std": s.tolist()} for k, (m, s) in self.obs.items()},
                "action": {"min": self.action_min.tolist(), "max": self.action_max.tolist()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizers:
        try:
            obs = {k: (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32)) for k, v in d["obs"].items()}
            return cls(obs, np.asarray(d["action"]["min"], np.float32), np.asarray(d["action"]["max"], np.float32))
        except (KeyError, TypeError) as e:
            raise ValueError(f"normalizers lack {e}: {dict(d)!r:.200}") from None
