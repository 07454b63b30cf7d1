"""dVAE shapes, input handling, named sizes vs conf/tokenizer, and the objective's metrics."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pretrain.tokenizer.objective import codebook_usage, kl_to_uniform, psnr
from pretrain.tokenizer.synthetic import synthetic_images
from toto_robot.config import as_dataclass
from toto_robot.models.dvae import DVAE, DVAE_SIZES, DVAEConfig, to_uint8

CONF = Path(__file__).resolve().parents[2] / "conf" / "tokenizer"


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_encode_decode_shapes(size):
    torch.manual_seed(0)
    model = DVAE(DVAEConfig.named(size)).eval()
    n = 3 if size == "tiny" else 1  # base's decoder is slow on a shared CPU
    x = synthetic_images(n, generator=torch.Generator().manual_seed(0))
    codes = model.encode(x)
    assert codes.shape == (n, 16, 16) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < model.cfg.vocab_size
    img = model.decode(codes)
    assert img.shape == (n, 3, 128, 128) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1
    assert to_uint8(img).shape == (n, 128, 128, 3)
    out = model(x, tau=0.5)
    assert out.recon.shape == (n, 3, 128, 128) and out.logits.shape == (n, model.cfg.vocab_size, 16, 16)


def test_uint8_and_float_inputs_agree_and_encoder_runs_without_decoder():
    torch.manual_seed(0)
    model = DVAE(DVAEConfig.named("tiny")).eval()
    x = synthetic_images(2, generator=torch.Generator().manual_seed(1))
    as_float = x.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(model.logits(x), model.logits(as_float))
    codes = model.encode(x)
    del model.decoder  # the frozen-encoder artifact keeps only the encoder half
    assert torch.equal(model.encode(x), codes)


def test_vq_codes_are_the_nearest_codebook_rows_and_crops_train():
    torch.manual_seed(0)
    model = DVAE(DVAEConfig.named("tiny", quantizer="vq", vocab_size=64, code_dim=8)).eval()
    x = synthetic_images(2, generator=torch.Generator().manual_seed(2))
    z = model.encoder.latents(model.normalize(x))
    assert z.shape == (2, 8, 16, 16) and torch.allclose(z.norm(dim=1), torch.ones(2, 16, 16), atol=1e-5)
    dist = ((z[:, None] - model.encoder.codebook[None, :, :, None, None]) ** 2).sum(2)  # (B, K, g, g)
    assert torch.equal(model.encode(x), dist.argmin(1))  # argmax of the scores = nearest code
    assert model.decode(model.encode(x)).shape == (2, 3, 128, 128)
    out = model(x[:, :64, 32:96])  # a crop: the nets are convolutional
    assert out.recon.shape == (2, 3, 64, 64) and out.codes.shape == (2, 8, 8) and out.latents.shape == (2, 8, 8, 8)
    with pytest.raises(ValueError, match="multiples of 8"):
        model(x[:, :60, :60])
    assert "encoder.codebook" in model.state_dict()  # the artifact carries the codebook with the encoder
    codes = model.encode(x)
    del model.decoder
    assert torch.equal(model.encode(x), codes)
    with pytest.raises(ValueError, match="quantizer must be one of"):
        DVAEConfig(quantizer="fsq")


def test_bad_inputs_name_the_problem():
    model = DVAE(DVAEConfig.named("tiny"))
    with pytest.raises(ValueError, match=r"uint8 images \(B, 128, 128, 3\)"):
        model.encode(torch.zeros(1, 64, 64, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="float"):
        model.encode(torch.zeros(1, 128, 128, 3))  # float must be channels-first
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 512\)"):
        model.decode(torch.full((1, 16, 16), 512))
    with pytest.raises(ValueError, match=r"codes \(B, 16, 16\)"):
        model.decode(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="len"):
        DVAEConfig(enc_channels=(8, 16))
    with pytest.raises(KeyError, match="unknown dVAE size"):
        DVAEConfig.named("huge")


@pytest.mark.parametrize("name", sorted(DVAE_SIZES))
def test_conf_group_matches_named_size(name):
    cfg = as_dataclass(DVAEConfig, OmegaConf.load(CONF / f"{name}.yaml"))
    assert dataclasses.asdict(cfg) == dataclasses.asdict(DVAE_SIZES[name])


def test_base_encoder_is_lean():
    model = DVAE(DVAEConfig.named("base"))
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert n_enc < 8e6  # vs 54M for the DALL-E encoder
    assert model.cfg.vocab_size == 8192 and model.cfg.grid == 16


def test_metrics():
    codes = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    m = codebook_usage(codes, vocab_size=8)
    assert m["usage"] == 0.5 and math.isclose(m["perplexity"], 4.0)
    assert abs(kl_to_uniform(torch.zeros(2, 16, 4, 4)).item()) < 1e-6
    peaked = torch.zeros(1, 16, 2, 2)
    peaked[:, 3] = 100.0
    assert math.isclose(kl_to_uniform(peaked).item(), math.log(16), rel_tol=1e-4)
    a = torch.zeros(1, 3, 4, 4)
    assert math.isclose(psnr(a, a + 0.1), 20.0, rel_tol=1e-4)
