"""Packing loader on real token shards: padding, coverage, targets, rank sharding, resume."""

from collections import Counter

import numpy as np
import pytest
import torch

from pretrain.data.token_shards import TokenDataset, TokenShardWriter
from pretrain.loader import IGNORE, PackedLoader, PackingConfig, clip_items
from pretrain.synthetic import moving_shapes


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> TokenDataset:
    """Long videos, short videos and many images, like a real image + video corpus."""
    root = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    with TokenShardWriter(str(root), frames_per_shard=64) as w:
        for i, n in enumerate([40, 23, 16, 5, 7, 11, 3]):
            w.add_clip(moving_shapes(n, rng), source=f"v{i}", clip_id="0", fps=10.0, kind="video")
            w.finish_source(f"v{i}")
        for i in range(150):
            w.add_clip(rng.integers(0, 8192, (1, 256)), source=f"img{i}", clip_id="0", kind="image")
            w.finish_source(f"img{i}")
    return TokenDataset(str(root))


def seqs_of(loader: PackedLoader, n: int) -> list[torch.Tensor]:
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_windows_follow_stride():
    class C:
        def __init__(self, n):
            self.n_frames = n

    items = clip_items([C(40), C(5), C(1)], frames_per_seq=16, stride=8)
    assert items.tolist() == [[0, 0, 16], [0, 8, 16], [0, 16, 16], [0, 24, 16], [1, 0, 5], [2, 0, 1]]


def test_packing_pads_under_5_percent_and_covers_every_item_once(mixed):
    loader = PackedLoader(mixed, PackingConfig(frames_per_seq=16, stride=8, batch_size=2, prefetch=0))
    assert loader.padding_fraction() < 0.05
    plan = loader._epoch_plan(0)
    assert Counter(i for seq in plan for i in seq) == Counter(range(len(loader.items)))
    assert all(loader.items[seq, 2].sum() <= 16 for seq in plan)
    assert loader._epoch_plan(1) != plan  # reshuffled per epoch ...
    assert PackedLoader(mixed, loader.cfg)._epoch_plan(1) == loader._epoch_plan(1)  # ... deterministically


def test_targets_are_next_tokens_within_segments(mixed):
    loader = PackedLoader(mixed, PackingConfig(frames_per_seq=16, stride=8, batch_size=4, prefetch=0))
    batch = next(iter(loader))
    assert batch.tokens.shape == batch.targets.shape == (4, 4096) and batch.tokens.dtype == torch.int64
    plan = loader._epoch_plan(0)
    for b in range(4):
        rows = plan[b]
        expect = np.concatenate([mixed.read_frames(*loader.items[r]).reshape(-1) for r in rows])
        n = len(expect)
        assert torch.equal(batch.tokens[b, :n], torch.from_numpy(expect.astype(np.int64)))
        keep = batch.targets[b] != IGNORE
        assert torch.equal(batch.targets[b, :-1][keep[:-1]], batch.tokens[b, 1:][keep[:-1]])
        # One ignored target per segment end, plus every padding slot.
        assert int((~keep).sum()) == len(rows) + (4096 - n)


def test_ranks_split_each_global_batch(mixed):
    cfg1 = PackingConfig(frames_per_seq=4, stride=4, batch_size=4, prefetch=0)
    cfg2 = PackingConfig(frames_per_seq=4, stride=4, batch_size=2, prefetch=0)
    single = seqs_of(PackedLoader(mixed, cfg1), 3)
    ranks = [seqs_of(PackedLoader(mixed, cfg2, rank=r, world_size=2), 3) for r in range(2)]
    for step in range(3):
        got = sorted(map(tuple, torch.cat([ranks[0][step].tokens, ranks[1][step].tokens]).tolist()))
        assert got == sorted(map(tuple, single[step].tokens.tolist()))
        assert not torch.equal(ranks[0][step].tokens, ranks[1][step].tokens)


def test_resume_from_state_dict_continues_the_same_stream_across_epochs(mixed):
    cfg = PackingConfig(frames_per_seq=4, stride=4, batch_size=8, prefetch=2)
    ref = PackedLoader(mixed, cfg)
    per_epoch = ref.steps_per_epoch
    stream = seqs_of(ref, per_epoch + 3)
    first = PackedLoader(mixed, cfg)
    it = iter(first)
    for _ in range(per_epoch - 1):
        next(it)
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (0, per_epoch - 1)
    resumed = PackedLoader(mixed, cfg)
    resumed.load_state_dict(state)
    for expected, got in zip(stream[per_epoch - 1 :], seqs_of(resumed, 4)):
        assert torch.equal(expected.tokens, got.tokens) and torch.equal(expected.targets, got.targets)
    no_prefetch = seqs_of(PackedLoader(mixed, PackingConfig(**{**cfg.__dict__, "prefetch": 0})), 2)
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(stream, no_prefetch))
    with pytest.raises(ValueError, match="batch_size"):
        PackedLoader(mixed, PackingConfig(frames_per_seq=4, stride=4, batch_size=4)).load_state_dict(state)


def test_too_little_data_is_a_clear_error(mixed):
    with pytest.raises(ValueError, match="add data or shrink the batch"):
        PackedLoader(mixed, PackingConfig(frames_per_seq=16, batch_size=64))


def test_streams_from_an_fsspec_url_with_concurrent_reads(tmp_path):
    """Same batches from an fsspec filesystem (memory:// standing in for s3://) as from disk."""
    from pretrain.synthetic import write_synthetic_shards

    write_synthetic_shards(str(tmp_path), n_videos=3, n_frames=9, n_images=20, seed=1)
    write_synthetic_shards("memory://lm-loader-test", n_videos=3, n_frames=9, n_images=20, seed=1)
    cfg = PackingConfig(frames_per_seq=4, stride=2, batch_size=3, prefetch=1, read_threads=4)
    local = seqs_of(PackedLoader(TokenDataset(str(tmp_path)), cfg), 3)
    serial = PackingConfig(**{**cfg.__dict__, "read_threads": 1})
    remote = seqs_of(PackedLoader(TokenDataset("memory://lm-loader-test"), serial), 3)
    assert all(torch.equal(a.tokens, b.tokens) and torch.equal(a.targets, b.targets) for a, b in zip(local, remote))
