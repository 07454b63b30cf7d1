"""Episode store: round trip, atomic append under crashes, resume, corrupt and mismatched stores."""

import json
import multiprocessing as mp
import os
import shutil
import signal
import time

import numpy as np
import pytest
import zarr

from toto_robot.episode_store import EpisodeStore, EpisodeStoreError
from toto_robot.spec import ArraySpec, ShapeMeta, SpecError

SM = ShapeMeta(
    obs={
        "agentview_image": ArraySpec((16, 16, 3), "uint8", "rgb"),
        "eef_pos": ArraySpec((3,), "float32"),
    }
)
EXTRAS = {"timestamp": ArraySpec((), "float64", "meta")}


def episode(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "agentview_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
        "eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 7)).astype(np.float32),
        "timestamp": np.arange(n, dtype=np.float64) + seed,
    }


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "demos.zarr"
    store = EpisodeStore.create(path, SM, extras=EXTRAS, attrs={"control_hz": 10})
    eps = [episode(n, seed=i) for i, n in enumerate([5, 3, 7])]
    for ep in eps:
        store.add_episode(ep)
    again = EpisodeStore.open(path)
    assert again.n_episodes == 3 and again.n_steps == 15
    np.testing.assert_array_equal(again.episode_ends, [5, 8, 15])
    assert again.attrs == {"control_hz": 10}
    assert again.shape_meta == SM
    for i, ep in enumerate(eps):
        got = again.get_episode(i)
        for k in ep:
            np.testing.assert_array_equal(got[k], ep[k])
    # Plain diffusion_policy-style layout in zarr format 2: readable without this library.
    assert json.loads((path / ".zgroup").read_text())["zarr_format"] == 2
    assert json.loads((path / "data" / "agentview_image" / ".zarray").read_text())["chunks"] == [1, 16, 16, 3]
    assert (path / "meta" / "episode_ends" / ".zarray").exists()


def test_add_episode_rejects_bad_input(tmp_path):
    store = EpisodeStore.create(tmp_path / "s.zarr", SM, extras=EXTRAS)
    ep = episode(4)
    with pytest.raises(SpecError, match="missing \\['eef_pos'\\]"):
        store.add_episode({k: v for k, v in ep.items() if k != "eef_pos"})
    with pytest.raises(SpecError, match="differ in length"):
        store.add_episode({**ep, "action": ep["action"][:3]})
    with pytest.raises(SpecError, match="'eef_pos': expected shape"):
        store.add_episode({**ep, "eef_pos": np.zeros((4, 2), np.float32)})
    bad = ep["action"].copy()
    bad[1, 2] = np.nan
    with pytest.raises(SpecError, match="NaN"):
        store.add_episode({**ep, "action": bad})
    assert store.n_episodes == 0
    with pytest.raises(EpisodeStoreError, match="read-only"):
        EpisodeStore.open(tmp_path / "s.zarr").add_episode(ep)


def _crash_mid_append(path: str, ready: "mp.synchronize.Event") -> None:
    """Append one good episode, then die (SIGKILL) while the second is half written."""
    store = EpisodeStore.open(path, mode="a")
    store.add_episode(episode(4, seed=1))
    arr = store.array("agentview_image")
    arr.resize((arr.shape[0] + 6, *arr.shape[1:]))
    arr[4:10] = 255  # data rows written, episode_ends not yet committed
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_crash_mid_episode_keeps_earlier_episodes_and_resumes(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, SM, extras=EXTRAS).add_episode(episode(3, seed=0))
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_crash_mid_append, args=(str(path), ready))
    proc.start()
    proc.join(60)
    assert proc.exitcode == -signal.SIGKILL and ready.is_set()

    reader = EpisodeStore.open(path)
    assert reader.n_episodes == 2 and reader.n_steps == 7  # uncommitted rows ignored
    resumed = EpisodeStore.open_or_create(path, SM, extras=EXTRAS)
    assert resumed.array("agentview_image").shape[0] == 7  # truncated on reopen for append
    resumed.add_episode(episode(2, seed=5))
    final = EpisodeStore.open(path)
    np.testing.assert_array_equal(final.episode_ends, [3, 7, 9])
    np.testing.assert_array_equal(final.get_episode(2)["timestamp"], [5.0, 6.0])


def test_interrupted_commit_leaves_fill_value_entry(tmp_path):
    """episode_ends grown but its chunk not rewritten -> trailing 0 is treated as uncommitted."""
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, SM, extras=EXTRAS)
    store.add_episode(episode(3))
    ends = store._ends_array
    ends.resize((2,))  # metadata says 2 entries, second never written (reads as fill value 0)
    assert EpisodeStore.open(path).n_episodes == 1


def test_spec_mismatch_missing_keys_and_corruption(tmp_path):
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, SM, extras=EXTRAS).add_episode(episode(3))
    other = ShapeMeta(obs={**SM.obs, "eef_pos": ArraySpec((4,), "float32")})
    with pytest.raises(EpisodeStoreError, match="eef_pos: stored"):
        EpisodeStore.open(path, shape_meta=other)

    missing = tmp_path / "missing.zarr"
    shutil.copytree(path, missing)
    shutil.rmtree(missing / "data" / "eef_pos")
    with pytest.raises(EpisodeStoreError, match="missing array 'data/eef_pos'"):
        EpisodeStore.open(missing)

    short = tmp_path / "short.zarr"
    shutil.copytree(path, short)
    ends = zarr.open_array(str(short / "meta" / "episode_ends"), mode="r+", zarr_format=2)
    ends.resize((2,))
    ends[:] = [10, 12]  # claims more rows than data/ holds: not an interrupted append
    with pytest.raises(EpisodeStoreError, match="inconsistent at entry 0"):
        EpisodeStore.open(short)

    corrupt = tmp_path / "corrupt.zarr"
    shutil.copytree(path, corrupt)
    (corrupt / ".zattrs").write_text("{not json")
    with pytest.raises(EpisodeStoreError, match="unreadable|not a toto_robot"):
        EpisodeStore.open(corrupt)

    with pytest.raises(EpisodeStoreError, match="no episode store"):
        EpisodeStore.open(tmp_path / "nope.zarr")
    with pytest.raises(EpisodeStoreError, match="exists"):
        EpisodeStore.create(path, SM)


def test_create_is_atomic_no_temp_left(tmp_path):
    EpisodeStore.create(tmp_path / "a.zarr", SM)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]


def test_append_speed_is_reasonable(tmp_path):
    """Not a timing test of record (bench/ has those): guards against per-row writes."""
    store = EpisodeStore.create(tmp_path / "s.zarr", SM, extras=EXTRAS)
    t = time.perf_counter()
    store.add_episode(episode(200))
    assert time.perf_counter() - t < 10


def test_store_from_before_the_commit_layout_is_adopted(tmp_path):
    """Plain .zarray files and no chunk-completeness flag (stores written before): read, then appended to."""
    path = tmp_path / "old.zarr"
    EpisodeStore.create(path, SM, extras=EXTRAS).add_episode(episode(3, seed=0))
    for meta in path.glob("*/*/.zarray"):
        text = meta.read_text()
        meta.unlink()
        meta.write_text(text)
    shutil.rmtree(path / ".commits")
    attrs = json.loads((path / ".zattrs").read_text())
    del attrs["toto_robot"]["all_chunks_written"]
    (path / ".zattrs").write_text(json.dumps(attrs))
    os.remove(path / "data" / "eef_pos" / "0.0")  # cannot be told from an all-zero chunk zarr skipped
    assert EpisodeStore.open(path).n_episodes == 1
    store = EpisodeStore.open(path, mode="a")
    assert all(m.is_symlink() for m in path.glob("*/*/.zarray"))
    store.add_episode(episode(2, seed=1))
    group = zarr.open_group(str(path), mode="r")
    assert group["meta/episode_ends"][:].tolist() == [3, 5]
    assert {group[f"data/{k}"].shape[0] for k in ("agentview_image", "eef_pos", "action", "timestamp")} == {5}
    np.testing.assert_array_equal(EpisodeStore.open(path).get_episode(1)["timestamp"], [1.0, 2.0])
