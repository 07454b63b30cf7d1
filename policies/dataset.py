"""Training batches for robomimic from a zarr episode store.

robomimic's own dataset reads hdf5 only; this one reads `toto_robot.episode_store` stores and
hands robomimic the batch layout its algorithms take, `{"obs": {k: (B, T, ...)}, "actions":
(B, T, A)}`, from windows around each step t of each training episode: `before` steps of
observation history (BC-Transformer's context) and `after` future steps (BC-RNN's sequence,
action chunks), both padded at episode edges by repeating the first / last step, as robomimic
pads. Camera keys read by the Toto core with `history` K > 1 hold the K frames up to each
window step (edge-padded the same way), or the cached token features of that history.

Everything the chosen episodes need is held in memory (normalized low-dim rows, actions,
frames or cached features), so a batch is a few numpy gathers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policies.encoders import random_shift
from policies.normalize import Normalizers, canonical_low_dim
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import SpecError


@dataclass
class DemoData:
    """Rows of the chosen episodes, concatenated. low_dim: canonical (not yet normalized)."""

    low_dim: dict[str, np.ndarray]  # key -> (N, D) float32
    cameras: dict[str, np.ndarray]  # key -> (N, H, W, 3) uint8 frames, or (N, K*256, D) float16 features
    actions: np.ndarray  # (N, A) float32, raw
    episode_ends: np.ndarray  # (E,) int64 cumulative, over the chosen episodes
    episodes: list[int]  # indices in the source store

    @property
    def n_steps(self) -> int:
        return len(self.actions)


def load_demos(store: EpisodeStore, episodes: Sequence[int], low_dim_keys: Sequence[str],
               camera_keys: Sequence[str], camera_rows: dict[str, np.ndarray] | None = None) -> DemoData:
    """Read `episodes` of `store`. camera_rows: per camera, precomputed per-store-row arrays
    (cached features) to use instead of the frames."""
    if store.n_episodes == 0:
        raise SpecError(f"{store.path}: the episode store holds no episodes")
    if not episodes:
        raise ValueError("no training episodes chosen")
    bad = [e for e in episodes if not 0 <= e < store.n_episodes]
    if bad:
        raise ValueError(f"episodes {bad[:5]} out of range for {store.n_episodes} stored episodes")
    missing = [k for k in [*low_dim_keys, *camera_keys] if k not in store.data_spec]
    if missing:
        raise SpecError(f"{store.path} lacks {missing} (it holds {sorted(store.data_spec)}); "
                        "oracle policies need the privileged extras collect_demos.py stores")
    slices = [store.episode_slice(e) for e in episodes]
    rows = np.concatenate([np.arange(s.start, s.stop) for s in slices])
    n = store.n_steps
    low_dim = {k: canonical_low_dim(k, np.asarray(store.array(k)[:n])[rows]) for k in low_dim_keys}
    cameras = {}
    for k in camera_keys:
        src = (camera_rows or {}).get(k)
        cameras[k] = src[rows] if src is not None else _take_rows(store.array(k), rows)
    actions = np.asarray(store.array("action")[:n], dtype=np.float32)[rows]
    ends = np.cumsum([s.stop - s.start for s in slices]).astype(np.int64)
    return DemoData(low_dim, cameras, actions, ends, list(episodes))


def _take_rows(arr: Any, rows: np.ndarray) -> np.ndarray:
    """Rows of a zarr array, read in contiguous runs (one chunk per frame: avoid per-row calls)."""
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.concatenate([np.asarray(arr[int(r[0]) : int(r[-1]) + 1]) for r in np.split(rows, breaks)])


class WindowBatches:
    """Shuffled batches of windows over `data`; an iterable with `len` as robomimic's run_epoch takes.

    before/after: window steps before and after t; history: camera key -> K frames per window step
    (only for raw frames; cached features already hold their history). featurize: camera key ->
    frames (N, [K,] H, W, 3) -> token features, for frozen-encoder cameras read as frames (no
    cache, e.g. with `shift`-pixel random-shift augmentation, the same shift for a sample's K
    frames). Shuffling is seeded by (seed, epoch), so a resumed run draws the same batches as an
    uninterrupted one.
    """

    def __init__(self, data: DemoData, normalizers: Normalizers, batch_size: int, before: int = 0, after: int = 0,
                 history: dict[str, int] | None = None, seed: int = 0, drop_last: bool = False,
                 featurize: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None, shift: int = 0) -> None:
        if data.n_steps == 0:
            raise ValueError("the training data holds no steps")
        self.featurize, self.shift = dict(featurize or {}), shift
        self.data, self.batch_size, self.before, self.after = data, batch_size, before, after
        self.history = {k: v for k, v in (history or {}).items() if k in data.cameras and data.cameras[k].dtype == np.uint8}
        self.seed, self.epoch, self.drop_last = seed, 0, drop_last
        self.low_dim = {k: normalizers.normalize_obs(k, v) for k, v in data.low_dim.items()}
        self.actions = normalizers.normalize_action(data.actions)
        starts = np.concatenate([[0], data.episode_ends[:-1]])
        lengths = np.diff(data.episode_ends, prepend=0)
        self._start = np.repeat(starts, lengths)  # per row: first row of its episode
        self._end = np.repeat(data.episode_ends, lengths) - 1  # per row: last row of its episode

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = self.data.n_steps
        return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.data.n_steps)
        for i in range(len(self)):
            yield self.batch(order[i * self.batch_size : (i + 1) * self.batch_size])

    def batch(self, t: np.ndarray) -> dict[str, Any]:
        """Windows around rows `t` (B,) -> {"obs": {k: (B, T, ...)}, "actions": (B, T, A)} tensors."""
        offsets = np.arange(-self.before, self.after + 1)
        w = np.clip(t[:, None] + offsets[None, :], self._start[t][:, None], self._end[t][:, None])  # (B, T)
        obs = {k: torch.from_numpy(v[w]) for k, v in self.low_dim.items()}
        for k, arr in self.data.cameras.items():
            kk = self.history.get(k, 1)
            if kk == 1:
                obs[k] = torch.from_numpy(arr[w])
            else:  # (B, T, K, ...): the K frames up to each window step, edge-padded at the episode start
                h = np.maximum(w[..., None] + np.arange(1 - kk, 1), self._start[t][:, None, None])
                obs[k] = torch.from_numpy(arr[h])
            if k in self.featurize:
                obs[k] = self._features(k, obs[k], kk)
        return {"obs": obs, "actions": torch.from_numpy(self.actions[w])}

    def _features(self, key: str, frames: torch.Tensor, k: int) -> torch.Tensor:
        """(B, T, [K,] H, W, 3) frames -> (B, T, K * 256, D) features, shifted first if asked."""
        b, t = frames.shape[:2]
        x = frames.reshape(b * t, k, *frames.shape[-3:])
        if self.shift:
            # the K frames as channels: one shift per sample, the same for its whole history
            stacked = x.permute(0, 2, 3, 1, 4).reshape(b * t, *x.shape[2:4], k * 3)
            x = random_shift(stacked, self.shift, channels_last=True).reshape(b * t, *x.shape[2:4], k, 3).permute(0, 3, 1, 2, 4)
        feats = self.featurize[key](x if k > 1 else x[:, 0])
        return feats.reshape(b, t, *feats.shape[1:])
