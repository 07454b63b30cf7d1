"""Reconstruction grid image: originals on odd rows, their encode -> decode reconstructions below."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image


def recon_grid(originals: np.ndarray, recons: np.ndarray, cols: int = 8) -> np.ndarray:
    """originals, recons: (N, H, W, 3) uint8 -> one (2 * rows * H, cols * W, 3) uint8 image."""
    if originals.shape != recons.shape:
        raise ValueError(f"grid: shapes differ {originals.shape} vs {recons.shape}")
    n, h, w, _ = originals.shape
    cols = max(1, min(cols, n))
    rows = -(-n // cols)
    out = np.zeros((2 * rows * h, cols * w, 3), np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[2 * r * h : (2 * r + 1) * h, c * w : (c + 1) * w] = originals[i]
        out[(2 * r + 1) * h : (2 * r + 2) * h, c * w : (c + 1) * w] = recons[i]
    return out


def save_recon_grid(path: str | os.PathLike, originals: np.ndarray, recons: np.ndarray, cols: int = 8) -> None:
    """Write the grid as PNG (temp + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    Image.fromarray(recon_grid(originals, recons, cols)).save(tmp)
    os.replace(tmp, path)
