"""One zarr episode store for sim demos, teleoperation and real-robot rollouts.

Layout (the one diffusion_policy and its descendants read), written in zarr format 2 so that
zarr-python 2 and 3 both open it::

    <store>/data/<key>          time-major arrays concatenated over episodes, axis 0
    <store>/meta/episode_ends   int64, cumulative end index of each episode
    <store>/.zattrs             {"toto_robot": {format, version, shape_meta, extras}, ...user attrs}

Appends are crash-safe: data rows are written first, then `episode_ends` grows by one entry,
which is the commit point. Every file write goes through zarr's LocalStore (temp file +
rename), so a crash leaves either the old or the new file. Rows past the last committed end
are ignored when reading and truncated when the store is reopened for appending.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr

from toto_robot.spec import ArraySpec, ShapeMeta, SpecError

FORMAT = "toto_robot.episode_store"
VERSION = 1
_ROWS_PER_CHUNK = 1024  # low-dim arrays; images are chunked one frame per chunk
_IMAGE_CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
_LOWDIM_CODEC = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


class EpisodeStoreError(RuntimeError):
    """The store on disk is missing, corrupt, or does not match what the caller expects."""


class EpisodeStore:
    """Reader/writer of one episode store. Use `create`, `open` or `open_or_create`."""

    def __init__(self, path: Path, group: zarr.Group, writable: bool) -> None:
        self.path = path
        self._group = group
        self.writable = writable
        meta = dict(group.attrs).get("toto_robot")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise EpisodeStoreError(f"{path}: not a toto_robot episode store (no 'toto_robot' attrs)")
        if meta.get("version") != VERSION:
            raise EpisodeStoreError(f"{path}: store version {meta.get('version')} != supported {VERSION}")
        try:
            self.shape_meta = ShapeMeta.from_dict(meta["shape_meta"])
            extras = {k: ArraySpec.from_dict(v) for k, v in meta.get("extras", {}).items()}
        except (KeyError, SpecError) as e:
            raise EpisodeStoreError(f"{path}: bad spec in attrs: {e}") from None
        self.data_spec: dict[str, ArraySpec] = {**self.shape_meta.data_spec(), **extras}
        self._arrays = {k: self._array(f"data/{k}") for k in self.data_spec}
        self._ends_array = self._array("meta/episode_ends")
        self._ends = self._committed_ends()

    # ---------------------------------------------------------------- construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        shape_meta: ShapeMeta,
        extras: Mapping[str, ArraySpec] | None = None,
        attrs: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> EpisodeStore:
        """Create an empty store; built in a temp folder and renamed into place."""
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise EpisodeStoreError(f"{path} exists; pass overwrite=True or open it")
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        extras = dict(extras or {})
        clash = set(extras) & set(shape_meta.data_spec())
        if clash:
            raise SpecError(f"extra keys {sorted(clash)} clash with observation/action keys")
        root = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        for key, spec in {**shape_meta.data_spec(), **extras}.items():
            image = spec.kind in ("rgb", "depth")
            root.create_array(
                f"data/{key}",
                shape=(0, *spec.shape),
                chunks=(1 if image else _ROWS_PER_CHUNK, *spec.shape),
                dtype=spec.dtype,
                compressors=_IMAGE_CODEC if image else _LOWDIM_CODEC,
                fill_value=0,
            )
        root.create_array("meta/episode_ends", shape=(0,), chunks=(_ROWS_PER_CHUNK,), dtype="int64", fill_value=0)
        root.attrs.update(
            {
                **dict(attrs or {}),
                "toto_robot": {
                    "format": FORMAT,
                    "version": VERSION,
                    "shape_meta": shape_meta.to_dict(),
                    "extras": {k: s.to_dict() for k, s in extras.items()},
                },
            }
        )
        os.replace(tmp, path)
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", shape_meta: ShapeMeta | None = None) -> EpisodeStore:
        """Open an existing store (`mode` "r" or "a"). With `shape_meta`, the stored spec must match."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.is_dir():
            raise EpisodeStoreError(f"no episode store at {path}")
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=2)
        except Exception as e:  # zarr raises several types for unreadable metadata
            raise EpisodeStoreError(f"{path}: unreadable zarr group ({type(e).__name__}: {e})") from None
        store = cls(path, group, writable=mode == "a")
        if shape_meta is not None and shape_meta.to_dict() != store.shape_meta.to_dict():
            raise EpisodeStoreError(f"{path}: spec differs from the expected one:\n{_spec_diff(store.shape_meta, shape_meta)}")
        if mode == "a":
            store._truncate_uncommitted()
        return store

    @classmethod
    def open_or_create(
        cls,
        path: str | os.PathLike,
        shape_meta: ShapeMeta,
        extras: Mapping[str, ArraySpec] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> EpisodeStore:
        """Resume appending to `path` if it exists (spec must match), else create it."""
        if Path(path).exists():
            return cls.open(path, mode="a", shape_meta=shape_meta)
        return cls.create(path, shape_meta, extras=extras, attrs=attrs)

    # ---------------------------------------------------------------- reading
    @property
    def attrs(self) -> dict[str, Any]:
        """User attributes (control rate, cameras, env config, code version...)."""
        return {k: v for k, v in dict(self._group.attrs).items() if k != "toto_robot"}

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    def __len__(self) -> int:
        return self.n_episodes

    def episode_lengths(self) -> np.ndarray:
        return np.diff(self._ends, prepend=0)

    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(f"episode {i} out of range for {self.n_episodes} episodes")
        i %= self.n_episodes
        return slice(int(self._ends[i - 1]) if i else 0, int(self._ends[i]))

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of episode `i`, each (T, ...)."""
        sl = self.episode_slice(i)
        return {k: self.array(k)[sl] for k in (keys or self.data_spec)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.get_episode(i)

    def array(self, key: str) -> zarr.Array:
        """The raw zarr array `data/<key>` (rows past `n_steps` are uncommitted)."""
        if key not in self._arrays:
            raise KeyError(f"no key {key!r} in store; keys: {sorted(self._arrays)}")
        return self._arrays[key]

    # ---------------------------------------------------------------- writing
    def add_episode(self, episode: Mapping[str, Any]) -> int:
        """Append one episode atomically; returns its index. Every spec key is required."""
        if not self.writable:
            raise EpisodeStoreError(f"{self.path} is open read-only")
        missing = [k for k in self.data_spec if k not in episode]
        unknown = [k for k in episode if k not in self.data_spec]
        if missing or unknown:
            raise SpecError(f"episode keys do not match the store: missing {missing}, unknown {unknown}")
        arrays = {k: spec.check(k, episode[k], batch_dims=1) for k, spec in self.data_spec.items()}
        lengths = {k: len(a) for k, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise SpecError(f"episode arrays differ in length: {lengths}")
        n = next(iter(lengths.values()))
        if n == 0:
            raise SpecError("episode is empty")
        start = self.n_steps
        for key, arr in arrays.items():
            z = self._arrays[key]
            z.resize((start + n, *z.shape[1:]))
            z[start : start + n] = arr
        # Commit point: one more entry in episode_ends.
        self._ends_array.resize((len(self._ends) + 1,))
        self._ends_array[len(self._ends)] = start + n
        self._ends = np.append(self._ends, np.int64(start + n))
        return self.n_episodes - 1

    # ---------------------------------------------------------------- integrity
    def _array(self, name: str) -> zarr.Array:
        try:
            arr = self._group[name]
        except KeyError:
            raise EpisodeStoreError(f"{self.path}: missing array {name!r}") from None
        except Exception as e:
            raise EpisodeStoreError(f"{self.path}: array {name!r} unreadable ({type(e).__name__}: {e})") from None
        if not isinstance(arr, zarr.Array):
            raise EpisodeStoreError(f"{self.path}: {name!r} is not an array")
        return arr

    def _committed_ends(self) -> np.ndarray:
        """episode_ends without a trailing entry from an interrupted append; checks data lengths."""
        try:
            ends = np.asarray(self._ends_array[:], dtype=np.int64)
        except Exception as e:
            raise EpisodeStoreError(f"{self.path}: meta/episode_ends unreadable ({type(e).__name__}: {e})") from None
        # An append interrupted between growing the array and writing its chunk leaves a fill value
        # (0) or a stale value at the end: keep the longest strictly increasing, in-bounds prefix.
        rows = min(a.shape[0] for a in self._arrays.values())
        ok = len(ends)
        for j in range(len(ends)):
            prev = ends[j - 1] if j else 0
            if ends[j] <= prev or ends[j] > rows:
                ok = j
                break
        if ok < len(ends) - 1:
            raise EpisodeStoreError(
                f"{self.path}: meta/episode_ends is inconsistent at entry {ok} of {len(ends)} "
                f"(value {ends[ok]}, data rows {rows}); the store is corrupt"
            )
        ends = ends[:ok]
        for key, arr in self._arrays.items():
            spec = self.data_spec[key]
            if tuple(arr.shape[1:]) != spec.shape or arr.dtype != np.dtype(spec.dtype):
                raise EpisodeStoreError(
                    f"{self.path}: data/{key} is {arr.dtype}{tuple(arr.shape[1:])}, spec says {spec.dtype}{spec.shape}"
                )
        return ends

    def _truncate_uncommitted(self) -> None:
        n = self.n_steps
        for arr in self._arrays.values():
            if arr.shape[0] != n:
                arr.resize((n, *arr.shape[1:]))
        if self._ends_array.shape[0] != len(self._ends):
            self._ends_array.resize((len(self._ends),))


def _spec_diff(have: ShapeMeta, want: ShapeMeta) -> str:
    h, w = have.data_spec(), want.data_spec()
    lines = [f"  {k}: stored {h.get(k)} expected {w.get(k)}" for k in sorted(set(h) | set(w)) if h.get(k) != w.get(k)]
    return "\n".join(lines)
