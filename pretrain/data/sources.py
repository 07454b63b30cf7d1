"""Frame sources for tokenizing and tokenizer training: image folders, video files, episode stores.

A source lists its *files* (the unit of work handed to ranks and worker processes, and the unit
of resuming) and turns one file into *clips*: a clip is a stream of 128x128x3 uint8 frames with an
id, an fps and a kind ("image": one frame; "video"). Every frame goes through
`toto_robot.preprocess.prepare_image` (centre crop + area resize), the same path real camera frames
take. The sim-video generator in `envs` writes episode stores, which `EpisodeStoreSource` reads
(every rgb key of every episode is a clip), so no simulator is imported here.

Decoding failures raise `SourceError` naming the file; the tokenize pipeline logs and skips it.
A video that breaks off mid-stream keeps the frames decoded before the break (logged).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toto_robot.preprocess import prepare_image
from toto_robot.registry import Registry

log = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


class SourceError(RuntimeError):
    """A file cannot be read or decoded; the message names it."""


@dataclass
class SourceConfig:
    """One entry of the `sources` list. kind: images | videos | episodes (see SOURCES).

    fps: target frame rate for videos/episodes (frames are subsampled to it; null keeps all);
    max_frames: cap per clip (null: no cap); size: output frame side [px]."""

    kind: str = "images"
    path: str = "???"
    fps: float | None = None
    max_frames: int | None = None
    size: int = 128


@dataclass
class Clip:
    clip_id: str
    kind: str  # "image" | "video"
    fps: float | None
    frames: Iterator[np.ndarray]  # each (size, size, 3) uint8


def _list(root: Path, exts: tuple[str, ...]) -> list[str]:
    if root.is_file():
        return [str(root)] if root.suffix.lower() in exts else []
    if not root.is_dir():
        raise SourceError(f"source path {root} does not exist")
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in exts and p.is_file())


def _stride(native: float | None, target: float | None) -> int:
    """Keep every k-th frame so the rate is at most `target` (k >= 1)."""
    if not native or not target or target >= native:
        return 1
    return max(1, round(native / target))


class ImageFolderSource:
    """jpg/png files under `path`, recursively; each image is a one-frame clip."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def files(self) -> list[str]:
        return _list(Path(self.cfg.path), IMAGE_EXTS)

    def clips(self, file: str) -> Iterator[Clip]:
        from PIL import Image

        try:
            with Image.open(file) as im:
                frame = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for bad files
            raise SourceError(f"{file}: undecodable image ({type(e).__name__}: {e})") from None
        yield Clip("0", "image", None, iter([prepare_image(frame, self.cfg.size)]))


class VideoSource:
    """Video files under `path` (mp4, mkv, webm, ...), decoded with PyAV; one clip per file."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def files(self) -> list[str]:
        return _list(Path(self.cfg.path), VIDEO_EXTS)

    def clips(self, file: str) -> Iterator[Clip]:
        import av

        try:
            container = av.open(file)
            stream = container.streams.video[0]
        except (av.FFmpegError, IndexError, OSError) as e:
            raise SourceError(f"{file}: cannot open video ({type(e).__name__}: {e})") from None
        native = float(stream.average_rate) if stream.average_rate else None
        k = _stride(native, self.cfg.fps)
        stream.thread_type = "AUTO"
        yield Clip("0", "video", native / k if native else None, self._frames(file, container, k))

    def _frames(self, file: str, container, k: int) -> Iterator[np.ndarray]:  # noqa: ANN001 (av type)
        import av

        n = 0
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if i % k:
                    continue
                yield prepare_image(frame.to_ndarray(format="rgb24"), self.cfg.size)
                n += 1
                if self.cfg.max_frames and n >= self.cfg.max_frames:
                    break
        except (av.FFmpegError, ValueError) as e:
            if n == 0:
                raise SourceError(f"{file}: undecodable video ({type(e).__name__}: {e})") from None
            log.warning("%s: decoding stopped after %d frames (%s: %s); keeping them", file, n, type(e).__name__, e)
        finally:
            container.close()
        if n == 0:
            raise SourceError(f"{file}: no decodable video frames")


class EpisodeStoreSource:
    """Episode stores (`toto_robot.episode_store`) at `path` or in folders under it; every rgb
    key of every episode is a clip `ep{i:05d}/{key}`. fps comes from the store's attrs
    (`fps` or `control_hz`) unless the config sets it."""

    def __init__(self, cfg: SourceConfig) -> None:
        self.cfg = cfg

    def files(self) -> list[str]:
        root = Path(self.cfg.path)
        if not root.is_dir():
            raise SourceError(f"source path {root} does not exist")
        if (root / ".zattrs").is_file():
            return [str(root)]
        return sorted(str(p.parent) for p in root.rglob(".zattrs") if (p.parent / "meta" / "episode_ends").exists())

    def clips(self, file: str) -> Iterator[Clip]:
        from toto_robot.episode_store import EpisodeStore, EpisodeStoreError

        try:
            store = EpisodeStore.open(file)
        except EpisodeStoreError as e:
            raise SourceError(str(e)) from None
        attrs = store.attrs
        native = attrs.get("fps") or attrs.get("control_hz")
        native = float(native) if native else None
        k = _stride(native, self.cfg.fps)
        for i in range(store.n_episodes):
            for key in store.shape_meta.rgb_keys:
                yield Clip(f"ep{i:05d}/{key}", "video", native / k if native else self.cfg.fps,
                           self._frames(store, file, i, key, k))

    def _frames(self, store, file: str, i: int, key: str, k: int) -> Iterator[np.ndarray]:  # noqa: ANN001
        sl = store.episode_slice(i)
        idx = range(sl.start, sl.stop, k)
        if self.cfg.max_frames:
            idx = idx[: self.cfg.max_frames]
        arr = store.array(key)
        for lo in range(0, len(idx), 64):  # read in chunks: one zarr call per 64 frames
            rows = idx[lo : lo + 64]
            try:
                frames = arr[rows.start : rows.stop if rows.step == 1 else rows[-1] + 1 : rows.step]
            except Exception as e:  # zarr/codec errors for damaged chunks
                raise SourceError(f"{file}: episode {i} {key} unreadable ({type(e).__name__}: {e})") from None
            for f in frames:
                yield prepare_image(np.asarray(f), self.cfg.size)


SOURCES = Registry("frame source")
SOURCES.register("images", "pretrain.data.sources:ImageFolderSource")
SOURCES.register("videos", "pretrain.data.sources:VideoSource")
SOURCES.register("episodes", "pretrain.data.sources:EpisodeStoreSource")


def build_source(cfg: SourceConfig) -> ImageFolderSource | VideoSource | EpisodeStoreSource:
    return SOURCES.build(cfg.kind, cfg)
