"""Rollouts and teleop episodes into the shared zarr episode store.

Observations and actions use the policy's `ShapeMeta` (the same keys as sim collection); the
per-step timestamps and runner status are extras, so real data can be re-used for training and
latency problems can be found after the fact. Action recorded = the action the safety filter
let through (`SentCommand.action`), with the policy's raw output kept as `policy_action`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from toto_robot.episode_store import EpisodeStore, EpisodeStoreError
from toto_robot.spec import ArraySpec, ShapeMeta

# status per step
SENT, SKIPPED, REFUSED, DRY_RUN = 1, 0, -1, 2
# success label per episode (repeated on every step of it)
SUCCESS, FAILURE, UNLABELLED = 1, 0, -1


def rollout_extras(shape_meta: ShapeMeta, camera_keys: list[str]) -> dict[str, ArraySpec]:
    """Extra per-step arrays: monotonic host times [s], device times [s], latencies [ms], flags."""
    scalar = ArraySpec((1,), "float64", "meta")
    extras = {
        "t_tick": scalar,  # scheduled tick time
        "t_state": scalar,  # robot state received
        "t_state_device": scalar,  # robot controller clock (NaN-free: -1 when the backend has none)
        "t_command": scalar,  # command left the process (-1 when none was sent)
        "inference_ms": scalar,
        "policy_action": ArraySpec(shape_meta.action.shape, "float32", "meta"),
        "status": ArraySpec((1,), "int8", "meta"),
        "success": ArraySpec((1,), "int8", "meta"),
    }
    for key in camera_keys:
        extras[f"t_frame_{key}"] = scalar  # host receipt time of the frame used
        extras[f"t_frame_device_{key}"] = scalar
    return extras


def open_rollout_store(
    path: str | os.PathLike, shape_meta: ShapeMeta, camera_keys: list[str], attrs: Mapping[str, Any]
) -> EpisodeStore:
    """Open (spec and extras must match) or create the store; fails before any motion if they differ."""
    extras = rollout_extras(shape_meta, camera_keys)
    store = EpisodeStore.open_or_create(path, shape_meta, extras=extras, attrs=attrs)
    want = {**shape_meta.data_spec(), **extras}
    if store.data_spec != want:
        diff = sorted(set(store.data_spec) ^ set(want)) or [k for k in want if store.data_spec[k] != want[k]]
        raise EpisodeStoreError(f"{path}: store arrays differ from this run's ({diff}); use a new store path")
    return store


class EpisodeBuffer:
    """Per-step rows of one episode, turned into time-major arrays for `EpisodeStore.add_episode`."""

    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in keys}

    def __len__(self) -> int:
        return len(self.rows[self.keys[0]]) if self.keys else 0

    def append(self, row: Mapping[str, Any]) -> None:
        missing = [k for k in self.keys if k not in row]
        if missing:
            raise KeyError(f"episode row lacks {missing}")
        for k in self.keys:
            self.rows[k].append(np.asarray(row[k]))

    def arrays(self, success: int = UNLABELLED) -> dict[str, np.ndarray]:
        out = {k: np.stack(v) for k, v in self.rows.items() if k != "success"}
        if "success" in self.rows:
            out["success"] = np.full((len(self), 1), success, dtype=np.int8)
        return out


def scalar(x: float, dtype: str = "float64") -> np.ndarray:
    return np.array([x], dtype=dtype)
