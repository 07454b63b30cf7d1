"""Camera frames + robot state -> the observation dict a policy's `ShapeMeta` asks for.

Images go through `toto_robot.preprocess.prepare_image` (the function sim observations use), so
a policy trained in sim or on teleop data sees identically cropped and resized pixels here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hardware.camera import CameraFrame
from hardware.robot import RobotState
from toto_robot.preprocess import prepare_image
from toto_robot.spec import ShapeMeta, SpecError

STATE_KEYS = ("eef_pos", "eef_quat", "gripper_width", "joint_pos")  # what RobotState.as_obs gives


def check_sources(shape_meta: ShapeMeta, camera_keys: list[str]) -> None:
    """Fail at start (not mid-rollout) when an observation key has no camera or state field."""
    missing_cams = [k for k in shape_meta.rgb_keys if k not in camera_keys]
    missing_low = [k for k in shape_meta.low_dim_keys if k not in STATE_KEYS]
    unsupported = [k for k, s in shape_meta.obs.items() if s.kind not in ("rgb", "low_dim")]
    if missing_cams or missing_low or unsupported:
        raise SpecError(
            f"policy observation keys without a source: cameras {missing_cams} (configured {camera_keys}), "
            f"state {missing_low}, unsupported kinds {unsupported}"
        )


def build_observation(shape_meta: ShapeMeta, frames: Mapping[str, CameraFrame], state: RobotState) -> dict[str, np.ndarray]:
    """Unbatched obs: rgb keys (H, W, 3) uint8 at the spec's size; low-dim keys float32 (spec shape)."""
    low = state.as_obs()
    obs: dict[str, np.ndarray] = {}
    for key, spec in shape_meta.obs.items():
        if spec.kind == "rgb":
            h, w = spec.shape[:2]
            if h != w:
                raise SpecError(f"{key!r}: prepare_image makes square images, spec asks {spec.shape}")
            obs[key] = prepare_image(frames[key].color, h)
        else:
            obs[key] = np.asarray(low[key], dtype=spec.dtype).reshape(spec.shape)
    return shape_meta.check_obs(obs)
