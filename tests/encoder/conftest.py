"""Tiny random-initialized dVAE + transformer (the real modules) and an artifact exported from them."""

from pathlib import Path

import pytest
import torch

from pretrain.export import export_encoder
from toto_robot.models.dvae import DVAE, DVAEConfig
from toto_robot.models.pooling import PoolingConfig
from toto_robot.models.transformer import Transformer, config_for



@pytest.fixture(scope="session")
def tiny_models() -> tuple[DVAE, Transformer]:
    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig.named("tiny")).eval()
    transformer = Transformer(config_for("tiny", vocab_size=dvae.cfg.vocab_size, n_layers=3, max_seq_len=768)).eval()
    return dvae, transformer


@pytest.fixture(scope="session")
def artifact(tiny_models, tmp_path_factory) -> Path:
    """Layer-2 artifact of the tiny models with an attention-pooling head."""
    path = tmp_path_factory.mktemp("artifact") / "encoder.safetensors"
    torch.manual_seed(1)
    export_encoder(*tiny_models, path, layer=2, pooling=PoolingConfig("attention", n_heads=4, out_dim=32))
    return path
