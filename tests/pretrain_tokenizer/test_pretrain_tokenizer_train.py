"""Tokenizer training: reconstruction improves on synthetic images; kill-and-resume is exact;
checkpoints rebuild the model; the hydra entry script validates its config."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.tokenizer.checkpoint import load_checkpoint, load_dvae
from pretrain.tokenizer.objective import AnnealConfig
from pretrain.tokenizer.train import DataConfig, TrainConfig, train_tokenizer
from toto_robot.models.dvae import DVAEConfig

ROOT = Path(__file__).resolve().parents[2]


def _cfg(**kw):
    base = dict(steps=4, batch_size=4, lr=3e-3, warmup_steps=2, log_every=1, eval_every=10**6, ckpt_every=10**6,
                eval_images=16, grid_images=4, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.mark.slow  # ~13 s alone, ~40 s on a busy 2-core box
def test_reconstruction_improves_with_training(tmp_path):
    steps = 40
    anneal = AnnealConfig(tau_start=1.0, tau_end=0.25, tau_steps=steps, kl_weight=0.0, kl_steps=1)
    train_tokenizer(DVAEConfig.named("tiny"), _cfg(steps=steps, batch_size=8, eval_every=steps, eval_images=32),
                    anneal, DataConfig(synthetic=True), tmp_path)
    evals = [r["eval"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines()) if "eval" in r]
    before, after = evals[0], evals[-1]
    assert after["psnr"] > before["psnr"] + 2.0, (before, after)  # hard codes: encode -> decode
    assert after["usage"] > before["usage"]
    grid = np.asarray(Image.open(tmp_path / "recon_grid.png"))
    assert grid.shape == (2 * 128, 4 * 128, 3)
    assert not list(tmp_path.rglob("*.tmp"))


def test_resume_continues_exactly(tmp_path):
    tiny, anneal, data = DVAEConfig.named("tiny"), AnnealConfig(tau_steps=4, kl_steps=2), DataConfig(synthetic=True)
    train_tokenizer(tiny, _cfg(steps=4, ckpt_every=2), anneal, data, tmp_path / "straight")
    train_tokenizer(tiny, _cfg(steps=2, ckpt_every=2), anneal, data, tmp_path / "killed")  # stops at 2 ...
    train_tokenizer(tiny, _cfg(steps=4, ckpt_every=2), anneal, data, tmp_path / "killed")  # ... resumes to 4
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert a["step"] == b["step"] == 4
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    model = load_dvae(tmp_path / "killed" / "checkpoints" / "last.pt")
    assert model.cfg == tiny and not model.training
    with pytest.raises(ValueError, match="model config differs"):
        train_tokenizer(DVAEConfig.named("tiny", vocab_size=256), _cfg(steps=6), anneal, data, tmp_path / "killed")


def test_bad_checkpoint_file_is_named(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt: unreadable tokenizer checkpoint"):
        load_dvae(bad)


def test_entry_script_help_and_config_validation(tmp_path):
    help_ = subprocess.run([sys.executable, "train_tokenizer.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_.returncode == 0 and "Gumbel-softmax" in help_.stdout and "codebook usage" in help_.stdout
    bad = subprocess.run([sys.executable, "train_tokenizer.py", "tokenizer=tiny", "train.stepz=3",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "stepz" in bad.stderr
