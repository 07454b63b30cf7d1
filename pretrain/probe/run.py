"""`probe.py`'s job: build the frozen encoder, load a labelled dataset, sweep layers, report.

The encoder comes from an artifact (probing layers 0..its exported layer) or from a tokenizer +
transformer checkpoint pair, which is first exported at full depth into the run directory, so
every probe result is tied to an `encoder_hash`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pretrain.probe.datasets import ProbeDatasetConfig, load_probe_data
from pretrain.probe.report import write_report
from pretrain.probe.sweep import ProbeTrainConfig, probe_layers, sweep
from toto_robot.encoder import EncoderConfig, TotoEncoder, load_encoder_from_config

log = logging.getLogger(__name__)


@dataclass
class ProbeEncoderConfig(EncoderConfig):
    """An artifact, or (leave artifact null) a tokenizer + transformer checkpoint pair."""

    artifact: str | None = None
    tokenizer_checkpoint: str | None = None
    transformer_checkpoint: str | None = None


@dataclass
class LayerSweepConfig:
    step: int = 2  # probe every step-th layer (the last one always)
    layers: list[int] | None = None  # explicit layers instead


@dataclass
class ProbeConfig:
    encoder: ProbeEncoderConfig = field(default_factory=ProbeEncoderConfig)
    dataset: ProbeDatasetConfig = field(default_factory=ProbeDatasetConfig)
    layers: LayerSweepConfig = field(default_factory=LayerSweepConfig)
    train: ProbeTrainConfig = field(default_factory=ProbeTrainConfig)
    compare_random_init: bool = False  # also probe the same architecture with random weights (the baseline)
    random_init_seed: int = 0


def build_probe_encoder(cfg: ProbeEncoderConfig, out_dir: Path) -> TotoEncoder:
    if cfg.artifact:
        return load_encoder_from_config(cfg)
    if not (cfg.tokenizer_checkpoint and cfg.transformer_checkpoint):
        raise ValueError("probe: set encoder.artifact, or both encoder.tokenizer_checkpoint and encoder.transformer_checkpoint")
    from pretrain.export import export_from_checkpoints

    path = out_dir / "encoder_full_depth.safetensors"
    export_from_checkpoints(cfg.tokenizer_checkpoint, cfg.transformer_checkpoint, path, layer=-1, pooling=None)
    return load_encoder_from_config(EncoderConfig(artifact=str(path), device=cfg.device, amp=cfg.amp))


def random_init_twin(encoder: TotoEncoder, out_dir: Path, seed: int) -> TotoEncoder:
    """The encoder's architecture (tokenizer, transformer to its layer) with freshly initialized
    weights, exported next to the results: what pre-training is measured against."""
    import torch

    from pretrain.export import export_encoder
    from toto_robot.models.dvae import DVAE, DVAEConfig
    from toto_robot.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(seed)
    dvae = DVAE(DVAEConfig(**encoder.config["tokenizer"])).eval()
    transformer = Transformer(TransformerConfig(**encoder.config["transformer"])).eval()
    path = out_dir / "encoder_random_init.safetensors"
    export_encoder(dvae, transformer, path, layer=-1, pooling=None, provenance={"random_init_seed": seed})
    return load_encoder_from_config(EncoderConfig(artifact=str(path), device=str(encoder.device), amp=encoder.amp_dtype is not None))


def run_probe(cfg: ProbeConfig, out_dir: Path) -> dict[str, Any]:
    """Sweep, write results.{csv,md}, score_vs_layer.png and the best head per pool kind; summary dict."""
    from pretrain.export import save_pool_head

    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = build_probe_encoder(cfg.encoder, out_dir)
    data = load_probe_data(cfg.dataset, encoder.image_size)
    layers = probe_layers(encoder.layer, cfg.layers.step, cfg.layers.layers)
    log.info("probing layers %s of %s on %d train / %d val samples (%s)", layers, encoder.encoder_hash[:12],
             len(data.train_x), len(data.val_x), data.task)
    results = sweep(encoder, data, layers, cfg.train, out_dir / "features", encoder.device)
    if cfg.compare_random_init:
        baseline = random_init_twin(encoder, out_dir, cfg.random_init_seed)
        results += sweep(baseline, data, layers, cfg.train, out_dir / "features", baseline.device, name="random_init")
    cams = "+".join(k.removesuffix("_image") for k in cfg.dataset.image_keys) if cfg.dataset.kind == "episodes" else ""
    title = f"{cfg.dataset.kind} probe ({data.task}{', ' + cams if cams else ''}), encoder {encoder.encoder_hash[:12]}"
    paths = write_report(results, out_dir, title)
    best = {}
    for pool in cfg.train.pools:
        top = max((r for r in results if r.pool == pool and r.encoder == "pretrained"), key=lambda r: r.score)
        extra = {"layer": top.layer, "encoder_hash": encoder.encoder_hash, top.metric: top.score}
        save_pool_head(out_dir / f"best_{pool}_head.safetensors", top.head.pool, extra)
        best[pool] = {"layer": top.layer, top.metric: top.score,
                      **{k: v for k, v in top.row().items() if k in ("pos_err_mm", "yaw_err_deg") and v is not None}}
    summary = {"encoder_hash": encoder.encoder_hash, "task": data.task, "layers": layers, "best": best,
               "rows": [r.row() for r in results], **{k: str(v) for k, v in paths.items()}}
    tmp = out_dir / ".summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=2))
    tmp.replace(out_dir / "summary.json")
    return summary
