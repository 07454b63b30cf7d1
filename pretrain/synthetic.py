"""Synthetic moving-shapes token videos for tests and smoke runs (no dVAE needed).

Each video shows 1-3 coloured squares bouncing on a dark background, rendered at 64x64 and
"tokenized" by quantizing each 4x4 patch's mean colour to 4 levels per channel: a 16x16 grid of
codes in [0, 64), the same (T, 256) layout the dVAE produces. Motion makes the next frame
predictable from the previous ones, so a transformer's loss falls quickly. Written through the
real token shard format so training reads it exactly like tokenized data.
"""

from __future__ import annotations

import numpy as np

from pretrain.data.token_shards import GRID, TokenShardWriter

RES = 64  # render size; GRID x GRID patches of RES // GRID pixels
LEVELS = 4  # per colour channel -> LEVELS**3 = 64 codes
VOCAB = LEVELS**3


def quantize(frames: np.ndarray) -> np.ndarray:
    """frames: (T, RES, RES, 3) float in [0, 1] -> (T, 256) uint16 codes < VOCAB."""
    p = RES // GRID
    means = frames.reshape(len(frames), GRID, p, GRID, p, 3).mean(axis=(2, 4))
    q = np.clip((means * LEVELS).astype(np.int64), 0, LEVELS - 1)
    codes = (q[..., 0] * LEVELS + q[..., 1]) * LEVELS + q[..., 2]
    return codes.reshape(len(frames), GRID * GRID).astype(np.uint16)


def moving_shapes(n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """(n_frames, 256) uint16 codes of squares moving at constant velocity, bouncing off walls."""
    frames = np.zeros((n_frames, RES, RES, 3), np.float32)
    frames[:] = rng.uniform(0.0, 0.2, 3)
    for _ in range(rng.integers(1, 4)):
        size = int(rng.integers(12, 24))
        pos = rng.uniform(0, RES - size, 2)
        vel = rng.choice([-1, 1], 2) * rng.uniform(2.0, 4.0, 2)
        colour = rng.uniform(0.5, 1.0, 3)
        for t in range(n_frames):
            y, x = pos.astype(int)
            frames[t, y : y + size, x : x + size] = colour
            pos = pos + vel
            for a in range(2):  # reflect at the borders
                if not 0 <= pos[a] <= RES - size:
                    vel[a] = -vel[a]
                    pos[a] = np.clip(pos[a], 0, RES - size)
    return quantize(frames)


def write_synthetic_shards(
    root: str, n_videos: int = 16, n_frames: int = 32, n_images: int = 0, seed: int = 0
) -> None:
    """Write `n_videos` videos of `n_frames` frames and `n_images` still images as token shards."""
    rng = np.random.default_rng(seed)
    with TokenShardWriter(root, rank=0, vocab_size=VOCAB) as writer:
        for i in range(n_videos):
            writer.add_clip(moving_shapes(n_frames, rng), source=f"synthetic/video{i:05d}", clip_id="0",
                            fps=10.0, kind="video")
            writer.finish_source(f"synthetic/video{i:05d}")
        for i in range(n_images):
            writer.add_clip(moving_shapes(1, rng), source=f"synthetic/image{i:05d}", clip_id="0", kind="image")
            writer.finish_source(f"synthetic/image{i:05d}")
