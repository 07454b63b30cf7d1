"""The dVAE training loop: AdamW with warmup + cosine, annealed Gumbel temperature and KL weight,
bf16 autocast on GPU, periodic hard-code evaluation (PSNR, codebook usage, perplexity), a
reconstruction grid PNG, and atomic checkpoints that a rerun in the same folder resumes from.

With synthetic data, batch k is generated from seed (seed, k) and the RNG state is checkpointed,
so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pretrain.data.sources import SourceConfig
from pretrain.tokenizer.checkpoint import load_checkpoint, restore_rng, save_checkpoint
from pretrain.tokenizer.grid import save_recon_grid
from pretrain.tokenizer.objective import AnnealConfig, dvae_loss, evaluate, kl_weight, temperature
from pretrain.tokenizer.synthetic import synthetic_images
from pretrain.train.metrics import drop_records_after
from toto_robot.models.dvae import DVAE, DVAEConfig, to_uint8

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 100_000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # auto: cuda if available
    amp: bool = True  # bf16 autocast on cuda (ignored on cpu)
    log_every: int = 100
    eval_every: int = 2000
    ckpt_every: int = 2000
    eval_images: int = 256
    grid_images: int = 16
    resume: bool = True  # continue from <out_dir>/checkpoints/last.pt when present


@dataclass
class DataConfig:
    """Training frames: `synthetic` procedural images, or frames sampled from `sources`.

    `eval_sources`: held-out frames for PSNR/usage (e.g. an evaluation-seed episode store); empty
    draws them from `sources`, which then measures fit, not generalization."""

    synthetic: bool = False
    sources: list[SourceConfig] = field(default_factory=list)
    eval_sources: list[SourceConfig] = field(default_factory=list)
    shuffle_buffer: int = 2048
    workers: int = 4


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def _batches(data: DataConfig, cfg: TrainConfig, start: int, size: int) -> Iterator[torch.Tensor]:
    """(B, size, size, 3) uint8 batches for steps start, start + 1, ..."""
    if data.synthetic:
        step = start
        while True:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            yield synthetic_images(cfg.batch_size, size=size, generator=g)
            step += 1
    from pretrain.data.frames import ShuffledFrames, frame_batches

    ds = ShuffledFrames(data.sources, buffer=data.shuffle_buffer, seed=cfg.seed + start)
    yield from frame_batches(ds, cfg.batch_size, data.workers)


def _eval_images(data: DataConfig, cfg: TrainConfig, size: int) -> torch.Tensor:
    if data.synthetic:
        return synthetic_images(cfg.eval_images, size=size, generator=torch.Generator().manual_seed(cfg.seed + 999_331))
    from pretrain.data.frames import ShuffledFrames

    it = iter(ShuffledFrames(data.eval_sources or data.sources, buffer=data.shuffle_buffer, seed=cfg.seed + 999_331))
    return torch.from_numpy(np.stack([next(it) for _ in range(cfg.eval_images)]))


def train_tokenizer(
    model_cfg: DVAEConfig, cfg: TrainConfig, anneal: AnnealConfig, data: DataConfig, out_dir: str | Path,
    run_config: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Train (or resume) a dVAE in `out_dir`; returns the last evaluation's metrics."""
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "last.pt"
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    amp = cfg.amp and device.type == "cuda"
    torch.manual_seed(cfg.seed)
    model = DVAE(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if DVAEConfig(**state["dvae_config"]) != model_cfg:
            raise ValueError(f"{ckpt_path}: model config differs from the configured one; start a fresh run with "
                             "run_name=<new name> (or delete that run folder)")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
        restore_rng(state)
        drop_records_after(out / "metrics.jsonl", step)  # steps after the checkpoint are replayed
        log.info("resumed from %s at step %d", ckpt_path, step)
    held_out = _eval_images(data, cfg, model_cfg.image_size).to(device)
    metrics_file = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    last_eval: dict[str, float] = {}

    def evaluate_and_log(at: int) -> dict[str, float]:
        model.eval()
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            ev = evaluate(model, held_out)
            grid = held_out[: cfg.grid_images]
            recon = to_uint8(model.decode(model.encode(grid)).float())
        model.train()
        save_recon_grid(out / "recon_grid.png", grid.cpu().numpy(), recon.cpu().numpy())
        _append(metrics_file, {"step": at, "eval": ev})
        log.info("step %d eval: PSNR %.2f dB, codebook usage %.3f, perplexity %.0f", at, ev["psnr"], ev["usage"], ev["perplexity"])
        return ev

    if step == 0:
        last_eval = evaluate_and_log(0)
    batches = _batches(data, cfg, step, model_cfg.image_size)
    model.train()
    t0, frames = time.perf_counter(), 0
    with tqdm(total=cfg.steps, initial=step, desc="train dVAE", unit="step") as bar:
        while step < cfg.steps:
            x = next(batches).to(device, non_blocking=True)
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                out_ = model(x, tau=temperature(step, anneal))
            loss, m = dvae_loss(out_, x.permute(0, 3, 1, 2).float() / 255, kl_weight(step, anneal))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            frames += len(x)
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = frames / (time.perf_counter() - t0)
                bar.set_postfix(mse=f"{m['mse']:.4f}", kl=f"{m['kl']:.2f}", tau=f"{temperature(step, anneal):.3f}")
                _append(metrics_file, {"step": step, "lr": lr_at(step - 1, cfg), "tau": temperature(step - 1, anneal),
                                       "kl_weight": kl_weight(step - 1, anneal), "frames_per_s": rate, **m})
            if step % cfg.eval_every == 0 or step == cfg.steps:
                last_eval = evaluate_and_log(step)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_checkpoint(ckpt_path, model, opt, step, run_config)
    return last_eval


def _append(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
