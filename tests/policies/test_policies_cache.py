"""Feature cache beside the store: miss then hit, invalidation on new content, damage detected."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from policies.config import AlgoConfig, BCConfig, EncoderConfig, ObsConfig
from policies.feature_cache import FeatureCacheError, cache_root, cached_features
from policies.train import prepare, toto_cores
from toto_robot.episode_store import EpisodeStore


def _core(store, artifact, history=1, kind="toto"):
    enc = EncoderConfig(kind=kind, artifact=str(artifact), pool_heads=2, cache=False, seed=5)  # the fixture's weights come from seed 0
    cfg = BCConfig(AlgoConfig(hidden_dims=[8]), enc,
                   ObsConfig(cameras=["agentview_image"], history=history))
    policy, _ = prepare(cfg, store, [0], "cpu", progress=False)
    return toto_cores(policy)["agentview_image"]


def _entries(store):
    root = cache_root(store.path)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_miss_then_hit_with_the_features_the_encoder_makes(store_factory, tiny_artifact, monkeypatch):
    store = store_factory(n_episodes=2, steps=5)
    core = _core(store, tiny_artifact)
    feats = cached_features(store, "agentview_image", core, progress=False)
    assert feats.shape == (10, 256, 32) and feats.dtype == np.float16
    live = core.token_features(torch.from_numpy(store.array("agentview_image")[3:4])).numpy()
    np.testing.assert_array_equal(feats[3:4], live.astype(np.float16))  # cached == live, bit for bit
    assert len(_entries(store)) == 1 and cache_root(store.path).name == "demos.features.zarr"

    calls = []
    monkeypatch.setattr(core, "token_features", lambda x: calls.append(x) or pytest.fail("cache hit must not encode"))
    np.testing.assert_array_equal(cached_features(store, "agentview_image", core, progress=False), feats)
    assert not calls


def test_history_and_another_encoder_get_their_own_entries(store_factory, tiny_artifact):
    store = store_factory(n_episodes=2, steps=4)
    one = cached_features(store, "agentview_image", _core(store, tiny_artifact), progress=False)
    two = cached_features(store, "agentview_image", _core(store, tiny_artifact, history=2), progress=False)
    rnd = cached_features(store, "agentview_image", _core(store, tiny_artifact, kind="toto_random"), progress=False)
    assert two.shape == (8, 512, 32) and len(_entries(store)) == 3
    # history 2 at an episode's first step: the first frame twice; its last 256 tokens see both frames
    assert not np.array_equal(two[0, 256:], one[0]) and not np.array_equal(rnd, one)


def test_new_store_content_invalidates_the_old_entry(store_factory, tiny_artifact):
    store = store_factory(n_episodes=2, steps=4)
    core = _core(store, tiny_artifact)
    cached_features(store, "agentview_image", core, progress=False)
    before = _entries(store)
    grown = EpisodeStore.open(store.path, mode="a")
    grown.add_episode(store.get_episode(1))  # one more episode: other content
    feats = cached_features(grown, "agentview_image", core, progress=False)
    after = _entries(grown)
    assert feats.shape[0] == 12 and len(after) == 1 and after != before  # rebuilt; the stale entry is gone


def test_damaged_entries_are_refused_naming_the_folder(store_factory, tiny_artifact):
    store = store_factory(n_episodes=2, steps=70)  # 140 rows: 3 chunks of 64
    core = _core(store, tiny_artifact)
    cached_features(store, "agentview_image", core, progress=False)
    entry = cache_root(store.path) / _entries(store)[0]
    (entry / "features" / "1.0.0").unlink()  # zarr would read the missing chunk as zeros
    with pytest.raises(FeatureCacheError, match=r"damaged \(2 of 3 chunk files present\); delete it to rebuild"):
        cached_features(store, "agentview_image", core, progress=False)
    shutil.rmtree(entry)
    cached_features(store, "agentview_image", core, progress=False)
    (entry / ".zattrs").write_text("{not json")
    with pytest.raises(FeatureCacheError, match="damaged \\(unreadable"):
        cached_features(store, "agentview_image", core, progress=False)
