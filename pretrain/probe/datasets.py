"""Labelled probe datasets: frames (N, S, S, 3) uint8 with targets, split into train and val.

Two kinds, registered by name for the `dataset.kind` config key:
- "image_folder": `<path>/<class>/**/*.{jpg,jpeg,png}`, classification over the sorted class names.
- "episodes": zarr episode stores written by the sim collector; regress a low-dim key (the cube
  position, (3,) float32 in metres) from one camera. Split by episode so that near-identical
  frames of one episode never sit on both sides.
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
    image_key: str = "agentview_image"  # episodes: camera to probe
    target_key: str = "cube_pos"  # episodes: low-dim key to regress
    frame_stride: int = 5  # episodes: every k-th step
    val_fraction: float = 0.2
    max_samples: int | None = None  # per split, after the split
    seed: int = 0


@dataclass
class ProbeData:
    """Frames (N, S, S, 3) uint8 and targets: (N,) int64 classes or (N, C) float32 values."""

    task: str  # "classification" or "regression"
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    classes: list[str] | None = None

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


def load_episodes(cfg: ProbeDatasetConfig, image_size: int) -> ProbeData:
    """Every `frame_stride`-th frame of every episode; the last val_fraction of episodes is val."""
    per_episode: list[tuple[np.ndarray, np.ndarray]] = []
    for path in cfg.paths:
        store = EpisodeStore.open(path)
        for key in (cfg.image_key, cfg.target_key):
            if key not in store.data_spec:
                raise KeyError(f"{path}: no key {key!r} in the episode store; keys: {sorted(store.data_spec)}")
        for i in range(store.n_episodes):
            ep = store.get_episode(i, [cfg.image_key, cfg.target_key])
            frames = ep[cfg.image_key][:: cfg.frame_stride]
            target = np.asarray(ep[cfg.target_key][:: cfg.frame_stride], np.float32).reshape(len(frames), -1)
            per_episode.append((np.stack([prepare_image(f, image_size) for f in frames]), target))
    if len(per_episode) < 2:
        raise ValueError(f"{cfg.paths}: need >= 2 episodes to split train/val, found {len(per_episode)}")
    order = np.random.default_rng(cfg.seed).permutation(len(per_episode))
    n_val = max(1, round(cfg.val_fraction * len(order)))
    val, train = order[:n_val], order[n_val:]

    def cat(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.concatenate([per_episode[i][0] for i in idx]), np.concatenate([per_episode[i][1] for i in idx])

    (tx, ty), (vx, vy) = cat(train), cat(val)
    return ProbeData("regression", tx, ty, vx, vy)


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


_LOADERS = {"image_folder": load_image_folder, "episodes": load_episodes}
