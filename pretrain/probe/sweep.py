"""Layer sweep: pooling probes (attention, average, keypoints, grid) on frozen features of chosen layers.

Token features (N, T, D) of each probed layer are extracted once into float16 memmaps (the
encoder is the expensive part; probes then train for many epochs on cached features), after
which each (layer, pool) pair trains a head = pooling module + linear output on the train split
and is scored on the val split: top-1 accuracy for classification, R^2 (and RMSE in the target's
units, e.g. metres for a cube position) for regression, plus the median cube position error [mm]
and yaw error [deg, modulo 90] for cube-pose targets. Several cameras per sample are tokenized and
run through the transformer one frame each (as a policy does), their token features concatenated.

`PixelBaseline` gives features whose content is known (each 8x8 patch's mean colour as one of
256 tokens): the same heads on it calibrate what the probe itself can read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pretrain.probe.datasets import ProbeData
from toto_robot.encoder import TotoEncoder
from toto_robot.models.pooling import PoolingConfig, build_pooling


@dataclass
class ProbeTrainConfig:
    pools: list[str] = field(default_factory=lambda: ["attention", "avg"])
    n_heads: int = 8  # attention pool heads (their gcd with the feature width is used)
    n_keypoints: int = 16  # keypoints and grid pools: spatial-softmax maps per frame
    grid_width: int = 32  # grid pool: channels of its conv net over the token grid
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05
    extract_batch_size: int = 64  # frames per encoder call
    seed: int = 0


@dataclass
class ProbeResult:
    layer: int
    pool: str
    metric: str  # "top1" or "r2"
    score: float
    val_loss: float
    rmse: float | None = None  # regression only, target units
    pos_err_mm: float | None = None  # cube pose only: median |position error| [mm]
    yaw_err_deg: float | None = None  # cube pose with yaw: median |yaw error| modulo 90 degrees [deg]
    encoder: str = "pretrained"  # or "random_init" (same architecture, random weights) or "pixels" (baseline)
    head: nn.Module | None = field(default=None, repr=False)

    def row(self) -> dict[str, Any]:
        return {"encoder": self.encoder, "layer": self.layer, "pool": self.pool, "metric": self.metric,
                "score": self.score, "val_loss": self.val_loss, "rmse": self.rmse, "pos_err_mm": self.pos_err_mm,
                "yaw_err_deg": self.yaw_err_deg}


def probe_layers(n_layers: int, step: int, layers: list[int] | None = None) -> list[int]:
    """Explicit `layers` (0 = the token embedding), else every `step`-th layer 1..n_layers, always
    including the last."""
    if layers:
        bad = [l for l in layers if not 0 <= l <= n_layers]
        if bad:
            raise ValueError(f"probe layers {bad} outside 0..{n_layers}")
        return sorted(set(layers))
    if step < 1:
        raise ValueError(f"layer step must be >= 1, got {step}")
    return sorted(set(range(step, n_layers + 1, step)) | {n_layers})


class Featurizer(Protocol):
    """What the sweep probes: frozen per-frame token features of some layers."""

    n_tokens_per_frame: int

    def feature_shape(self, n_frames: int = 1) -> tuple[int, int]: ...

    def frame_features(self, frames: np.ndarray, layers: list[int]) -> dict[int, torch.Tensor]:
        """frames (n, S, S, 3) uint8 -> {layer: (n, n_tokens_per_frame, D)}."""
        ...


class EncoderFeatures:
    """A TotoEncoder's layers: each frame tokenized and run through the transformer on its own."""

    def __init__(self, encoder: TotoEncoder) -> None:
        self.encoder = encoder
        self.n_tokens_per_frame = encoder.n_tokens_per_frame

    def feature_shape(self, n_frames: int = 1) -> tuple[int, int]:
        return self.encoder.feature_shape(n_frames)

    def frame_features(self, frames: np.ndarray, layers: list[int]) -> dict[int, torch.Tensor]:
        tokens = self.encoder.tokenize(frames)  # (n, 256)
        return {l: self.encoder.token_features(tokens, l) for l in layers}


class PixelBaseline:
    """Features of known content: each 8x8 patch's mean colour (r, g, b in [0, 1]) and a constant
    1 as one token, raster order; (n, 128, 128, 3) -> (n, 256, 4) for every 'layer'. The constant
    keeps brightness through the heads' layer norm (which would cancel it on a 3-vector)."""

    n_tokens_per_frame = 256

    def __init__(self, image_size: int = 128, grid: int = 16) -> None:
        self.image_size, self.grid = image_size, grid
        self.n_tokens_per_frame = grid * grid

    def feature_shape(self, n_frames: int = 1) -> tuple[int, int]:
        return (n_frames * self.n_tokens_per_frame, 4)

    def frame_features(self, frames: np.ndarray, layers: list[int]) -> dict[int, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255
        means = F.adaptive_avg_pool2d(x, self.grid).flatten(2).transpose(1, 2)  # (n, g*g, 3)
        feats = torch.cat([means, torch.ones_like(means[..., :1])], dim=2)
        return {l: feats for l in layers}


def extract_features(
    source: Featurizer | TotoEncoder, frames: np.ndarray, layers: list[int], work_dir: Path, batch_size: int, desc: str = ""
) -> dict[int, np.ndarray]:
    """frames (N, S, S, 3) or (N, K, S, S, 3) uint8 -> {layer: (N, K*256, D) float16 memmap under
    work_dir}; each of the K frames is its own 256-token sequence."""
    source = EncoderFeatures(source) if isinstance(source, TotoEncoder) else source
    n, k = len(frames), (frames.shape[1] if frames.ndim == 5 else 1)
    t, d = source.feature_shape(k)
    out = {
        l: np.lib.format.open_memmap(work_dir / f"{desc}_layer{l:03d}.npy", mode="w+", dtype=np.float16, shape=(n, t, d))
        for l in layers
    }
    for i in tqdm(range(0, n, batch_size), desc=f"features {desc}", leave=False):
        chunk = frames[i : i + batch_size]
        b = len(chunk)
        feats = source.frame_features(chunk.reshape(b * k, *chunk.shape[-3:]), layers)
        for l in layers:
            out[l][i : i + b] = feats[l].reshape(b, t, d).cpu().numpy()
    return out


class ProbeHead(nn.Module):
    """Pooling module over (B, T, D) features followed by a linear output layer."""

    def __init__(self, pooling: PoolingConfig, dim: int, n_outputs: int) -> None:
        super().__init__()
        self.pool = build_pooling(pooling, dim)
        self.out = nn.Linear(self.pool.out_dim, n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.pool(x))


def train_probe(
    data: ProbeData,
    train_feats: np.ndarray,
    val_feats: np.ndarray,
    pooling: PoolingConfig,
    cfg: ProbeTrainConfig,
    device: torch.device,
) -> tuple[ProbeHead, dict[str, float]]:
    """Train one probe head on cached features; returns it and its val metrics."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    regression = data.task == "regression"
    y_train = torch.as_tensor(data.train_y)
    mean = y_train.float().mean(0) if regression else None
    std = y_train.float().std(0).clamp_min(1e-6) if regression else None
    head = ProbeHead(pooling, train_feats.shape[-1], data.n_outputs).to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(train_feats) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))

    def loss_fn(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if regression:
            return F.mse_loss(pred, (y.float() - mean.to(device)) / std.to(device))
        return F.cross_entropy(pred, y)

    head.train()
    for _ in range(cfg.epochs):
        perm = rng.permutation(len(train_feats))
        for i in range(0, len(perm), cfg.batch_size):
            idx = np.sort(perm[i : i + cfg.batch_size])  # sorted reads are sequential in the memmap
            x = torch.from_numpy(train_feats[idx]).to(device, torch.float32)
            loss = loss_fn(head(x), y_train[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    head.eval()
    with torch.no_grad():
        preds = torch.cat([
            head(torch.from_numpy(val_feats[i : i + cfg.batch_size]).to(device, torch.float32)).cpu()
            for i in range(0, len(val_feats), cfg.batch_size)
        ])
    y_val = torch.as_tensor(data.val_y)
    val_loss = float(loss_fn(preds.to(device), y_val.to(device)))
    if not regression:
        return head, {"metric": "top1", "score": float((preds.argmax(1) == y_val).float().mean()), "val_loss": val_loss}
    pred_units = preds * std + mean
    sse = float(((pred_units - y_val) ** 2).sum())
    sst = float(((y_val - y_val.mean(0)) ** 2).sum())
    rmse = math.sqrt(sse / y_val.numel())
    metrics = {"metric": "r2", "score": 1.0 - sse / max(sst, 1e-12), "val_loss": val_loss, "rmse": rmse}
    return head, metrics | (pose_errors(pred_units.numpy(), y_val.numpy(), data.yaw) if data.pose else {})


def pose_errors(pred: np.ndarray, target: np.ndarray, yaw: bool) -> dict[str, float]:
    """Median cube position error [mm] over columns 0-2 [m]; with `yaw`, the median yaw error
    [deg] from columns 3-4 = (cos 4*yaw, sin 4*yaw), wrapped into [0, 45] (90-degree symmetry)."""
    out = {"pos_err_mm": float(np.median(np.linalg.norm(pred[:, :3] - target[:, :3], axis=1)) * 1000)}
    if yaw:
        angle = np.arctan2(pred[:, 4], pred[:, 3]) - np.arctan2(target[:, 4], target[:, 3])  # = 4 * yaw error
        out["yaw_err_deg"] = float(np.degrees(np.median(np.abs((angle + np.pi) % (2 * np.pi) - np.pi)) / 4))
    return out


def sweep(
    encoder: Featurizer | TotoEncoder,
    data: ProbeData,
    layers: list[int],
    cfg: ProbeTrainConfig,
    work_dir: Path,
    device: torch.device,
    name: str = "pretrained",
) -> list[ProbeResult]:
    """Every (layer, pool) probe of `encoder` (called `name` in the results); `work_dir` holds the
    feature memmaps while they train."""
    source = EncoderFeatures(encoder) if isinstance(encoder, TotoEncoder) else encoder
    work_dir.mkdir(parents=True, exist_ok=True)
    train = extract_features(source, data.train_x, layers, work_dir, cfg.extract_batch_size, f"{name}_train")
    val = extract_features(source, data.val_x, layers, work_dir, cfg.extract_batch_size, f"{name}_val")
    n_frames = data.train_x.shape[1] if data.train_x.ndim == 5 else 1
    dim = source.feature_shape(n_frames)[1]
    grid = math.isqrt(source.n_tokens_per_frame)
    results = []
    jobs = [(l, p) for l in layers for p in cfg.pools]
    for layer, pool in tqdm(jobs, desc=f"probes ({name})"):
        pooling = PoolingConfig(kind=pool, n_heads=math.gcd(cfg.n_heads, dim), n_keypoints=cfg.n_keypoints,
                                grid=grid, n_frames=n_frames, width=cfg.grid_width)
        head, metrics = train_probe(data, train[layer], val[layer], pooling, cfg, device)
        results.append(ProbeResult(layer=layer, pool=pool, encoder=name, head=head.cpu(), **metrics))
    for arr in (*train.values(), *val.values()):
        Path(arr.filename).unlink(missing_ok=True)
    if not any(work_dir.iterdir()):
        work_dir.rmdir()
    return results
