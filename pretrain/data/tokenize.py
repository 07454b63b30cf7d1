"""Sources -> sharded uint16 tokens: decode in worker processes, encode on one device per rank.

Work split: all files of all sources, sorted, are dealt round-robin to ranks (RANK/WORLD_SIZE, as
set by torchrun; each rank writes its own `shard-r{rank}` files, no process group needed), then
within a rank round-robin to DataLoader workers that decode and resize frames and pack them into
batches. The main process encodes each batch with the dVAE and hands tokens to the shard writer
once a file's last clip is complete. Files already in the rank's done-list are skipped, so a
killed run resumes where its last committed shard ended. A file that fails to decode is logged,
recorded as skipped in the done-list, and never aborts the run.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from pretrain.data.sources import SourceConfig, SourceError, build_source
from pretrain.data.token_shards import TokenShardWriter
from toto_robot.models.dvae import DVAE

log = logging.getLogger(__name__)


@dataclass
class TokenizeConfig:
    """out: shard root (local path or fsspec URL); batch_size: frames per encode call;
    workers: decoding processes per rank; frames_per_shard: shard cut size (at a file boundary);
    compile: torch.compile the encoder on cuda, falling back to eager if compiling fails."""

    out: str = "???"
    batch_size: int = 256
    workers: int = 4
    frames_per_shard: int = 65536
    device: str = "auto"
    compile: bool = True  # torch.compile the encoder on cuda (eager fallback); batches padded to batch_size


@dataclass
class TokenizeDataConfig:
    """The whole `tokenize_data.py` job: which tokenizer, which sources, where and how."""

    tokenizer_checkpoint: str = "???"
    sources: list[SourceConfig] = field(default_factory=list)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)


@dataclass
class Segment:
    """Frames [start, start + n) of a batch belong to clip `clip_id` of `file`."""

    file: str
    clip_id: str
    kind: str
    fps: float | None
    start: int
    n: int


@dataclass
class Batch:
    frames: np.ndarray  # (N, size, size, 3) uint8, N <= batch_size
    segments: list[Segment] = field(default_factory=list)
    finished: list[tuple[str, str]] = field(default_factory=list)  # (file, "ok" | "error: ...") after this batch


def list_sources(sources: list[SourceConfig]) -> list[tuple[int, str]]:
    """All (source index, file) pairs, sorted. Raises SourceError naming every source whose path is
    missing or matches no files: a typo must not pass as an empty (or smaller) dataset."""
    if not sources:
        raise SourceError("no sources configured (sources=[{kind: images, path: ...}])")
    pairs, problems = [], []
    for i, s in enumerate(sources):
        try:
            files = build_source(s).files()
        except SourceError as e:
            problems.append(str(e))
            continue
        if not files:
            problems.append(f"{s.kind} source {s.path} matches no files")
        pairs += [(i, f) for f in files]
    if problems:
        raise SourceError("; ".join(problems))
    return sorted(pairs)


def rank_files(pairs: list[tuple[int, str]], rank: int, world: int, done: set[str]) -> list[tuple[int, str]]:
    """This rank's share of `pairs` (from `list_sources`) that is not done yet."""
    return [p for p in pairs[rank::world] if p[1] not in done]


class FrameBatches(IterableDataset):
    """Yields `Batch`es for this rank's files; each DataLoader worker takes every n-th file."""

    def __init__(self, sources: list[SourceConfig], files: list[tuple[int, str]], batch_size: int) -> None:
        self.sources, self.files, self.batch_size = sources, files, batch_size

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        files = self.files if info is None else self.files[info.id :: info.num_workers]
        built = [build_source(s) for s in self.sources]
        buf: list[np.ndarray] = []
        batch = Batch(np.empty(0))
        for src_i, file in files:
            first_segment = len(batch.segments)
            try:
                for clip in built[src_i].clips(file):
                    seg = None
                    for frame in clip.frames:
                        if seg is None:
                            seg = Segment(file, clip.clip_id, clip.kind, clip.fps, len(buf), 0)
                            batch.segments.append(seg)
                        buf.append(frame)
                        seg.n += 1
                        if len(buf) == self.batch_size:
                            batch.frames = np.stack(buf)
                            yield batch
                            buf, batch, seg, first_segment = [], Batch(np.empty(0)), None, 0
                status = "ok"
            except Exception as e:  # any decoder/reader failure: skip this file, keep the run going
                log.warning("skipping %s: %s: %s", file, type(e).__name__, e)
                status = f"error: {type(e).__name__}: {e}"
                # Frames of this file still in the open batch are dropped; earlier batches'
                # segments are discarded by the consumer when it sees the error status.
                if first_segment < len(batch.segments):
                    cut = batch.segments[first_segment].start
                    del batch.segments[first_segment:]
                    del buf[cut:]
            batch.finished.append((file, status))
        if buf or batch.finished:
            batch.frames = np.stack(buf) if buf else np.empty((0, 0, 0, 3), np.uint8)
            yield batch


def pick_device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


@torch.no_grad()
def tokenize(
    sources: list[SourceConfig], model: DVAE, cfg: TokenizeConfig, rank: int = 0, world: int = 1
) -> dict[str, Any]:
    """Tokenize this rank's share of `sources` into `cfg.out`; returns a summary.

    Sources are listed (and refused if one matches nothing) before anything is written."""
    pairs = list_sources(sources)
    device = pick_device(cfg.device)
    model = model.to(device).eval()
    encode = model.encode
    if device.type == "cuda":
        # bf16 channels-last encoder: the layout the uint8 (B, H, W, 3) input permutes into for free.
        model.encoder.to(torch.bfloat16, memory_format=torch.channels_last)
        if cfg.compile:
            encode = _compiled(model, cfg.batch_size, device)
    writer = TokenShardWriter(cfg.out, rank=rank, frames_per_shard=cfg.frames_per_shard, vocab_size=model.cfg.vocab_size)
    files = rank_files(pairs, rank, world, writer.done)
    log.info("rank %d/%d: %d files to do (%d already done)", rank, world, len(files), len(writer.done))
    loader = DataLoader(FrameBatches(sources, files, cfg.batch_size), batch_size=None,
                        num_workers=min(cfg.workers, len(files)), persistent_workers=False)
    pending: dict[str, list[tuple[Segment, np.ndarray]]] = {}  # file -> clip pieces, in order
    stats = {"files": 0, "skipped": [], "frames": 0, "clips": 0}
    with tqdm(total=len(files), desc=f"tokenize r{rank}", unit="file", disable=rank != 0) as bar:
        for batch in loader:
            n = len(batch.frames)
            if n:
                x = torch.from_numpy(batch.frames).to(device, non_blocking=True)
                if encode is not model.encode and n < cfg.batch_size:  # one static shape for the compiled graph
                    x = torch.cat([x, x.new_zeros((cfg.batch_size - n, *x.shape[1:]))])
                codes = encode(x)[:n].reshape(n, -1).to(torch.int16).cpu().numpy().view(np.uint16)
                for seg in batch.segments:
                    pending.setdefault(seg.file, []).append((seg, codes[seg.start : seg.start + seg.n]))
            for file, status in batch.finished:
                pieces = pending.pop(file, [])
                if status == "ok":
                    stats["clips"] += _write_file(writer, file, pieces)
                    stats["frames"] += sum(len(c) for _, c in pieces)
                else:
                    stats["skipped"].append(file)
                writer.finish_source(file, status)
                stats["files"] += 1
                bar.update(1)
    writer.close()
    return stats


def _compiled(model: DVAE, batch_size: int, device: torch.device):  # noqa: ANN202
    """torch.compile'd `model.encode`, tried once on a dummy batch; eager `model.encode` if that fails."""
    fn = torch.compile(model.encode, dynamic=False)
    try:
        fn(torch.zeros((batch_size, model.cfg.image_size, model.cfg.image_size, 3), dtype=torch.uint8, device=device))
        return fn
    except Exception as e:  # inductor/triton unavailable or broken: tokenize eagerly
        log.warning("torch.compile of the encoder failed (%s: %s); running eager", type(e).__name__, e)
        return model.encode


def _write_file(writer: TokenShardWriter, file: str, pieces: list[tuple[Segment, np.ndarray]]) -> int:
    """Join a file's pieces into whole clips (a clip may span batches) and add them in order."""
    clips: dict[str, tuple[Segment, list[np.ndarray]]] = {}
    for seg, codes in pieces:
        clips.setdefault(seg.clip_id, (seg, []))[1].append(codes)
    for clip_id, (seg, parts) in clips.items():
        writer.add_clip(np.concatenate(parts), file, clip_id, fps=seg.fps, kind=seg.kind)
    return len(clips)
