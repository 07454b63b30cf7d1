"""Packing loader: token clips -> fixed-length training sequences of `frames_per_seq` frames.

Videos give windows of `frames_per_seq` consecutive frames every `stride` frames; images (1-frame
clips) and videos shorter than a window are packed together into sequences by first-fit
decreasing, so padding stays tiny (`padding_fraction`). Segments in a sequence share one causal
context (like packed LLM documents); the target at the last token of each segment and at padding
is `IGNORE` so no loss is taken on predicting across a boundary.

Determinism: the epoch's plan depends only on (dataset clips, seed, epoch). Sharding: global batch
k is plan sequences [k*W*B, (k+1)*W*B) and rank r takes every W-th of them, so W ranks with batch
B see exactly the sequences one process with batch W*B sees. Resume: `state_dict()` is the
position after the last batch handed out; `load_state_dict()` continues from there.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch

IGNORE = -100  # cross_entropy's default ignore_index


class ClipLike(Protocol):
    n_frames: int


class ClipSource(Protocol):
    """What the loader reads: pretrain.data.token_shards.TokenDataset satisfies it."""

    clips: Sequence[ClipLike]
    tokens_per_frame: int

    def read_frames(self, clip_index: int, start: int = 0, n: int | None = None) -> np.ndarray: ...


@dataclass
class PackingConfig:
    frames_per_seq: int = 16  # 16 x 256 = 4096 tokens
    stride: int = 16  # frames between window starts inside a video (16 = non-overlapping)
    batch_size: int = 8  # sequences per rank per step
    seed: int = 0
    pack_window: int = 8192  # short clips packed together per window (larger = less padding)
    prefetch: int = 2  # batches read ahead in a background thread (0 = none)
    read_threads: int = 8  # concurrent byte-range reads per batch (object storage latency; 1 = serial)


class Batch(NamedTuple):
    tokens: torch.Tensor  # (B, frames_per_seq * tokens_per_frame) int64
    targets: torch.Tensor  # (B, same) int64: next token, IGNORE at segment ends and padding


def clip_items(clips: Sequence[ClipLike], frames_per_seq: int, stride: int) -> np.ndarray:
    """(N, 3) int64 rows (clip_index, first_frame, n_frames): all windows and short clips."""
    if frames_per_seq < 1 or stride < 1:
        raise ValueError(f"frames_per_seq ({frames_per_seq}) and stride ({stride}) must be >= 1")
    rows = []
    for i, clip in enumerate(clips):
        n = clip.n_frames
        if n >= frames_per_seq:
            starts = np.arange(0, n - frames_per_seq + 1, stride)
            rows.append(np.stack([np.full_like(starts, i), starts, np.full_like(starts, frames_per_seq)], 1))
        elif n > 0:
            rows.append(np.array([[i, 0, n]]))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)


def pack(items: np.ndarray, capacity: int, window: int) -> list[list[int]]:
    """Group item indices into bins of <= capacity frames: best-fit decreasing per window."""
    sizes = items[:, 2]
    bins = [[int(i)] for i in np.flatnonzero(sizes == capacity)]
    short = np.flatnonzero(sizes < capacity)
    for lo in range(0, len(short), window):
        chunk = short[lo : lo + window]
        chunk = chunk[np.argsort(-sizes[chunk], kind="stable")]
        by_free: list[list[int]] = [[] for _ in range(capacity)]  # open bins by free frames
        for i in chunk:
            s = int(sizes[i])
            f = next((f for f in range(s, capacity) if by_free[f]), None)
            if f is None:
                bins.append([int(i)])
                b, f = len(bins) - 1, capacity
            else:
                b = by_free[f].pop()
                bins[b].append(int(i))
            if f - s > 0:
                by_free[f - s].append(b)
    return bins


class PackedLoader:
    """Iterates `Batch`es forever (epoch after epoch) for one rank of `world_size`."""

    def __init__(self, source: ClipSource, cfg: PackingConfig, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.source, self.cfg, self.rank, self.world_size = source, cfg, rank, world_size
        self.tokens_per_frame = int(source.tokens_per_frame)
        self.seq_len = cfg.frames_per_seq * self.tokens_per_frame
        self.items = clip_items(source.clips, cfg.frames_per_seq, cfg.stride)
        self.epoch, self.batch = 0, 0  # position of the next batch to hand out
        self._cached: tuple[int, list[list[int]]] = (-1, [])
        per_step = world_size * cfg.batch_size
        if (n_seqs := len(self._epoch_plan(0))) < per_step:
            raise ValueError(
                f"dataset packs into {n_seqs} sequences of {cfg.frames_per_seq} frames; one step "
                f"needs {per_step} ({world_size} ranks x batch {cfg.batch_size}): add data or shrink the batch"
            )

    # ------------------------------------------------------------------ plan
    def _epoch_plan(self, epoch: int) -> list[list[int]]:
        """Sequences (lists of item rows) of `epoch`, shuffled by (seed, epoch)."""
        cached_epoch, plan = self._cached  # one tuple: safe to share with the prefetch thread
        if epoch != cached_epoch:
            rng = np.random.default_rng([self.cfg.seed, epoch])
            order = rng.permutation(len(self.items))
            bins = pack(self.items[order], self.cfg.frames_per_seq, self.cfg.pack_window)
            seqs = [[int(order[i]) for i in b] for b in bins]
            plan = [seqs[i] for i in rng.permutation(len(seqs))]
            self._cached = (epoch, plan)
        return plan

    @property
    def steps_per_epoch(self) -> int:
        return len(self._epoch_plan(self.epoch)) // (self.world_size * self.cfg.batch_size)

    def padding_fraction(self, epoch: int = 0) -> float:
        """Fraction of token slots in the epoch's sequences that are padding."""
        plan = self._epoch_plan(epoch)
        used = sum(int(self.items[s, 2].sum()) for s in plan)
        return 1.0 - used / (len(plan) * self.cfg.frames_per_seq)

    # ------------------------------------------------------------------ reading
    def _read(self, row: int) -> np.ndarray:
        clip, first, n = (int(v) for v in self.items[row])
        return self.source.read_frames(clip, first, n).reshape(-1).astype(np.int64)

    def _sequence(self, segments: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.zeros(self.seq_len, np.int64)
        targets = np.full(self.seq_len, IGNORE, np.int64)
        pos = 0
        for seg in segments:
            tokens[pos : pos + len(seg)] = seg
            targets[pos : pos + len(seg) - 1] = seg[1:]
            pos += len(seg)
        return tokens, targets

    def _batches(self, epoch: int, batch: int) -> Iterator[tuple[Batch, tuple[int, int]]]:
        B, W = self.cfg.batch_size, self.world_size
        # A batch of images is ~B x 16 small reads: issue them concurrently (each costs a round trip
        # on s3:// or gs://); results keep plan order, so batches stay deterministic.
        with ThreadPoolExecutor(max(1, self.cfg.read_threads)) as pool:
            while True:
                plan = self._epoch_plan(epoch)
                n_steps = len(plan) // (W * B)
                while batch < n_steps:
                    base = batch * W * B
                    rows = [plan[base + j * W + self.rank] for j in range(B)]
                    flat = list(pool.map(self._read, [r for seq in rows for r in seq]))
                    seqs, k = [], 0
                    for seq in rows:
                        seqs.append(self._sequence(flat[k : k + len(seq)]))
                        k += len(seq)
                    toks, tgts = (torch.from_numpy(np.stack(x)) for x in zip(*seqs))
                    batch += 1
                    yield Batch(toks, tgts), (epoch, batch)
                epoch, batch = epoch + 1, 0

    def __iter__(self) -> Iterator[Batch]:
        batches = self._batches(self.epoch, self.batch)
        if self.cfg.prefetch > 0:
            batches = _prefetched(batches, self.cfg.prefetch)
        for b, (self.epoch, self.batch) in batches:
            yield b

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        c = self.cfg
        return {"epoch": self.epoch, "batch": self.batch, "seed": c.seed, "world_size": self.world_size,
                "batch_size": c.batch_size, "frames_per_seq": c.frames_per_seq, "stride": c.stride,
                "n_items": len(self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "world_size", "batch_size", "frames_per_seq", "stride", "n_items"):
            if state[key] != mine[key]:
                raise ValueError(f"loader state has {key}={state[key]}, this run has {mine[key]}: "
                                 "resuming would not continue the same data order")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def _prefetched(it: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run `it` in a daemon thread `depth` items ahead (shard reads overlap the training step)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put(x, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)

    threading.Thread(target=work, daemon=True).start()
    try:
        while True:
            x = q.get()
            if x is done:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
