"""Export from real training checkpoints (tokenizer file, pretrain DCP directory), with a probe's
pool head, through the library call and through `export_encoder.py`."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pretrain.export import export_from_checkpoints, load_pool_head, load_transformer_checkpoint, save_pool_head
from pretrain.tokenizer.checkpoint import save_checkpoint
from pretrain.train import checkpoint as pretrain_checkpoint
from toto_robot.encoder import load_encoder
from toto_robot.models.pooling import AttentionPool

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def checkpoints(tiny_models, tmp_path_factory):
    dvae, transformer = tiny_models
    root = tmp_path_factory.mktemp("ckpts")
    save_checkpoint(root / "tokenizer.pt", dvae, None, step=10)
    opt = torch.optim.AdamW(transformer.parameters(), lr=1e-3)
    state = {"step": 5, "model_config": dataclasses.asdict(transformer.cfg)}
    pretrain_checkpoint.save(root / "run" / "checkpoints", 5, transformer, opt, state)
    torch.manual_seed(2)
    head = AttentionPool(transformer.cfg.dim, n_heads=4)
    save_pool_head(root / "best_attention_head.safetensors", head, {"layer": 2})
    return root, head


def test_transformer_weights_load_from_a_pretrain_checkpoint(tiny_models, checkpoints):
    _, transformer = tiny_models
    root, _ = checkpoints
    for path in (root / "run", root / "run" / "checkpoints", root / "run" / "checkpoints" / "step_00000005"):
        loaded = load_transformer_checkpoint(path)
        assert loaded.cfg == transformer.cfg
        for (name, a), b in zip(transformer.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a, b), name
    with pytest.raises(FileNotFoundError, match="no pretrain checkpoint"):
        load_transformer_checkpoint(root / "nowhere")


def test_export_from_checkpoints_with_a_probe_pool_head(tiny_models, checkpoints, tmp_path):
    dvae, transformer = tiny_models
    root, head = checkpoints
    from pretrain.export import ExportPoolingConfig

    pooling = ExportPoolingConfig(checkpoint=str(root / "best_attention_head.safetensors"))
    enc = export_from_checkpoints(root / "tokenizer.pt", root / "run", tmp_path / "e.safetensors", layer=2, pooling=pooling)
    frames = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    with torch.no_grad():
        codes = dvae.encode(torch.from_numpy(frames)).reshape(2, -1)
        want = head(transformer.features(codes, layer=2))
    assert torch.equal(enc.encode_pooled(frames), want)
    assert enc.config["provenance"]["pool_head"]["layer"] == 2
    cfg, loaded, meta = load_pool_head(root / "best_attention_head.safetensors", transformer.cfg.dim)
    assert cfg == head.config and meta["layer"] == 2
    with pytest.raises(ValueError, match="trained on D=64 features, the encoder has D=32"):
        load_pool_head(root / "best_attention_head.safetensors", 32)


def test_export_encoder_script(checkpoints, tmp_path):
    root, _ = checkpoints
    out = tmp_path / "enc.safetensors"
    run = subprocess.run(
        [sys.executable, str(ROOT / "export_encoder.py"), f"tokenizer_checkpoint={root / 'tokenizer.pt'}",
         f"transformer_checkpoint={root / 'run'}", "layer=-1", "pooling.kind=avg", f"out={out}",
         f"hydra.run.dir={tmp_path / 'hydra'}"],
        capture_output=True, text=True, timeout=180, cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    enc = load_encoder(out)
    assert enc.layer == 3 and enc.config["pooling"]["kind"] == "avg" and enc.encoder_hash in run.stdout
    helptext = subprocess.run([sys.executable, str(ROOT / "export_encoder.py"), "--help"], capture_output=True, text=True,
                              timeout=180)
    assert helptext.returncode == 0 and "export_encoder" in helptext.stdout and "encoder_hash" in helptext.stdout
