"""Image preprocessing shared by sim observations and real cameras.

Training data from MuJoCo and frames from a RealSense both pass through `prepare_image`, so a
policy sees identically cropped and resized pixels in sim, in teleop data and on the robot.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def center_crop_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the largest centred square."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return top, left, top + side, left + side


def prepare_image(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> size x size x 3 uint8: centre square crop, then area resize.

    A frame already `size` x `size` is returned unchanged (the sim renders at the policy size).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    top, left, bottom, right = center_crop_box(h, w)
    crop = np.ascontiguousarray(image[top:bottom, left:right])
    # BOX filtering = area averaging, the anti-aliased choice when shrinking camera frames.
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX))


def crop_intrinsics(k: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """3x3 intrinsics after `prepare_image` of an HxW frame to `size`."""
    top, left, bottom, _ = center_crop_box(height, width)
    scale = size / (bottom - top)
    out = np.array(k, dtype=np.float64, copy=True)
    out[0, 2] -= left
    out[1, 2] -= top
    out[:2] *= scale
    return out
