"""A tiny frozen encoder artifact (real dVAE + transformer, random weights) and small real zarr
stores in the Franka spec, for the behaviour-cloning tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from envs.collect import EXTRAS
from toto_robot.episode_store import EpisodeStore
from toto_robot.spec import franka_shape_meta


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory) -> Path:
    """Layer-2 artifact: dVAE `tiny` (128 px -> 16x16 codes of 512) + a 2-layer width-32 transformer."""
    from pretrain.export import export_encoder
    from toto_robot.models.dvae import DVAE, DVAEConfig
    from toto_robot.models.transformer import Transformer, config_for

    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig.named("tiny")).eval()
    transformer = Transformer(config_for("tiny", vocab_size=dvae.cfg.vocab_size, dim=32, n_heads=4, n_layers=2,
                                         max_seq_len=512)).eval()
    path = tmp_path_factory.mktemp("encoder") / "tiny.safetensors"
    export_encoder(dvae, transformer, path, layer=2, pooling=None)
    return path


def make_store(path: Path, n_episodes: int = 3, steps: int = 8, cameras: tuple[str, ...] = ("agentview_image",),
               size: int = 128, seed: int = 0) -> EpisodeStore:
    """Episodes whose actions are a fixed function of the observation (learnable exactly)."""
    rng = np.random.default_rng(seed)
    spec = franka_shape_meta(list(cameras), size)
    store = EpisodeStore.create(path, spec, extras=EXTRAS)
    for e in range(n_episodes):
        eef = (np.array([0.45, 0.0, 0.2]) + rng.normal(0, 0.05, (steps, 3))).astype(np.float32)
        cube = (np.array([0.5, 0.0, 0.025]) + rng.normal(0, 0.05, (steps, 3))).astype(np.float32)
        ep = {k: rng.integers(0, 256, (steps, size, size, 3), dtype=np.uint8) for k in cameras}
        ep.update(
            eef_pos=eef,
            eef_quat=np.tile(np.array([0, 1, 0, 0], np.float32), (steps, 1)),
            gripper_width=rng.uniform(0, 0.08, (steps, 1)).astype(np.float32),
            joint_pos=rng.normal(0, 0.2, (steps, 7)).astype(np.float32),
            cube_pos=cube,
            cube_quat=np.tile(np.array([1, 0, 0, 0], np.float32), (steps, 1)),
            cube_size=np.full((steps, 1), 0.05, np.float32),
            episode_seed=np.full((steps, 1), e, np.int64),
        )
        act = np.zeros((steps, 7), np.float32)
        act[:, :3] = np.clip((cube - eef) * 8, -1, 1)
        act[:, 6] = np.where(np.arange(steps) >= steps // 2, 1.0, -1.0)
        ep["action"] = act
        store.add_episode(ep)
    return store


@pytest.fixture
def store_factory(tmp_path):
    def make(name: str = "demos.zarr", **kw) -> EpisodeStore:
        return make_store(tmp_path / name, **kw)

    return make
