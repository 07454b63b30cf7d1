"""Token shard format: round trip (local and fsspec memory://), resume bookkeeping, corrupt shards."""

import json
import logging
import os

import numpy as np
import pytest

from pretrain.data.token_shards import FRAME_BYTES, TokenDataset, TokenShardError, TokenShardWriter


def _write(root, rank=0, n_sources=5, frames_per_shard=10, seed=0):
    rng = np.random.default_rng(seed)
    clips = {}
    with TokenShardWriter(root, rank=rank, frames_per_shard=frames_per_shard) as w:
        for i in range(n_sources):
            for c in range(2):
                t = rng.integers(0, 8192, (i + 1 + c, 16, 16), dtype=np.uint16)
                kind = "image" if len(t) == 1 else "video"
                w.add_clip(t, f"src{i}", f"cam{c}", fps=None if kind == "image" else 10.0, kind=kind)
                clips[(f"src{i}", f"cam{c}")] = t.reshape(len(t), 256)
            w.finish_source(f"src{i}")
    return clips


@pytest.mark.parametrize("url", ["local", "memory://tok_roundtrip"])
def test_round_trip_matches_written_tokens(tmp_path, url):
    root = str(tmp_path) if url == "local" else url
    clips = _write(root, rank=0)
    other = _write(root, rank=3, seed=1, n_sources=2)  # another rank's shards sort after rank 0's
    ds = TokenDataset(root)
    total = sum(len(t) for t in clips.values()) + sum(len(t) for t in other.values())
    assert ds.n_frames == total == sum(c.n_frames for c in ds.clips)
    seen = 0
    for i, c in enumerate(ds.clips):
        assert c.start == seen
        seen += c.n_frames
        got = ds.read_frames(i)
        assert got.dtype == np.uint16 and got.shape == (c.n_frames, 256)
        want = clips if c.shard.startswith("shard-r000") else other
        np.testing.assert_array_equal(got, want[(c.source, c.clip_id)])
    np.testing.assert_array_equal(ds.read_frames(3, 1, 2), ds.read_frames(3)[1:3])
    assert {c.kind for c in ds.clips} == {"image", "video"}
    with pytest.raises(IndexError):
        ds.read_frames(3, 1, 100)


def test_shards_cut_between_sources_and_json_last(tmp_path):
    _write(str(tmp_path), frames_per_shard=10)
    shards = sorted(p for p in os.listdir(tmp_path) if p.endswith(".json") and p.startswith("shard"))
    assert len(shards) >= 2
    for name in shards:
        entries = json.loads((tmp_path / name).read_text())
        sources = [e["source"] for e in entries]
        assert sorted(set(sources)) == sorted(set(sources), key=sources.index)  # contiguous per source
        assert all(sources.count(s) == 2 for s in set(sources))  # both clips of a source together
        assert (tmp_path / name.replace(".json", ".bin")).stat().st_size == sum(e["n_frames"] for e in entries) * FRAME_BYTES


def test_resume_ignores_uncommitted_shard(tmp_path):
    root = str(tmp_path)
    _write(root, n_sources=3, frames_per_shard=1)  # one shard per source
    names = sorted(p for p in os.listdir(tmp_path) if p.startswith("shard") and p.endswith(".json"))
    # Simulate a crash after the .bin and done-list lines of the last shard, before its .json.
    os.remove(tmp_path / names[-1])
    w = TokenShardWriter(root)
    assert w.done == {"src0", "src1"}
    assert not (tmp_path / names[-1].replace(".json", ".bin")).exists()  # orphan removed
    w.add_clip(np.zeros((3, 256), np.uint16), "src2", "cam0")
    w.finish_source("src2")
    w.close()
    ds = TokenDataset(root)
    assert [c.source for c in ds.clips].count("src2") == 1
    assert TokenShardWriter(root).done == {"src0", "src1", "src2"}


def test_writer_rejects_bad_tokens(tmp_path):
    w = TokenShardWriter(str(tmp_path))
    with pytest.raises(ValueError, match="8192"):
        w.add_clip(np.full((1, 256), 8192, np.int64), "a", "b")
    with pytest.raises(ValueError, match=r"\(T>0, 256\)"):
        w.add_clip(np.zeros((2, 255), np.uint16), "a", "b")


def test_truncated_shard_skipped_with_warning_or_strict_error(tmp_path, caplog):
    root = str(tmp_path)
    _write(root, n_sources=4, frames_per_shard=1)
    bad = tmp_path / "shard-r000-00001.bin"
    bad.write_bytes(bad.read_bytes()[:-100])
    (tmp_path / "shard-r000-00002.json").write_text("[{\"source\": ")
    with caplog.at_level(logging.WARNING):
        ds = TokenDataset(root)
    assert "shard-r000-00001.bin" in caplog.text and "shard-r000-00002.json" in caplog.text
    assert {c.shard for c in ds.clips} == {"shard-r000-00000", "shard-r000-00003"}
    assert len(ds.skipped) == 2
    with pytest.raises(TokenShardError, match=r"shard-r000-00001\.bin.*truncated"):
        TokenDataset(root, strict=True)


def test_shard_damaged_after_open_raises_naming_file(tmp_path):
    root = str(tmp_path)
    _write(root, n_sources=2, frames_per_shard=100)
    ds = TokenDataset(root)
    path = tmp_path / f"{ds.clips[-1].shard}.bin"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(TokenShardError, match=r"shard-r000-00000\.bin: short read"):
        ds.read_frames(len(ds.clips) - 1)
    data[:2] = (65535).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(TokenShardError, match="vocab"):
        ds.read_frames(0)


def test_torn_done_line_is_ignored(tmp_path):
    _write(str(tmp_path), n_sources=2, frames_per_shard=1)
    with open(tmp_path / "done-r000.jsonl", "a") as f:
        f.write('{"source": "src9", "sha')  # crash mid-append
    assert TokenShardWriter(str(tmp_path)).done == {"src0", "src1"}
