"""Frozen-encoder features cached beside an episode store, so training reads small arrays.

`<store>.features.zarr/<entry>/features` holds, for every committed row of one camera key, the
token features (K * 256, D) the Toto core would compute from that row's frame history: float16
(half the bytes of float32; the Toto core rounds live features to float16 too, so a policy
sees the same numbers in training and on the robot). An entry is keyed by the encoder hash, layer,
history, camera key and a fingerprint of the store's content; when the store changes (more
episodes, re-collected), entries made for its old content are deleted. An entry is built in a
temporary folder and renamed into place: it is complete or absent. A damaged one (missing
chunks, wrong shape, non-finite values) is refused with a FeatureCacheError naming the folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from tqdm import tqdm

from toto_robot.episode_store import EpisodeStore

log = logging.getLogger(__name__)

FORMAT = "toto_robot.feature_cache"
VERSION = 1
ROWS_PER_CHUNK = 64


class FeatureCacheError(RuntimeError):
    """A cache entry is damaged or does not describe what it claims to."""


def cache_root(store_path: str | os.PathLike) -> Path:
    """`data/demos.zarr` -> `data/demos.features.zarr` (beside the dataset)."""
    p = Path(store_path)
    return p.with_name(f"{p.name.removesuffix('.zarr')}.features.zarr")


def dataset_fingerprint(store: EpisodeStore) -> str:
    """sha256 of what the features depend on: spec, attributes, episode ends, every low-dim array
    and the listing (name, size) of every image chunk. Listing instead of decoding the images keeps
    this to a fraction of a second; a re-collected store changes its actions and chunk sizes."""
    h = hashlib.sha256()
    h.update(json.dumps({k: store.data_spec[k].to_dict() for k in sorted(store.data_spec)}, sort_keys=True).encode())
    h.update(json.dumps(store.attrs, sort_keys=True, default=str).encode())
    h.update(store.episode_ends.tobytes())
    n = store.n_steps
    for key in sorted(store.data_spec):
        spec = store.data_spec[key]
        if spec.kind in ("rgb", "depth"):
            folder = store.path / "data" / key
            with os.scandir(folder) as it:
                listing = sorted((e.name, e.stat().st_size) for e in it if not e.name.startswith("."))
            h.update(json.dumps(listing).encode())
        else:
            h.update(np.ascontiguousarray(store.array(key)[:n]).tobytes())
    return h.hexdigest()


def cached_features(store: EpisodeStore, key: str, core: Any, progress: bool = True,
                    fingerprint: str | None = None, batch_size: int = 32) -> np.ndarray:
    """(n_steps, K * 256, D) float16 features of camera `key` for every row of `store`, from the
    cache when a matching entry exists, else computed with `core` (a TotoCore) and cached."""
    fingerprint = fingerprint or dataset_fingerprint(store)
    ident = {"format": FORMAT, "version": VERSION, "encoder_hash": core.encoder.encoder_hash, "layer": core.layer,
             "history": core.history, "key": key, "dataset": fingerprint, "n_steps": store.n_steps}
    entry_id = f"{key}-{hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]}"
    root = cache_root(store.path)
    path = root / entry_id
    if path.exists():
        log.info("feature cache hit: %s", path)
        return _read(path, ident, core.token_shape)
    _drop_stale(root, key, fingerprint)
    feats = _compute(store, key, core, progress, batch_size)
    _write(path, feats, ident)
    return feats


def _compute(store: EpisodeStore, key: str, core: Any, progress: bool, batch_size: int) -> np.ndarray:
    n, k = store.n_steps, core.history
    starts = np.repeat(np.concatenate([[0], store.episode_ends[:-1]]), store.episode_lengths())
    out = np.empty((n, *core.token_shape), dtype=np.float16)
    frames = store.array(key)
    for i in tqdm(range(0, n, batch_size), desc=f"encode {key}", disable=not progress):
        rows = np.arange(i, min(i + batch_size, n))
        if k == 1:
            batch = np.asarray(frames[rows[0] : rows[-1] + 1])
        else:  # (B, K, H, W, 3): the K frames up to each row, the episode's first frame repeated before it
            hist = np.maximum(rows[:, None] + np.arange(1 - k, 1)[None, :], starts[rows][:, None])
            lo = int(hist.min())
            block = np.asarray(frames[lo : rows[-1] + 1])
            batch = block[hist - lo]
        out[rows] = core.token_features(torch.from_numpy(batch)).cpu().numpy().astype(np.float16)  # exact: already fp16 values
    return out


def _write(path: Path, feats: np.ndarray, ident: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
    arr = group.create_array("features", shape=feats.shape, chunks=(ROWS_PER_CHUNK, *feats.shape[1:]), dtype="float16",
                             compressors=None, fill_value=0)
    arr[:] = feats
    group.attrs.update(ident)
    os.replace(tmp, path)


def _read(path: Path, ident: dict[str, Any], token_shape: tuple[int, ...]) -> np.ndarray:
    def broken(why: str) -> FeatureCacheError:
        return FeatureCacheError(f"feature cache entry {path} is damaged ({why}); delete it to rebuild it")

    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=2)
        attrs, arr = dict(group.attrs), group["features"]
    except Exception as e:  # zarr raises several types for unreadable metadata
        raise broken(f"unreadable: {type(e).__name__}: {e}") from None
    if attrs != ident:
        diff = sorted(k for k in set(attrs) | set(ident) if attrs.get(k) != ident.get(k))
        raise broken(f"its attributes differ from its name in {diff}")
    want = (ident["n_steps"], *token_shape)
    if tuple(arr.shape) != want or arr.dtype != np.float16:
        raise broken(f"array is {arr.dtype}{tuple(arr.shape)}, expected float16{want}")
    n_chunks = -(-want[0] // ROWS_PER_CHUNK)
    with os.scandir(path / "features") as it:
        present = sum(1 for e in it if not e.name.startswith("."))
    if present != n_chunks:  # zarr reads a missing chunk as zeros without a word
        raise broken(f"{present} of {n_chunks} chunk files present")
    feats = np.asarray(arr[:])
    if not np.isfinite(feats).all():
        raise broken("non-finite values")
    return feats


def _drop_stale(root: Path, key: str, fingerprint: str) -> None:
    """Delete this key's entries made for another content of the store (invalidation)."""
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if not entry.name.startswith(f"{key}-"):
            continue
        try:
            stale = zarr.open_group(str(entry), mode="r", zarr_format=2).attrs.get("dataset") != fingerprint
        except Exception:
            stale = True  # unreadable: nothing can use it
        if stale:
            log.info("feature cache: dropping %s (made for other dataset content)", entry)
            shutil.rmtree(entry, ignore_errors=True)
