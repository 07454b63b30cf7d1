"""Export a frozen-encoder artifact: dVAE encoder + transformer truncated at one layer (+ pool head).

The artifact format is defined (and read) by `toto_robot.encoder`; this module writes it from
trained models or their checkpoints, then loads it back and checks that it reproduces the
source models' features exactly before reporting success.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import toto_robot
from toto_robot.encoder import ARTIFACT_VERSION, FORMAT, METADATA_KEY, TotoEncoder, encoder_hash, load_encoder
from toto_robot.models.dvae import DVAE
from toto_robot.models.pooling import PoolingConfig, build_pooling
from toto_robot.models.transformer import Transformer

log = logging.getLogger(__name__)

POOL_HEAD_KEY = "toto_robot.pool_head"


@dataclass
class ExportPoolingConfig(PoolingConfig):
    """A pooling head for the artifact. With `checkpoint` (a probe's pool head file) its weights and
    pooling config are taken from that file; without, the head is freshly initialized (`seed`)
    for a policy to train."""

    checkpoint: str | None = None
    seed: int = 0


@dataclass
class ExportConfig:
    tokenizer_checkpoint: str = "???"
    transformer_checkpoint: str = "???"
    layer: int | None = None  # 1..n_layers, negative from the top; None = the middle block
    pooling: ExportPoolingConfig | None = field(default_factory=ExportPoolingConfig)
    out: str = "encoder.safetensors"


def resolve_layer(layer: int | None, n_layers: int) -> int:
    """Exported depth in 1..n_layers: None -> ceil(n/2) (Toto's best probes sit mid-network)."""
    if layer is None:
        return (n_layers + 1) // 2
    depth = layer + n_layers + 1 if layer < 0 else layer
    if not 1 <= depth <= n_layers:
        raise ValueError(f"layer {layer} out of range for a {n_layers}-layer transformer (1..{n_layers} or -1..-{n_layers})")
    return depth


def artifact_tensors(
    dvae: DVAE, transformer: Transformer, layer: int, pool_head: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Prefixed tensors: the dVAE encoder, transformer embedding + blocks below `layer`, the pool head."""
    out = {f"tokenizer.{k}": v for k, v in dvae.state_dict().items() if k.startswith("encoder.")}
    kept = ("tok_emb.",) + tuple(f"layers.{i}." for i in range(layer))
    out.update({f"transformer.{k}": v for k, v in transformer.state_dict().items() if k.startswith(kept)})
    if pool_head is not None:
        out.update({f"pool.{k}": v for k, v in pool_head.state_dict().items()})
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def artifact_config(
    dvae: DVAE,
    transformer: Transformer,
    layer: int,
    pooling: PoolingConfig | None,
    pool_dim: int | None,
    provenance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The artifact's JSON config without `encoder_hash` (see toto_robot.encoder for the fields)."""
    tcfg = dataclasses.replace(transformer.cfg, n_layers=layer)
    return {
        "format": FORMAT,
        "version": ARTIFACT_VERSION,
        "image_size": dvae.cfg.image_size,
        "n_tokens_per_frame": dvae.cfg.grid**2,
        "normalization": {"input": "uint8 RGB (H, W, 3)", "scale": 1 / 255, "offset": -0.5},
        "tokenizer": _json_dict(dvae.cfg),
        "transformer": _json_dict(tcfg),
        "layer": layer,
        "feature_dim": tcfg.dim,
        "pooling": None if pooling is None else _json_dict(pooling),
        "pool_dim": pool_dim,
        "provenance": {
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "toto_robot_version": toto_robot.__version__,
            "source_layers": transformer.cfg.n_layers,
            **dict(provenance or {}),
        },
    }


def export_encoder(
    dvae: DVAE,
    transformer: Transformer,
    out: str | os.PathLike,
    layer: int | None = None,
    pooling: PoolingConfig | None = None,
    pool_head: nn.Module | None = None,
    provenance: Mapping[str, Any] | None = None,
    check: bool = True,
) -> TotoEncoder:
    """Write the artifact to `out` (temp file + rename) and return it loaded back.

    `pooling` without `pool_head` builds a fresh head; a given `pool_head` (AttentionPool/AvgPool)
    describes itself through its `config`. With `check`, the loaded encoder must give
    bit-identical layer features to `transformer.features` on the `dvae.encode` codes of random
    frames; a mismatch raises and removes the file.
    """
    if dvae.cfg.vocab_size != transformer.cfg.vocab_size:
        raise ValueError(f"tokenizer vocab {dvae.cfg.vocab_size} != transformer vocab {transformer.cfg.vocab_size}")
    depth = resolve_layer(layer, transformer.cfg.n_layers)
    if pooling is not None and pool_head is None:
        pool_head = build_pooling(pooling, transformer.cfg.dim)
    pool_dim = None if pool_head is None else int(pool_head.out_dim)
    pooling = None if pool_head is None else pool_head.config
    tensors = artifact_tensors(dvae, transformer, depth, pool_head)
    config = artifact_config(dvae, transformer, depth, pooling, pool_dim, provenance)
    config["encoder_hash"] = encoder_hash(config, tensors)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(config, sort_keys=True)})
    os.chmod(tmp, 0o644)  # readable by every user of a shared install (temp files may be created 0600)
    os.replace(tmp, out)
    encoder = load_encoder(out)
    if check:
        try:
            check_round_trip(encoder, dvae, transformer, depth)
        except RuntimeError:
            out.unlink(missing_ok=True)
            raise
    log.info("wrote %s: layer %d/%d, D=%d, pool %s, hash %s", out, depth, transformer.cfg.n_layers,
             transformer.cfg.dim, config["pooling"], config["encoder_hash"][:16])
    return encoder


def load_transformer_checkpoint(path: str | os.PathLike) -> Transformer:
    """Transformer weights (no optimizer) from a pretrain checkpoint: a `step_*` directory, or a run's
    `checkpoints/` directory or run directory (newest step taken)."""
    import torch.distributed.checkpoint as dcp

    from pretrain.train.checkpoint import latest
    from toto_robot.models.transformer import TransformerConfig

    path = Path(path)
    if not (path / "train_state.pt").is_file():
        found = latest(path) or latest(path / "checkpoints")
        if found is None:
            raise FileNotFoundError(f"no pretrain checkpoint (step_*/train_state.pt) at or under {path}")
        path = found
    state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=False)
    if "model_config" not in state:
        raise ValueError(f"{path}/train_state.pt has no model_config; keys: {sorted(state)}")
    model = Transformer(TransformerConfig(**state["model_config"]))
    weights = model.state_dict()
    with warnings.catch_warnings():  # "torch.distributed ... uninitialized": a single-process load is intended
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": weights}, checkpoint_id=str(path))  # reads only the model entries, in place
    model.load_state_dict(weights)
    return model.eval()


def export_from_checkpoints(
    tokenizer_checkpoint: str | os.PathLike,
    transformer_checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    layer: int | None = None,
    pooling: ExportPoolingConfig | None = None,
) -> TotoEncoder:
    """`export_encoder` from checkpoint paths; a pooling checkpoint supplies head weights and config."""
    from pretrain.tokenizer.checkpoint import load_dvae

    dvae = load_dvae(tokenizer_checkpoint)
    transformer = load_transformer_checkpoint(transformer_checkpoint)
    provenance: dict[str, Any] = {
        "tokenizer_checkpoint": str(Path(tokenizer_checkpoint).resolve()),
        "transformer_checkpoint": str(Path(transformer_checkpoint).resolve()),
    }
    head = None
    if pooling is not None and pooling.checkpoint:
        pooling_cfg, head, meta = load_pool_head(pooling.checkpoint, transformer.cfg.dim)
        provenance["pool_head"] = {"path": str(Path(pooling.checkpoint).resolve()), **meta}
        if meta.get("layer") is not None and meta["layer"] != resolve_layer(layer, transformer.cfg.n_layers):
            log.warning("pool head %s was trained on layer %s features, exporting layer %s",
                        pooling.checkpoint, meta["layer"], resolve_layer(layer, transformer.cfg.n_layers))
        pooling = pooling_cfg
    elif pooling is not None:
        torch.manual_seed(pooling.seed)
    return export_encoder(dvae, transformer, out, layer=layer, pooling=pooling, pool_head=head, provenance=provenance)


@torch.no_grad()
def check_round_trip(encoder: TotoEncoder, dvae: DVAE, transformer: Transformer, layer: int, n: int = 2) -> None:
    """RuntimeError unless the artifact's codes and features equal the source models' exactly."""
    g = torch.Generator().manual_seed(0)
    s = dvae.cfg.image_size
    frames = torch.randint(0, 256, (n, s, s, 3), dtype=torch.uint8, generator=g)
    was = dvae.training, transformer.training
    dvae.eval(), transformer.eval()
    try:
        codes = dvae.encode(frames.to(_device(dvae))).reshape(n, -1).long()
        want = transformer.features(codes.to(_device(transformer)), layer=layer).float().cpu()
    finally:
        dvae.train(was[0]), transformer.train(was[1])
    if not torch.equal(encoder.tokenize(frames).cpu(), codes.cpu()):
        raise RuntimeError("exported tokenizer codes differ from the source dVAE's")
    got = encoder(frames).cpu()
    # Same CPU kernels on the same fp32 weights give identical bits; another device only close ones.
    same = torch.equal(got, want) if _device(transformer).type == "cpu" else torch.allclose(got, want, rtol=1e-3, atol=1e-3)
    if not same:
        raise RuntimeError(f"exported features differ from the source model's (max abs diff {(got - want).abs().max():.3g})")


def save_pool_head(path: str | os.PathLike, head: nn.Module, extra: Mapping[str, Any] | None = None) -> Path:
    """A trained pooling head (e.g. a probe's) as .safetensors, its config in the metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"pooling": _json_dict(head.config), "feature_dim": head.dim, **dict(extra or {})}
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tensors = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(tensors, str(tmp), metadata={POOL_HEAD_KEY: json.dumps(meta, sort_keys=True)})
    os.replace(tmp, path)
    return path


def load_pool_head(path: str | os.PathLike, feature_dim: int) -> tuple[PoolingConfig, nn.Module, dict[str, Any]]:
    """(pooling config, head with weights loaded, metadata) of a file from `save_pool_head`."""
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get(POOL_HEAD_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a pool head file (no {POOL_HEAD_KEY!r} metadata)")
    meta = json.loads(raw)
    if meta["feature_dim"] != feature_dim:
        raise ValueError(f"{path}: pool head was trained on D={meta['feature_dim']} features, the encoder has D={feature_dim}")
    pooling = PoolingConfig(**meta["pooling"])
    head = build_pooling(pooling, feature_dim)
    head.load_state_dict(load_file(str(path)))
    return pooling, head, meta


def _json_dict(obj: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device
