"""export -> load_encoder round trip, input checks, version/integrity errors, frozen behaviour."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import toto_robot
from pretrain.export import export_encoder
from toto_robot.encoder import ARTIFACT_VERSION, METADATA_KEY, EncoderArtifactError, encoder_hash, load_encoder

LAYER, DIM = 2, 64  # the `artifact` fixture: layer 2 of the 3-layer tiny transformer (width 64)


def _frames(*lead: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*lead, 128, 128, 3), dtype=np.uint8)


def _source_features(dvae, transformer, frames: np.ndarray, layer: int = LAYER) -> torch.Tensor:
    x = torch.from_numpy(frames.reshape(-1, 128, 128, 3))
    codes = dvae.encode(x).reshape(frames.shape[0], -1)  # (B, K*256): frames in order, raster codes
    with torch.no_grad():
        return transformer.features(codes, layer=layer)


def test_round_trip_gives_identical_features(tiny_models, artifact):
    dvae, transformer = tiny_models
    enc = toto_robot.load_encoder(artifact)
    batch, hist = _frames(3), _frames(2, 3, seed=1)
    assert torch.equal(enc(batch), _source_features(dvae, transformer, batch))
    assert torch.equal(enc(hist), _source_features(dvae, transformer, hist))
    assert torch.equal(enc(torch.from_numpy(batch)), enc(batch))  # torch input too
    flipped, readonly = batch[..., ::-1], batch.copy()
    readonly.flags.writeable = False
    assert torch.equal(enc(flipped), enc(np.ascontiguousarray(flipped))) and torch.equal(enc(readonly), enc(batch))
    assert torch.equal(enc(batch[0]), enc(batch)[0])  # one frame -> unbatched (256, D)


def test_shapes_and_properties(artifact):
    enc = load_encoder(artifact)
    assert (enc.image_size, enc.n_tokens_per_frame, enc.feature_dim, enc.layer, enc.pool_dim) == (128, 256, DIM, LAYER, 32)
    assert enc(_frames(2)).shape == (2, 256, DIM) and enc(_frames(2, 3)).shape == (2, 768, DIM)
    assert enc(_frames(2, 3)).dtype == torch.float32
    assert enc.feature_shape(3) == (768, DIM)
    assert enc.encode_pooled(_frames(2, 3)).shape == (2, 32) and enc.encode_pooled(_frames()).shape == (32,)
    assert enc.encode_chunked(_frames(5), batch_size=2, pooled=True).shape == (5, 32)
    assert len(enc.encoder_hash) == 64 and enc.config["encoder_hash"] == enc.encoder_hash


def test_history_is_causal_over_frames(artifact):
    enc = load_encoder(artifact)
    hist = _frames(1, 3)
    changed = hist.copy()
    changed[0, 2] = 255 - changed[0, 2]
    a, b = enc(hist), enc(changed)
    assert torch.equal(a[:, :512], b[:, :512])  # earlier frames never see later ones
    assert not torch.equal(a[:, 512:], b[:, 512:])
    # First frame of a history == the frame alone (up to kernel blocking over a longer sequence).
    torch.testing.assert_close(a[:, :256], enc(hist[:, 0]), atol=1e-5, rtol=1e-5)


def test_pool_head_round_trips(tiny_models, artifact, tmp_path):
    # The exported head is the one given; its pooled output survives the round trip exactly.
    from toto_robot.models.pooling import AttentionPool

    dvae, transformer = tiny_models
    torch.manual_seed(3)
    head = AttentionPool(DIM, n_heads=4, n_queries=2).eval()
    enc = export_encoder(dvae, transformer, tmp_path / "e.safetensors", layer=1, pool_head=head)
    frames = _frames(2)
    with torch.no_grad():
        want = head(_source_features(dvae, transformer, frames, layer=1))
    assert torch.equal(enc.encode_pooled(frames), want)
    assert enc.config["pooling"] == {"kind": "attention", "n_heads": 4, "n_queries": 2, "out_dim": None,
                                     "n_keypoints": 16, "grid": 16, "n_frames": 1, "width": 32}  # keypoint/grid fields unused here


def test_artifact_is_truncated_and_self_describing(tiny_models, artifact):
    dvae, transformer = tiny_models
    with safe_open(str(artifact), "pt") as f:
        names, cfg = set(f.keys()), json.loads(f.metadata()[METADATA_KEY])
    assert cfg["version"] == ARTIFACT_VERSION and cfg["format"] == "toto_robot.encoder"
    assert cfg["transformer"]["n_layers"] == LAYER == cfg["layer"]
    assert cfg["provenance"]["source_layers"] == transformer.cfg.n_layers
    assert cfg["tokenizer"]["vocab_size"] == dvae.cfg.vocab_size and cfg["image_size"] == 128
    assert not any(n.startswith(("transformer.head", "transformer.norm", f"transformer.layers.{LAYER}.")) for n in names)
    assert not any(n.startswith("tokenizer.decoder") for n in names)
    assert any(n.startswith(f"transformer.layers.{LAYER - 1}.") for n in names)
    assert cfg["encoder_hash"] == encoder_hash(cfg, load_file(str(artifact)))


def test_hash_ignores_provenance_but_not_weights_or_layer(tiny_models, artifact, tmp_path):
    dvae, transformer = tiny_models
    again = export_encoder(dvae, transformer, tmp_path / "a.safetensors", layer=LAYER)
    other_layer = export_encoder(dvae, transformer, tmp_path / "b.safetensors", layer=1)
    plain = load_encoder(artifact)  # has a pool head, so a different hash from `again`
    same = export_encoder(dvae, transformer, tmp_path / "c.safetensors", layer=LAYER, provenance={"note": "x"})
    assert again.encoder_hash == same.encoder_hash
    assert len({again.encoder_hash, other_layer.encoder_hash, plain.encoder_hash}) == 3


def test_wrong_inputs_raise_clear_errors(artifact):
    enc = load_encoder(artifact)
    with pytest.raises(ValueError, match=r"expects 128x128x3 frames, got 96x96x3"):
        enc(np.zeros((2, 96, 96, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        enc(np.zeros((2, 128, 128, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, K, H, W, 3\)"):
        enc(np.zeros((128, 128), np.uint8))
    with pytest.raises(ValueError, match="exceed the transformer context of 768"):
        enc(_frames(1, 4))


def _rewrite_metadata(src, dst, **changes):
    tensors = load_file(str(src))
    with safe_open(str(src), "pt") as f:
        cfg = json.loads(f.metadata()[METADATA_KEY])
    cfg.update(changes)
    save_file(tensors, str(dst), metadata={METADATA_KEY: json.dumps(cfg)})


@pytest.mark.parametrize("version,hint", [(ARTIFACT_VERSION + 1, "upgrade toto_robot"), (0, "re-export")])
def test_incompatible_version_is_rejected(artifact, tmp_path, version, hint):
    bad = tmp_path / "v.safetensors"
    _rewrite_metadata(artifact, bad, version=version)
    with pytest.raises(EncoderArtifactError, match=f"version {version} is incompatible.*supports version {ARTIFACT_VERSION}.*{hint}"):
        load_encoder(bad)


def test_edited_or_foreign_files_are_rejected(artifact, tmp_path):
    tensors = load_file(str(artifact))
    with safe_open(str(artifact), "pt") as f:
        meta = f.metadata()
    name = next(n for n in tensors if n.startswith("transformer.layers.0."))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(tmp_path / "edited.safetensors"), metadata=meta)
    with pytest.raises(EncoderArtifactError, match="do not match encoder_hash"):
        load_encoder(tmp_path / "edited.safetensors")
    save_file({"x": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(EncoderArtifactError, match="not a toto_robot encoder artifact"):
        load_encoder(tmp_path / "foreign.safetensors")
    truncated = tmp_path / "truncated.safetensors"
    shutil.copy(artifact, truncated)
    with open(truncated, "r+b") as f:
        f.truncate(artifact.stat().st_size // 2)
    with pytest.raises(EncoderArtifactError, match="not a readable safetensors file"):
        load_encoder(truncated)
    with pytest.raises(EncoderArtifactError, match="no encoder artifact"):
        load_encoder(tmp_path / "missing.safetensors")


def test_encoder_is_frozen_but_its_pool_head_can_be_trained(artifact):
    enc = load_encoder(artifact)
    assert not any(p.requires_grad for p in enc.parameters())
    assert not enc.training and not enc.transformer.training
    enc.train()
    assert not enc.transformer.training and not enc.tokenizer.training and enc.pool_head.training
    enc.pool_head.requires_grad_(True)
    feats = enc(_frames(2))
    assert not feats.requires_grad
    enc.pool(feats).sum().backward()  # cached/frozen features feed a trainable head
    assert all(p.grad is not None for p in enc.pool_head.parameters())
    assert all(p.grad is None for p in enc.transformer.parameters())


def test_encoder_config_group_loads_the_artifact(artifact):
    from toto_robot.config import CONF_DIR, as_dataclass
    from toto_robot.encoder import EncoderConfig, load_encoder_from_config
    from omegaconf import OmegaConf

    cfg = as_dataclass(EncoderConfig, OmegaConf.merge(OmegaConf.load(CONF_DIR / "encoder" / "toto.yaml"), {"artifact": str(artifact)}))
    enc = load_encoder_from_config(cfg)  # device auto: cpu here (tests hide GPUs), so no autocast
    assert enc.device.type == "cpu" and enc.amp_dtype is None and enc.layer == LAYER


def test_export_rejects_bad_layers_and_mismatched_models(tiny_models, tmp_path):
    from toto_robot.models.transformer import Transformer, config_for

    dvae, transformer = tiny_models
    with pytest.raises(ValueError, match=r"layer 4 out of range for a 3-layer transformer"):
        export_encoder(dvae, transformer, tmp_path / "x.safetensors", layer=4)
    with pytest.raises(ValueError, match="tokenizer vocab 512 != transformer vocab 64"):
        export_encoder(dvae, Transformer(config_for("tiny", vocab_size=64)), tmp_path / "x.safetensors")
    assert not list(tmp_path.iterdir())


def test_policy_state_dict_keeps_head_and_hash_not_the_trunk(tiny_models, artifact, tmp_path):
    class Policy(torch.nn.Module):
        def __init__(self, path):
            super().__init__()
            self.encoder = load_encoder(path)
            self.encoder.pool_head.requires_grad_(True)
            self.out = torch.nn.Linear(32, 7)

    policy = Policy(artifact)
    sd = policy.state_dict()
    assert not any(k.startswith(("encoder.tokenizer.", "encoder.transformer.")) for k in sd)
    assert any(k.startswith("encoder.pool_head.") for k in sd) and "encoder.encoder_hash_bytes" in sd
    with torch.no_grad():
        policy.encoder.pool_head.query.add_(1.0)
    sd = policy.state_dict()
    fresh = Policy(artifact)
    fresh.load_state_dict(sd)  # strict: trunk keys come from the artifact
    assert torch.equal(fresh.encoder.pool_head.query, policy.encoder.pool_head.query)
    frames = _frames(2)
    assert torch.equal(fresh.encoder.encode_pooled(frames), policy.encoder.encode_pooled(frames))
    other = export_encoder(*tiny_models, tmp_path / "o.safetensors", layer=1, pooling=None)
    other_policy = Policy(artifact)
    other_policy.encoder = other
    with pytest.raises(EncoderArtifactError, match="saved with encoder .* this encoder is"):
        other_policy.load_state_dict(sd, strict=False)


def test_vq_tokenizer_artifact_carries_its_codebook(tiny_models, tmp_path):
    # A nearest-code tokenizer's codebook is a buffer of its encoder: the artifact must carry it (a
    # loader that dropped it would tokenize with a random book and still run).
    from toto_robot.models.dvae import DVAE, DVAEConfig

    _, transformer = tiny_models
    torch.manual_seed(5)
    dvae = DVAE(DVAEConfig.named("tiny", quantizer="vq", code_dim=8)).eval()
    dvae.encoder.codebook.copy_(torch.nn.functional.normalize(torch.randn_like(dvae.encoder.codebook), dim=1))
    path = tmp_path / "vq.safetensors"
    export_encoder(dvae, transformer, path, layer=1)
    with safe_open(str(path), "pt") as f:
        stored = [k for k in f.keys() if k.endswith("codebook")]
    assert len(stored) == 1
    frames = _frames(2)
    enc = load_encoder(path)
    assert enc.config["tokenizer"]["quantizer"] == "vq"
    assert torch.equal(enc.tokenize(frames), dvae.encode(torch.from_numpy(frames)).reshape(2, -1))
    assert torch.equal(enc(frames), _source_features(dvae, transformer, frames, layer=1))
