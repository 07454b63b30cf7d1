"""Labelled probe datasets: frames (N, S, S, 3) uint8 with targets, split into train and val.

Two kinds, registered by name for the `dataset.kind` config key:
- "image_folder": `<path>/<class>/**/*.{jpg,jpeg,png}`, classification over the sorted class names.
- "episodes": zarr episode stores written by the sim collector; regress a low-dim key (the cube
  position, (3,) float32 in metres) and, with `yaw_key`, the cube's yaw modulo its 90-degree
  symmetry from one or more cameras. Split by episode so that near-identical frames of one
  episode never sit on both sides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from toto_robot.episode_store import EpisodeStore
from toto_robot.preprocess import prepare_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class ProbeDatasetConfig:
    """kind: "image_folder" or "episodes". paths: folder(s) or episode store(s)."""

    kind: str = "image_folder"
    paths: list[str] = field(default_factory=list)
    image_keys: list[str] = field(default_factory=lambda: ["agentview_image"])  # episodes: cameras, each its own 256 tokens
    target_key: str = "cube_pos"  # episodes: low-dim key to regress (metres for the cube position)
    yaw_key: str | None = None  # episodes: w-x-y-z quaternion key (cube_quat): adds yaw mod 90 deg as (cos 4y, sin 4y)
    frame_stride: int = 5  # episodes: every k-th step
    val_fraction: float = 0.2
    max_samples: int | None = None  # per split, after the split
    seed: int = 0


@dataclass
class ProbeData:
    """Frames (N, S, S, 3) or, for several cameras, (N, K, S, S, 3) uint8; targets (N,) int64
    classes or (N, C) float32 values. `pose`: regression columns are [x, y, z] in metres, followed
    by [cos 4*yaw, sin 4*yaw] when `yaw` (median position/yaw errors are reported)."""

    task: str  # "classification" or "regression"
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str] | None = None
    pose: bool = False
    yaw: bool = False

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else int(self.train_y.shape[1])


def load_probe_data(cfg: ProbeDatasetConfig, image_size: int) -> ProbeData:
    if cfg.kind not in _LOADERS:
        raise ValueError(f"unknown probe dataset kind {cfg.kind!r}; expected one of {sorted(_LOADERS)}")
    if not cfg.paths:
        raise ValueError("probe dataset: set dataset.paths to at least one folder or episode store")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction must be in (0, 1), got {cfg.val_fraction}")
    data = _LOADERS[cfg.kind](cfg, image_size)
    if cfg.max_samples:
        rng = np.random.default_rng(cfg.seed)
        for split in ("train", "val"):
            x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
            keep = np.sort(rng.permutation(len(x))[: cfg.max_samples])
            setattr(data, f"{split}_x", x[keep])
            setattr(data, f"{split}_y", y[keep])
    return data


def load_image_folder(cfg: ProbeDatasetConfig, image_size: int) -> ProbeData:
    """Class-per-subfolder images, centre-cropped and resized; random split stratified by class."""
    files: dict[str, list[Path]] = {}
    for root in map(Path, cfg.paths):
        if not root.is_dir():
            raise FileNotFoundError(f"probe image folder {root} does not exist")
        for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            imgs = sorted(p for p in cls_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files.setdefault(cls_dir.name, []).extend(imgs)
    classes = sorted(c for c, f in files.items() if f)
    if len(classes) < 2:
        raise ValueError(f"{cfg.paths}: need >= 2 class subfolders with images, found {classes}")
    rng = np.random.default_rng(cfg.seed)
    splits: dict[str, list[tuple[Path, int]]] = {"train": [], "val": []}
    for label, cls in enumerate(classes):
        order = rng.permutation(len(files[cls]))
        n_val = max(1, round(cfg.val_fraction * len(order)))
        for j, i in enumerate(order):
            splits["val" if j < n_val else "train"].append((files[cls][i], label))

    def read(items: list[tuple[Path, int]]) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([prepare_image(_read_rgb(p), image_size) for p, _ in items])
        return x, np.array([label for _, label in items], dtype=np.int64)

    (tx, ty), (vx, vy) = read(splits["train"]), read(splits["val"])
    return ProbeData("classification", tx, ty, vx, vy, classes)


def yaw_mod_90(quat: np.ndarray) -> np.ndarray:
    """Cube yaw [rad] in [-pi/4, pi/4) from (N, 4) w-x-y-z quaternions.

    A cube looks the same after any of its 24 rotations: the yaw is read off a cube axis lying
    closest to the table plane (the axis nearest world z is the 'up' one) and wrapped modulo 90
    degrees, so it stays defined when the cube is tipped onto another face."""
    q = np.asarray(quat, np.float64)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    # Columns of the rotation matrix = the cube's axes in the world frame, (N, 3 rows, 3 axes).
    r = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w)], 1),
        np.stack([2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w)], 1),
        np.stack([2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y)], 1),
    ], 2)
    flat = np.argmin(np.abs(r[:, 2, :]), axis=1)  # the axis closest to horizontal
    axis = r[np.arange(len(q)), :, flat]
    return (np.arctan2(axis[:, 1], axis[:, 0]) + np.pi / 4) % (np.pi / 2) - np.pi / 4


def load_episodes(cfg: ProbeDatasetConfig, image_size: int) -> ProbeData:
    """Every `frame_stride`-th frame of every episode; a random val_fraction of episodes is val."""
    per_episode: list[tuple[np.ndarray, np.ndarray]] = []
    if not cfg.image_keys:
        raise ValueError("probe dataset: image_keys must name at least one camera")
    keys = [*cfg.image_keys, cfg.target_key, *([cfg.yaw_key] if cfg.yaw_key else [])]
    for path in cfg.paths:
        store = EpisodeStore.open(path)
        for key in keys:
            if key not in store.data_spec:
                raise KeyError(f"{path}: no key {key!r} in the episode store; keys: {sorted(store.data_spec)}")
        for i in range(store.n_episodes):
            ep = store.get_episode(i, keys)
            n = len(ep[cfg.target_key][:: cfg.frame_stride])
            target = np.asarray(ep[cfg.target_key][:: cfg.frame_stride], np.float32).reshape(n, -1)
            if cfg.yaw_key:
                yaw = yaw_mod_90(ep[cfg.yaw_key][:: cfg.frame_stride])
                target = np.concatenate([target, np.stack([np.cos(4 * yaw), np.sin(4 * yaw)], 1)], 1).astype(np.float32)
            cams = [np.stack([prepare_image(f, image_size) for f in ep[k][:: cfg.frame_stride]]) for k in cfg.image_keys]
            per_episode.append((cams[0] if len(cams) == 1 else np.stack(cams, 1), target))
    if len(per_episode) < 2:
        raise ValueError(f"{cfg.paths}: need >= 2 episodes to split train/val, found {len(per_episode)}")
    order = np.random.default_rng(cfg.seed).permutation(len(per_episode))
    n_val = max(1, round(cfg.val_fraction * len(order)))
    val, train = order[:n_val], order[n_val:]

    def cat(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([per_episode[i][0] for i in idx]), np.concatenate([per_episode[i][1] for i in idx])

    (tx, ty), (vx, vy) = cat(train), cat(val)
    pose = cfg.target_key == "cube_pos"
    return ProbeData("regression", tx, ty, vx, vy, pose=pose, yaw=pose and bool(cfg.yaw_key))


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


_LOADERS = {"image_folder": load_image_folder, "episodes": load_episodes}
