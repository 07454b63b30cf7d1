"""Tokenizer training: reconstruction improves on synthetic images (gumbel and vq); the vq codebook
is fitted by k-means and keeps its codes alive; kill-and-resume is exact; checkpoints rebuild the
model; the hydra entry script validates its config."""

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
from pretrain.tokenizer.train import DataConfig, TrainConfig, random_crops, train_tokenizer
from pretrain.tokenizer.vq import CodebookFitter, VQConfig, spherical_kmeans
from toto_robot.models.dvae import DVAE, DVAEConfig

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


VQ_TINY = DVAEConfig.named("tiny", quantizer="vq", vocab_size=64, code_dim=8)


@pytest.mark.slow  # ~15 s alone
def test_vq_tokenizer_fits_its_codebook_on_crops_and_reconstructs_whole_frames(tmp_path):
    steps = 60
    vq = VQConfig(warmup_steps=20, kmeans_batches=4, kmeans_iters=10, restart_every=5)
    train_tokenizer(VQ_TINY, _cfg(steps=steps, batch_size=16, crop=64, eval_every=steps, eval_images=32),
                    AnnealConfig(), DataConfig(synthetic=True), tmp_path, vq=vq)
    records = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in records if "eval" in r]
    before, after = evals[0], evals[-1]  # hard codes on whole 128x128 frames
    assert after["psnr"] > before["psnr"] + 3.0, (before, after)
    assert after["usage"] >= 0.5, after  # k-means start + restarts: most codes in use
    assert any("commit" in r for r in records) and not any("commit" in r for r in records if r.get("step", 0) <= 20)


def test_spherical_kmeans_finds_separated_directions_and_dead_codes_restart():
    g = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(4, 8, generator=g), dim=1)
    x = torch.nn.functional.normalize(centres.repeat(50, 1) + 0.05 * torch.randn(200, 8, generator=g), dim=1)
    book = spherical_kmeans(x, 4, iters=10, generator=g)
    assert (book @ centres.T).max(0).values.min() > 0.99  # every true direction has a centroid
    with pytest.raises(ValueError, match="at least 16 vectors"):
        spherical_kmeans(x[:8], 16, iters=1)
    model = DVAE(VQ_TINY)
    fitter = CodebookFitter(model, VQConfig(restart_every=1, ema_decay=0.5))
    fitter.fit(torch.nn.functional.normalize(torch.randn(256, 8, generator=g), dim=1), g)
    out = model(torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8))
    out.codes[:] = 0  # every latent on code 0: all others starve ...
    for step in range(1, 6):
        stats = fitter.update(out, step)
    assert fitter.restarts > 0 and stats["used_in_batch"] < 0.1  # ... and are moved onto batch latents
    assert torch.allclose(model.encoder.codebook.norm(dim=1), torch.ones(64))


def test_random_crops_are_windows_of_the_frames():
    x = torch.arange(2 * 16 * 16 * 3, dtype=torch.int32).reshape(2, 16, 16, 3)
    c = random_crops(x, 8, torch.Generator().manual_seed(0))
    assert c.shape == (2, 8, 8, 3)
    for i in range(2):
        y0, x0 = divmod(int(c[i, 0, 0, 0] - x[i, 0, 0, 0]) // 3, 16)
        assert torch.equal(c[i], x[i, y0 : y0 + 8, x0 : x0 + 8])
    with pytest.raises(ValueError, match="train.crop 32"):
        random_crops(x, 32, torch.Generator())


def test_vq_resume_continues_exactly(tmp_path):
    vq, data = VQConfig(warmup_steps=2, kmeans_batches=2, kmeans_iters=2, restart_every=1), DataConfig(synthetic=True)
    cfg = dict(batch_size=4, crop=32, ckpt_every=3)
    train_tokenizer(VQ_TINY, _cfg(steps=6, **cfg), AnnealConfig(), data, tmp_path / "straight", vq=vq)
    train_tokenizer(VQ_TINY, _cfg(steps=3, **cfg), AnnealConfig(), data, tmp_path / "killed", vq=vq)
    train_tokenizer(VQ_TINY, _cfg(steps=6, **cfg), AnnealConfig(), data, tmp_path / "killed", vq=vq)
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0, msg=k)
    torch.testing.assert_close(a["objective"]["fitter"]["window"], b["objective"]["fitter"]["window"], rtol=0, atol=0)


def test_bad_checkpoint_file_is_named(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="last.pt: unreadable tokenizer checkpoint"):
        load_dvae(bad)


def test_entry_script_help_and_config_validation(tmp_path):
    help_ = subprocess.run([sys.executable, "train_tokenizer.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert help_.returncode == 0 and "Gumbel-softmax" in help_.stdout and "codebook usage" in help_.stdout
    assert "quantizer=vq" in help_.stdout and "train.crop" in help_.stdout
    bad = subprocess.run([sys.executable, "train_tokenizer.py", "tokenizer=tiny", "train.stepz=3",
                          f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode != 0 and "stepz" in bad.stderr
