"""One zarr episode store for sim demos, teleoperation and real-robot rollouts.

Layout (the one diffusion_policy and its descendants read), written in zarr format 2 so that
zarr-python 2 and 3 both open it::

    <store>/data/<key>          time-major arrays concatenated over episodes, axis 0
    <store>/meta/episode_ends   int64, cumulative end index of each episode
    <store>/.zattrs             {"toto_robot": {format, version, shape_meta, extras}, ...user attrs}

Crash safety, for a writer that dies at any moment (kill -9, OOM, Ctrl-C; a power cut is not
covered: nothing is fsync'ed). Each array's `.zarray` (which holds its length) is a symlink into
`.commits/current/`, a folder with the `.zarray` of every array; `current` is itself a symlink.
An append
- first writes its rows through views of the arrays that are longer than their recorded length:
  chunks past it are files readers ignore, and a partly filled last chunk (low-dim arrays hold
  1024 rows per chunk) is replaced whole (zarr writes a temp file and renames it), so its
  committed rows are in every version of it; the new `episode_ends` entry is written the same way;
- then commits: it writes a new generation folder with every array's new `.zarray` and renames a
  new `current` link over the old one. That rename is the one commit point for all arrays.
So after a crash, a plain zarr reader sees `len(data/<key>) == episode_ends[-1]` and the committed
rows unchanged, whatever the moment. (A reader that opens the store *while* a writer commits can
read some `.zarray` files before the rename and some after; this class reads through
`episode_ends` and copes with either.) Opening for appending drops what a crash left behind.

Integrity: zarr reads a missing chunk file as zeros. Every chunk is written, even one equal to the
fill value, so `open` checks that each committed chunk has its file (a directory listing, no
read); `verify()` decodes everything; a chunk that fails to decode is reported with the store,
array, episode and chunk. `python -m toto_robot.episode_store PATH [--verify]` does both.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.core.array import Array, AsyncArray

from toto_robot.cli import UserError, user_errors
from toto_robot.spec import ArraySpec, ShapeMeta, SpecError

FORMAT = "toto_robot.episode_store"
VERSION = 1
_ROWS_PER_CHUNK = 1024  # low-dim arrays; images are chunked one frame per chunk
_IMAGE_CODEC = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
_LOWDIM_CODEC = numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
# Set in the attrs of stores whose every chunk is a file. Stores made before it may lack chunks
# equal to the fill value (zarr skips writing those by default), so theirs cannot be listed.
_ALL_CHUNKS = "all_chunks_written"
ENDS = "meta/episode_ends"
TEMP_SUFFIX = ".partial"  # zarr's temp files (and ours) before the rename; left behind by a crash
COMMITS = ".commits"  # generations of every array's .zarray; the symlink .commits/current names the live one


class EpisodeStoreError(UserError, RuntimeError):
    """The store on disk is missing, damaged, or does not match what the caller expects."""


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
        self._ends_array = self._array(ENDS)
        self._ends = self._committed_ends()
        if meta.get(_ALL_CHUNKS):
            self._check_chunk_files()

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
        extras = dict(extras or {})
        clash = set(extras) & set(shape_meta.data_spec())
        if clash:
            raise SpecError(f"extra keys {sorted(clash)} clash with observation/action keys")
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
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
            root.create_array(ENDS, shape=(0,), chunks=(_ROWS_PER_CHUNK,), dtype="int64", fill_value=0)
            root.attrs.update(
                {
                    **dict(attrs or {}),
                    "toto_robot": {
                        "format": FORMAT,
                        "version": VERSION,
                        "shape_meta": shape_meta.to_dict(),
                        "extras": {k: s.to_dict() for k, s in extras.items()},
                        _ALL_CHUNKS: True,
                    },
                }
            )
            os.replace(tmp, path)
        except OSError as e:  # name the path the caller gave, not the temp folder
            shutil.rmtree(tmp, ignore_errors=True)
            raise EpisodeStoreError(f"cannot create the episode store {path} (is {path.parent} a writable folder?): "
                                    f"{e.strerror or e}") from e
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | os.PathLike, mode: str = "r", shape_meta: ShapeMeta | None = None) -> EpisodeStore:
        """Open an existing store (`mode` "r" or "a"). With `shape_meta`, the stored spec must match.

        Checks that every committed chunk has its file; "a" also rolls back rows an interrupted
        append left behind.
        """
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if not path.is_dir():
            raise EpisodeStoreError(f"no episode store at {path}")
        if mode == "a" and not os.access(path, os.W_OK):
            raise EpisodeStoreError(f"cannot append to the episode store {path}: not writable")
        try:
            group = zarr.open_group(str(path), mode="r" if mode == "r" else "r+", zarr_format=2)
        except Exception as e:  # zarr raises several types for unreadable metadata
            raise EpisodeStoreError(f"{path}: unreadable zarr group ({type(e).__name__}: {e})") from None
        store = cls(path, group, writable=mode == "a")
        if shape_meta is not None and shape_meta.to_dict() != store.shape_meta.to_dict():
            raise EpisodeStoreError(f"{path}: spec differs from the expected one: {_spec_diff(store.shape_meta, shape_meta)}")
        if mode == "a":
            store._prepare_for_appending()
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
        """Arrays of episode `i`, each (T, ...). A chunk that fails to decode raises EpisodeStoreError naming it."""
        sl = self.episode_slice(i)
        return {k: self._read(k, sl) for k in (keys or self.data_spec)}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self.n_episodes):
            yield self.get_episode(i)

    def array(self, key: str) -> zarr.Array:
        """The raw zarr array `data/<key>` (rows past `n_steps` are uncommitted)."""
        if key not in self._arrays:
            raise KeyError(f"no key {key!r} in store; keys: {sorted(self._arrays)}")
        return self._arrays[key]

    def verify(self, progress: bool = False) -> dict[str, Any]:
        """Decode every committed chunk; raise EpisodeStoreError at the first bad one.

        Also refuses non-finite values in float arrays (`add_episode` never stores them). Returns
        {"episodes", "steps", "chunks", "bytes" (decoded), "seconds"}.
        """
        from tqdm import tqdm

        t0 = time.perf_counter()
        n_bytes = 0
        for i in tqdm(range(self.n_episodes), desc=f"verify {self.path.name}", disable=not progress):
            sl = self.episode_slice(i)
            for key in self.data_spec:
                data = self._read(key, sl)
                n_bytes += data.nbytes
                if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
                    row = sl.start + int(np.argwhere(~np.isfinite(data.reshape(len(data), -1)))[0, 0])
                    raise EpisodeStoreError(f"{self._where(f'data/{key}', row)}: non-finite value; the store is damaged")
        chunks = sum(len(self._committed_chunk_keys(a, self.n_steps)) for a in self._arrays.values())
        return {"episodes": self.n_episodes, "steps": self.n_steps, "chunks": chunks, "bytes": n_bytes,
                "seconds": time.perf_counter() - t0}

    # ---------------------------------------------------------------- writing
    def add_episode(self, episode: Mapping[str, Any]) -> int:
        """Append one episode atomically (see the module docstring); returns its index. Every spec key is required."""
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
        start, end, count = self.n_steps, self.n_steps + n, self.n_episodes + 1
        # Rows (and the episode_ends entry) go past the recorded shapes, where readers do not look.
        for key, arr in arrays.items():
            _with_rows(self._arrays[key], end, write_all=True)[start:end] = arr
        _with_rows(self._ends_array, count, write_all=True)[count - 1] = end
        self._commit({**{f"data/{k}": end for k in self._arrays}, ENDS: count})
        self._ends = np.append(self._ends, np.int64(end))
        return count - 1

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
        """episode_ends without a trailing entry that is not backed by data rows; checks data specs.

        That entry exists for a reader that opened while an append was committing (data shapes
        read before the commit, episode_ends after), or in a store written before appends wrote
        rows past the shape (an interrupted append left a fill value or a stale value at the end).
        """
        try:
            ends = np.asarray(self._ends_array[:], dtype=np.int64)
        except Exception as e:
            raise EpisodeStoreError(f"{self.path}: {ENDS} unreadable ({type(e).__name__}: {e})") from None
        rows = min(a.shape[0] for a in self._arrays.values())
        ok = len(ends)
        for j in range(len(ends)):
            prev = ends[j - 1] if j else 0
            if ends[j] <= prev or ends[j] > rows:
                ok = j
                break
        if ok < len(ends) - 1:
            raise EpisodeStoreError(
                f"{self.path}: {ENDS} is inconsistent at entry {ok} of {len(ends)} "
                f"(value {ends[ok]}, data rows {rows}); the store is damaged"
            )
        for key, arr in self._arrays.items():
            spec = self.data_spec[key]
            if tuple(arr.shape[1:]) != spec.shape or arr.dtype != np.dtype(spec.dtype):
                raise EpisodeStoreError(
                    f"{self.path}: data/{key} is {arr.dtype}{tuple(arr.shape[1:])}, spec says {spec.dtype}{spec.shape}"
                )
        return ends[:ok]

    def _check_chunk_files(self) -> None:
        """Every committed chunk of every array has its file (one directory listing per array)."""
        for name, arr, rows in self._all_arrays():
            keys = self._committed_chunk_keys(arr, rows)
            if not keys:
                continue
            try:
                present = set(os.listdir(self.path / name))
            except OSError as e:
                raise EpisodeStoreError(f"{self.path}: cannot list {name}: {e.strerror or e}") from None
            missing = [k for k in keys if k not in present]
            if missing:
                first = int(missing[0].split(arr.metadata.dimension_separator)[0])
                raise EpisodeStoreError(
                    f"{self._where(name, first * arr.chunks[0], chunk=missing[0])}: chunk file missing "
                    f"({len(missing)} of {len(keys)} chunks of {name} missing); the store is damaged: restore it from "
                    "a copy or collect it again"
                )

    def _all_arrays(self) -> list[tuple[str, zarr.Array, int]]:
        """(name, array, committed rows) of every array in the store."""
        return [*((f"data/{k}", a, self.n_steps) for k, a in self._arrays.items()), (ENDS, self._ends_array, self.n_episodes)]

    @staticmethod
    def _committed_chunk_keys(arr: zarr.Array, rows: int) -> list[str]:
        """zarr v2 chunk keys ("12.0.0.0") holding rows [0, rows), in order."""
        grid = [range(math.ceil(rows / arr.chunks[0]))]
        grid += [range(math.ceil(s / c)) for s, c in zip(arr.shape[1:], arr.chunks[1:])]
        sep = arr.metadata.dimension_separator
        return [sep.join(map(str, idx)) for idx in itertools.product(*grid)]

    def _read(self, key: str, sl: slice) -> np.ndarray:
        arr = self.array(key)
        try:
            return arr[sl]
        except Exception as e:  # blosc/zstd errors, wrong chunk sizes...: find and name the chunk
            step = arr.chunks[0]
            for row in range(sl.start - sl.start % step, sl.stop, step):
                try:
                    arr[row : row + 1]
                except Exception as chunk_error:
                    e = chunk_error
                    break
            else:
                row = sl.start
            raise EpisodeStoreError(
                f"{self._where(f'data/{key}', row)}: cannot decode ({type(e).__name__}: {e}); the store is damaged "
                f"(python -m toto_robot.episode_store {self.path} --verify checks all of it)"
            ) from e

    def _where(self, name: str, row: int, chunk: str | None = None) -> str:
        """"<store>: data/<key>, episode 12, chunk 873.0.0.0 (rows 873-873)" for a row of an array."""
        arr = self._ends_array if name == ENDS else self._arrays[name.removeprefix("data/")]
        step = arr.chunks[0]
        first = row - row % step
        if chunk is None:
            chunk = arr.metadata.dimension_separator.join([str(row // step), *["0"] * (arr.ndim - 1)])
        if name == ENDS:
            return f"{self.path}: {name}, chunk {chunk} (entries {first}-{first + step - 1})"
        episode = int(np.searchsorted(self._ends, row, side="right"))
        return f"{self.path}: {name}, episode {episode}, chunk {chunk} (rows {first}-{first + step - 1})"

    # ---------------------------------------------------------------- commit
    def _commit(self, rows: Mapping[str, int]) -> None:
        """Give the named arrays new lengths, all at once: one rename of the `current` link.

        Every array's `.zarray` is a symlink into `.commits/current/`; a commit writes a whole new
        generation of them next to it and then swaps `current` to it.
        """
        commits = self.path / COMMITS
        live = commits / "current"
        gen = str(int(os.readlink(live)) + 1)
        for name, _, _ in self._all_arrays():
            meta = json.loads((live / name / ".zarray").read_text())
            if name in rows:
                meta["shape"][0] = int(rows[name])
            (commits / gen / name).mkdir(parents=True, exist_ok=True)
            (commits / gen / name / ".zarray").write_text(json.dumps(meta, indent=4))
        old = os.readlink(live)
        _replace_with_link(live, gen)  # the commit point
        shutil.rmtree(commits / old, ignore_errors=True)
        for name, n in rows.items():
            if name == ENDS:
                self._ends_array = _with_rows(self._ends_array, n)
            else:
                key = name.removeprefix("data/")
                self._arrays[key] = _with_rows(self._arrays[key], n)

    def _prepare_for_appending(self) -> None:
        """Link every `.zarray` into `.commits/current/` (stores made before this layout, or a
        create), roll back rows an interrupted commit published, and drop what a crash left."""
        commits = self.path / COMMITS
        live = commits / "current"
        if not live.is_symlink():
            for name, _, _ in self._all_arrays():
                (commits / "0" / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path / name / ".zarray", commits / "0" / name / ".zarray")
            _replace_with_link(live, "0")
        for name, _, _ in self._all_arrays():
            meta = self.path / name / ".zarray"
            if not meta.is_symlink():  # same content as the generation it now points to
                _replace_with_link(meta, os.path.relpath(live / name / ".zarray", meta.parent))
        for entry in os.scandir(commits):
            if entry.name not in ("current", os.readlink(live)):
                shutil.rmtree(entry.path) if entry.is_dir(follow_symlinks=False) else os.unlink(entry.path)
        for name, _, _ in self._all_arrays():
            for entry in os.scandir(self.path / name):
                if entry.name.endswith(TEMP_SUFFIX):
                    os.unlink(entry.path)
        longer = {name: rows for name, arr, rows in self._all_arrays() if arr.shape[0] != rows}
        if longer:
            self._commit(longer)


def _replace_with_link(path: Path, target: str) -> None:
    """Atomically make `path` a symlink to `target` (a new link renamed over it)."""
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}")
    os.symlink(target, tmp)
    os.replace(tmp, path)


def _with_rows(arr: zarr.Array, rows: int, write_all: bool = False) -> zarr.Array:
    """A handle on the same array with `rows` rows, nothing written to its metadata.

    write_all: also store chunks equal to the fill value (zarr skips those by default), so that a
    missing chunk file always means damage.
    """
    a = arr.async_array
    config = dataclasses.replace(a.config, write_empty_chunks=True) if write_all else a.config
    meta = dataclasses.replace(a.metadata, shape=(rows, *a.metadata.shape[1:]))
    return Array(AsyncArray(metadata=meta, store_path=a.store_path, config=config))


def _spec_diff(have: ShapeMeta, want: ShapeMeta) -> str:
    h, w = have.data_spec(), want.data_spec()
    return "; ".join(f"{k}: stored {h.get(k)} expected {w.get(k)}" for k in sorted(set(h) | set(w)) if h.get(k) != w.get(k))


@user_errors
def main(argv: list[str] | None = None) -> None:
    """`python -m toto_robot.episode_store PATH [--verify]`: summary, and optionally a full decode."""
    p = argparse.ArgumentParser(description="Check a toto_robot episode store: open it (spec, lengths, every chunk "
                                "file present) and print a summary; --verify also decodes every chunk.")
    p.add_argument("paths", nargs="+", help="episode store folders")
    p.add_argument("--verify", action="store_true", help="decode every chunk (reports the first bad one)")
    args = p.parse_args(argv)
    for path in args.paths:
        store = EpisodeStore.open(path)
        print(f"{path}: {store.n_episodes} episodes, {store.n_steps} steps, keys {sorted(store.data_spec)}")
        if args.verify:
            r = store.verify(progress=True)
            print(f"{path}: verified {r['chunks']} chunks ({r['bytes'] / 2**20:.0f} MiB decoded) in {r['seconds']:.1f} s: ok")


if __name__ == "__main__":
    main()
