"""On-disk token format: sharded raw uint16 frames plus a JSON clip index per shard.

Layout under one root (a local folder or any fsspec URL: file://, s3://, gs://, memory://)::

    shard-r{rank:03d}-{k:05d}.bin    raw little-endian uint16, (frames, 256) row-major
    shard-r{rank:03d}-{k:05d}.json   [{"source", "clip_id", "offset", "n_frames", "fps", "kind"}, ...]
    done-r{rank:03d}.jsonl           resume list: {"source", "shard", "status"} per finished file
    tokens.json                      {"format", "vocab_size", "tokens_per_frame"}: the tokenizer's
                                     codebook size, which a model's vocabulary is checked against

A frame is 16x16 = 256 dVAE codes in raster order (codes < vocab_size), so frame i of a shard is bytes
[512 i, 512 (i + 1)). Commit order per shard: .bin, then the done-list lines naming it, then the
.json, each through a temp name + rename. The .json is the commit point: a .bin without one is an
interrupted write and is deleted by the next writer of that rank, and done-list lines whose shard
has no .json are ignored, so a crash never loses or duplicates a source file. Shards are cut only
between source files, so a file's clips are all committed together.

Corrupt shards: `TokenDataset` skips, with a logged warning, any shard whose .json is unreadable or
malformed or whose .bin is missing or has the wrong size (`strict=True` raises instead).
`read_frames` raises `TokenShardError` naming the file when a range cannot be read in full or
holds codes >= vocab (a shard damaged after the dataset was opened).
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
import numpy as np

TOKENS_PER_FRAME = 256  # 16 x 16 codes
GRID = 16
VOCAB_SIZE = 8192  # the paper's dVAE codebook; the largest a uint16 shard is written for by default
META_NAME = "tokens.json"
META_FORMAT = "toto_robot.tokens"
TOKEN_DTYPE = np.dtype("<u2")
FRAME_BYTES = TOKENS_PER_FRAME * TOKEN_DTYPE.itemsize
KINDS = ("image", "video")
_SHARD_RE = re.compile(r"shard-r(\d{3})-(\d{5})\.json$")

log = logging.getLogger(__name__)


class TokenShardError(RuntimeError):
    """A token shard is missing, truncated or malformed; the message names the file."""


@dataclass(frozen=True)
class ClipInfo:
    """One clip (a video, a camera stream of an episode, or an image as a 1-frame clip).

    `offset` is the clip's first frame inside `shard`; `start` its first frame in the whole
    dataset's concatenation (shards in name order).
    """

    source: str
    clip_id: str
    offset: int
    n_frames: int
    fps: float | None
    kind: str
    shard: str
    start: int = 0


def _fs_path(url: str, storage_options: dict[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    return fs, path.rstrip("/")


def _put_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write `data` to a temp name in the same folder, then rename (atomic on local disks; an
    object store publishes an object only when its upload completes)."""
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open(tmp, "wb") as f:
        f.write(data)
    fs.mv(tmp, path)


class TokenShardWriter:
    """Appends clips for one rank into shards of about `frames_per_shard` frames.

    Usage: `add_clip(...)` for every clip of a source file, then `finish_source(name)`; a shard is
    cut only there. `close()` (or leaving the `with` block) commits the remainder. `done` holds the
    sources already committed by earlier runs of this rank, for resuming. `vocab_size` is the
    tokenizer's codebook size, recorded in `tokens.json`; a root written with another is refused.
    """

    def __init__(self, root: str, rank: int = 0, frames_per_shard: int = 65536, vocab_size: int = VOCAB_SIZE) -> None:
        if not 0 <= rank < 1000:
            raise ValueError(f"rank must be in [0, 1000), got {rank}")
        if not 0 < vocab_size <= np.iinfo(TOKEN_DTYPE).max + 1:
            raise ValueError(f"vocab_size must be in [1, 65536] for uint16 shards, got {vocab_size}")
        self.root, self.rank, self.frames_per_shard, self.vocab_size = root, rank, frames_per_shard, vocab_size
        self.fs, self.path = _fs_path(root)
        self.fs.makedirs(self.path, exist_ok=True)
        self._write_meta()
        self._done_path = f"{self.path}/done-r{rank:03d}.jsonl"
        committed = self._committed_shards()
        self._next = max(committed, default=-1) + 1
        self._remove_orphans(committed)
        self.done: set[str] = self._read_done({self.shard_name(k) for k in committed})
        self._chunks: list[np.ndarray] = []
        self._clips: list[dict[str, Any]] = []
        self._pending_done: list[tuple[str, str]] = []
        self._frames = 0

    def shard_name(self, k: int) -> str:
        return f"shard-r{self.rank:03d}-{k:05d}"

    def _write_meta(self) -> None:
        meta_path = f"{self.path}/{META_NAME}"
        meta = {"format": META_FORMAT, "vocab_size": self.vocab_size, "tokens_per_frame": TOKENS_PER_FRAME}
        if self.fs.exists(meta_path):
            old = read_meta(self.fs, self.path)
            if old["vocab_size"] != self.vocab_size:
                raise ValueError(f"{self.root} holds tokens of a {old['vocab_size']}-code tokenizer; this one has "
                                 f"{self.vocab_size} codes: write to another folder")
            return
        _put_atomic(self.fs, meta_path, json.dumps(meta).encode())

    def add_clip(
        self, tokens: np.ndarray, source: str, clip_id: str, fps: float | None = None, kind: str = "video"
    ) -> None:
        """tokens: (T, 256) or (T, 16, 16) integer codes < vocab_size."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 3 and tokens.shape[1:] == (GRID, GRID):
            tokens = tokens.reshape(len(tokens), TOKENS_PER_FRAME)
        if tokens.ndim != 2 or tokens.shape[1] != TOKENS_PER_FRAME or len(tokens) == 0:
            raise ValueError(f"{source}/{clip_id}: expected (T>0, 256) tokens, got {tokens.shape}")
        if tokens.dtype.kind not in "ui" or tokens.min() < 0 or tokens.max() >= self.vocab_size:
            raise ValueError(f"{source}/{clip_id}: tokens must be integers in [0, {self.vocab_size})")
        if kind not in KINDS:
            raise ValueError(f"{source}/{clip_id}: kind must be one of {KINDS}, got {kind!r}")
        self._clips.append(
            {"source": source, "clip_id": clip_id, "offset": self._frames, "n_frames": len(tokens),
             "fps": None if fps is None else float(fps), "kind": kind}
        )
        self._chunks.append(tokens.astype(TOKEN_DTYPE, copy=False))
        self._frames += len(tokens)

    def finish_source(self, source: str, status: str = "ok") -> None:
        """Mark `source` complete (all its clips added, or skipped: `status` "error: ..."); commits
        a shard once it is full."""
        self._pending_done.append((source, status))
        if self._frames >= self.frames_per_shard:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered clips as one shard (no-op when empty)."""
        if not self._clips and not self._pending_done:
            return
        name = self.shard_name(self._next)
        if self._clips:
            _put_atomic(self.fs, f"{self.path}/{name}.bin", np.concatenate(self._chunks).tobytes())
        lines = "".join(json.dumps({"source": s, "shard": name, "status": st}) + "\n" for s, st in self._pending_done)
        self._append_done(lines.encode())
        # Sources with no frames at all (every frame undecodable) still need a committed shard
        # for their done entries to count; an empty shard is valid.
        if not self._clips:
            _put_atomic(self.fs, f"{self.path}/{name}.bin", b"")
        _put_atomic(self.fs, f"{self.path}/{name}.json", json.dumps(self._clips).encode())
        self.done.update(s for s, _ in self._pending_done)
        self._next += 1
        self._chunks, self._clips, self._pending_done, self._frames = [], [], [], 0

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> TokenShardWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        # On an exception the buffer holds possibly partial sources: drop it, the run resumes.
        if exc_type is None:
            self.close()

    # ------------------------------------------------------------------ resume bookkeeping
    def _append_done(self, data: bytes) -> None:
        """Local disks append (a torn last line is ignored on reading); object stores, which cannot
        append, get the whole list rewritten."""
        protocols = (self.fs.protocol,) if isinstance(self.fs.protocol, str) else self.fs.protocol
        if "file" in protocols:
            with self.fs.open(self._done_path, "ab") as f:
                f.write(data)
            return
        old = self.fs.cat_file(self._done_path) if self.fs.exists(self._done_path) else b""
        _put_atomic(self.fs, self._done_path, old + data)

    def _committed_shards(self) -> list[int]:
        ks = []
        for p in self.fs.glob(f"{self.path}/shard-r{self.rank:03d}-*.json"):
            m = _SHARD_RE.search(p)
            if m:
                ks.append(int(m.group(2)))
        return sorted(ks)

    def _remove_orphans(self, committed: list[int]) -> None:
        names = {self.shard_name(k) for k in committed}
        for p in self.fs.glob(f"{self.path}/shard-r{self.rank:03d}-*.bin"):
            if p.rsplit("/", 1)[1][: -len(".bin")] not in names:
                log.warning("removing %s: written by an interrupted run (no .json)", p)
                self.fs.rm(p)

    def _read_done(self, committed: set[str]) -> set[str]:
        if not self.fs.exists(self._done_path):
            return set()
        done = set()
        for line in self.fs.cat_file(self._done_path).decode(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # torn line from a crash mid-append: its shard was never committed
                continue
            if entry["shard"] in committed:
                done.add(entry["source"])
        return done


def read_meta(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    """The `tokens.json` of a shard root, checked; TokenShardError naming the file otherwise."""
    meta_path = f"{path}/{META_NAME}"
    try:
        meta = json.loads(fs.cat_file(meta_path))
    except FileNotFoundError:
        raise TokenShardError(f"{meta_path} is missing: shards without it were written before the tokenizer's "
                              "vocabulary was recorded; tokenize again") from None
    except (OSError, ValueError) as e:
        raise TokenShardError(f"{meta_path}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT or not isinstance(meta.get("vocab_size"), int):
        raise TokenShardError(f"{meta_path}: not a {META_FORMAT} file with an integer vocab_size: {meta!r}")
    return meta


class TokenDataset:
    """Read-only view of all committed shards under `root` (local path or fsspec URL).

    Frames are fetched by byte range (`read_frames`), never by loading a whole shard, so the
    same code streams from object storage; local shards are memory-mapped instead (a read is then a
    slice, ~10x faster than a file read, which keeps a GPU fed). Shards are ordered by name (rank, then index).
    `vocab_size` is the tokenizer's codebook size from `tokens.json`.
    """

    tokens_per_frame = TOKENS_PER_FRAME

    def __init__(self, root: str, strict: bool = False, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root
        self.fs, self.path = _fs_path(root, storage_options)
        self._maps: dict[str, np.ndarray] | None = {} if isinstance(self.fs, LocalFileSystem) else None
        self.clips: list[ClipInfo] = []
        self.skipped: list[str] = []
        names = sorted(p for p in self.fs.glob(f"{self.path}/shard-r*-*.json") if _SHARD_RE.search(p))
        if not names:
            raise TokenShardError(f"no token shards found at {root} (shard-rRRR-KKKKK.json/.bin written by "
                                  "tokenize_data.py): check data.root")
        self.vocab_size = int(read_meta(self.fs, self.path)["vocab_size"])
        start = 0
        for jpath in names:
            try:
                clips = self._load_shard(jpath, start)
            except TokenShardError as e:
                if strict:
                    raise
                log.warning("skipping corrupt shard: %s", e)
                self.skipped.append(jpath)
                continue
            self.clips.extend(clips)
            start += sum(c.n_frames for c in clips)
        self.n_frames = start

    def _load_shard(self, jpath: str, start: int) -> list[ClipInfo]:
        shard = jpath.rsplit("/", 1)[1][: -len(".json")]
        bpath = f"{self.path}/{shard}.bin"
        try:
            entries = json.loads(self.fs.cat_file(jpath))
        except (OSError, ValueError) as e:
            raise TokenShardError(f"{jpath}: unreadable index ({type(e).__name__}: {e})") from None
        if not isinstance(entries, list):
            raise TokenShardError(f"{jpath}: index is not a list of clips")
        clips, frames = [], 0
        for i, e in enumerate(entries):
            try:
                clip = ClipInfo(
                    source=str(e["source"]), clip_id=str(e["clip_id"]), offset=int(e["offset"]),
                    n_frames=int(e["n_frames"]), fps=None if e["fps"] is None else float(e["fps"]),
                    kind=str(e["kind"]), shard=shard, start=start + frames,
                )
            except (KeyError, TypeError, ValueError) as err:
                raise TokenShardError(f"{jpath}: clip {i} malformed ({type(err).__name__}: {err})") from None
            if clip.offset != frames or clip.n_frames <= 0 or clip.kind not in KINDS:
                raise TokenShardError(f"{jpath}: clip {i} has offset {clip.offset}, n_frames {clip.n_frames}, "
                                      f"kind {clip.kind!r} (expected offset {frames}, n_frames > 0)")
            clips.append(clip)
            frames += clip.n_frames
        try:
            size = self.fs.size(bpath)
        except (OSError, FileNotFoundError):
            raise TokenShardError(f"{bpath}: missing (index {jpath} lists {frames} frames)") from None
        if size != frames * FRAME_BYTES:
            raise TokenShardError(
                f"{bpath}: {size} bytes, index lists {frames} frames = {frames * FRAME_BYTES} bytes (truncated?)"
            )
        return clips

    def __len__(self) -> int:
        return len(self.clips)

    def read_frames(self, clip_index: int, start: int = 0, n: int | None = None) -> np.ndarray:
        """Frames [start, start + n) of clip `clip_index` -> (n, 256) uint16."""
        clip = self.clips[clip_index]
        n = clip.n_frames - start if n is None else n
        if start < 0 or n < 0 or start + n > clip.n_frames:
            raise IndexError(f"frames [{start}, {start + n}) out of range for clip {clip_index} "
                             f"({clip.source}/{clip.clip_id}, {clip.n_frames} frames)")
        bpath = f"{self.path}/{clip.shard}.bin"
        lo = (clip.offset + start) * FRAME_BYTES
        try:
            if self._maps is None:
                data = self.fs.cat_file(bpath, start=lo, end=lo + n * FRAME_BYTES)
            else:
                data = self._mapped(bpath)[lo : lo + n * FRAME_BYTES]
        except (OSError, FileNotFoundError, ValueError) as e:
            raise TokenShardError(f"{bpath}: cannot read bytes {lo}+{n * FRAME_BYTES} ({e})") from None
        if len(data) != n * FRAME_BYTES:
            raise TokenShardError(f"{bpath}: short read at byte {lo}: {len(data)} of {n * FRAME_BYTES} (truncated?)")
        out = np.frombuffer(data, dtype=TOKEN_DTYPE).reshape(n, TOKENS_PER_FRAME).astype(np.uint16)
        if n and out.max() >= self.vocab_size:
            raise TokenShardError(f"{bpath}: code {int(out.max())} >= vocab {self.vocab_size} at frames of clip {clip_index}")
        return out

    def _mapped(self, bpath: str) -> np.ndarray:
        """The local shard `bpath` as a read-only uint8 memory map, opened once."""
        assert self._maps is not None
        if (m := self._maps.get(bpath)) is None:
            m = self._maps[bpath] = np.memmap(bpath, dtype=np.uint8, mode="r")
        return m

    def summary(self) -> dict[str, Any]:
        """Summary for logs: clips, frames, tokens, per-kind counts."""
        kinds: dict[str, int] = {}
        for c in self.clips:
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        return {"clips": len(self.clips), "frames": self.n_frames, "tokens": self.n_frames * TOKENS_PER_FRAME,
                "kinds": kinds, "skipped_shards": list(self.skipped)}

