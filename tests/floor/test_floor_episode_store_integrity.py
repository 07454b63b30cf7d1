"""Damaged episode stores are refused, never read as zeros: deleted and truncated chunks, verify, CLI."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from toto_robot.episode_store import EpisodeStore, EpisodeStoreError
from toto_robot.spec import ArraySpec, ShapeMeta

ROOT = Path(__file__).resolve().parents[2]
SM = ShapeMeta(obs={"agentview_image": ArraySpec((16, 16, 3), "uint8", "rgb"), "eef_pos": ArraySpec((3,), "float32")})


def episode(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "agentview_image": rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8),
        "eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
        "action": rng.uniform(-1, 1, (n, 7)).astype(np.float32),
    }


@pytest.fixture
def store_path(tmp_path) -> Path:
    """Three episodes of 4, 5 and 6 steps (rows 0-3, 4-8, 9-14)."""
    path = tmp_path / "s.zarr"
    store = EpisodeStore.create(path, SM)
    for i, n in enumerate([4, 5, 6]):
        store.add_episode(episode(n, i))
    return path


def test_chunks_equal_to_the_fill_value_are_written(tmp_path):
    """zarr skips all-zero chunks by default; here a missing chunk file must always mean damage."""
    store = EpisodeStore.create(tmp_path / "s.zarr", SM)
    store.add_episode({k: np.zeros_like(v) for k, v in episode(3, 0).items()})
    names = set(os.listdir(tmp_path / "s.zarr" / "data" / "agentview_image"))
    assert {"0.0.0.0", "1.0.0.0", "2.0.0.0"} <= names
    assert "0.0" in os.listdir(tmp_path / "s.zarr" / "data" / "action")
    EpisodeStore.open(tmp_path / "s.zarr").verify()


def test_deleted_chunk_refused_on_open_naming_array_episode_and_chunk(store_path):
    os.remove(store_path / "data" / "agentview_image" / "6.0.0.0")  # row 6: episode 1
    os.remove(store_path / "data" / "agentview_image" / "10.0.0.0")
    with pytest.raises(EpisodeStoreError) as e:
        EpisodeStore.open(store_path)
    msg = str(e.value)
    assert str(store_path) in msg and "data/agentview_image" in msg and "episode 1" in msg and "chunk 6.0.0.0" in msg
    assert "2 of 15 chunks" in msg
    # Plain zarr would have served zeros without a word:
    assert not zarr.open_array(str(store_path / "data" / "agentview_image"), mode="r")[6].any()


def test_deleted_low_dim_chunk_refused(store_path):
    os.remove(store_path / "data" / "eef_pos" / "0.0")
    with pytest.raises(EpisodeStoreError, match=r"data/eef_pos, episode 0, chunk 0\.0 \(rows 0-1023\)"):
        EpisodeStore.open(store_path, mode="a")


def test_truncated_chunk_named_on_read_and_by_verify(store_path):
    chunk = store_path / "data" / "agentview_image" / "12.0.0.0"  # row 12: episode 2
    chunk.write_bytes(chunk.read_bytes()[:10])
    store = EpisodeStore.open(store_path)  # the file exists: only decoding finds it
    store.get_episode(0)
    with pytest.raises(EpisodeStoreError) as e:
        store.get_episode(2)
    msg = str(e.value)
    assert all(s in msg for s in (str(store_path), "data/agentview_image", "episode 2", "chunk 12.0.0.0", "--verify"))
    with pytest.raises(EpisodeStoreError, match=r"data/agentview_image, episode 2, chunk 12\.0\.0\.0"):
        store.verify()


def test_verify_reports_a_whole_store(store_path):
    report = EpisodeStore.open(store_path).verify()
    assert report["episodes"] == 3 and report["steps"] == 15
    assert report["chunks"] == 15 + 1 + 1  # one image per chunk; eef_pos and action one chunk each


def test_cli_summary_verify_and_one_line_error(store_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "toto_robot.episode_store", *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    ok = cli(store_path, "--verify")
    assert ok.returncode == 0, ok.stderr
    assert "3 episodes, 15 steps" in ok.stdout and "verified 17 chunks" in ok.stdout
    chunk = store_path / "data" / "action" / "0.0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    bad = cli(store_path, "--verify")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and "data/action, episode 0, chunk 0.0" in lines[-1]
