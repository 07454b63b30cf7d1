"""Pooling heads: token features (B, T, D) -> one vector per sample (B, D_out).

Toto's probes found attention pooling (a learned query cross-attending over the token features)
well ahead of average pooling, so policies on the frozen encoder use `AttentionPool`; `AvgPool`
stays for comparison. Both summarise *what* is in a frame but keep little of *where*: the
transformer's RoPE positions are relative, so its features carry little absolute position.
`KeypointPool` adds the standard visuomotor readout of where (a spatial softmax over each frame's
token grid giving expected image coordinates, as robomimic's VisualCore and issue 11's policy core
do) beside an attention summary. `GridPool` reads where by looking at neighbours: a small conv net
over each frame's token grid (with the patch coordinates as two more channels) before the spatial
softmax, so a score can say "this token differs from the ones around it" - what finding a small
object on a randomized table needs; 1x1 maps of single tokens cannot (measured in the probes).
All are small, trainable and independent of the encoder, and are built from one `PoolingConfig`
so that a probe, an encoder artifact and a policy checkpoint describe a head the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class PoolingConfig:
    """kind: "attention", "avg", "keypoints" or "grid". out_dim None keeps the natural width (D, for
    keypoints D + n_frames * n_keypoints * 2, for grid n_frames * (2 * n_keypoints + width))."""

    kind: str = "attention"
    n_heads: int = 8
    n_queries: int = 1
    out_dim: int | None = None
    n_keypoints: int = 16  # keypoints: spatial-softmax maps per frame
    grid: int = 16  # keypoints: tokens per frame = grid * grid, raster order
    n_frames: int = 1  # keypoints, grid: frames (cameras or history steps) per sample, each its own grid
    width: int = 32  # grid: channels of the conv net over the token grid


class AttentionPool(nn.Module):
    """n_queries learned queries cross-attend over layer-normed tokens; (B, T, D) -> (B, out_dim).

    `config` is the PoolingConfig that rebuilds it. The queries' outputs are concatenated (n_queries * D) and projected to out_dim when given.
    `mask` (B, T) bool marks valid tokens (True = attend), for padded histories.
    """

    def __init__(self, dim: int, n_heads: int = 8, n_queries: int = 1, out_dim: int | None = None) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"AttentionPool: feature dim {dim} is not divisible by n_heads {n_heads}")
        self.dim, self.n_heads, self.n_queries = dim, n_heads, n_queries
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.zeros(n_queries, dim))
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.out_norm = nn.LayerNorm(n_queries * dim)
        self.proj = nn.Linear(n_queries * dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or n_queries * dim
        self.config = PoolingConfig("attention", n_heads=n_heads, n_queries=n_queries, out_dim=out_dim)
        nn.init.trunc_normal_(self.query, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Multi-head cross-attention of the queries over LayerNorm(x), computed with the key and
        value projections folded out of the token dimension: scores q_h . (W_k,h LN(x_t)) equal
        (W_k,h^T q_h) . LN(x_t), and sum_t a_t W_v,h LN(x_t) = W_v,h sum_t a_t LN(x_t). The same
        function as projecting every token, at O(T * D * heads) instead of O(T * D^2): on frozen
        features (policies, probes) the per-token work is one parameter-free normalization and
        two matrix products. Biases of the norm and of the keys add a per-query constant to every
        score (cancelled by the softmax); the value bias passes through the weights summing to 1."""
        _check_tokens(x, self.dim)
        b, t, d = x.shape
        h, nq, hd = self.n_heads, self.n_queries, d // self.n_heads
        xhat = F.layer_norm(x, (d,), eps=self.norm.eps)  # LN(x) = norm.weight * xhat + norm.bias
        q = self.q_proj(self.query).view(nq, h, hd)
        w_k, w_v = self.kv_proj.weight[:d].view(h, hd, d), self.kv_proj.weight[d:].view(h, hd, d)
        qk = torch.einsum("qhe,hed->qhd", q, w_k).reshape(nq * h, d) * (self.norm.weight / hd**0.5)
        scores = xhat @ qk.T  # (B, T, Q*h)
        if mask is not None:
            scores = scores.masked_fill(~mask.view(b, t, 1).to(torch.bool), float("-inf"))
        attn = scores.softmax(dim=1)  # over tokens
        pooled = (attn.transpose(1, 2) @ xhat) * self.norm.weight + self.norm.bias  # (B, Q*h, D): sum_t a_t LN(x_t)
        out = torch.einsum("bqhd,hed->bqhe", pooled.view(b, nq, h, d), w_v) + self.kv_proj.bias[d:].view(h, hd)
        out = self.out_proj(out.reshape(b, nq, d))
        return self.proj(self.out_norm(out.reshape(b, nq * d)))


class AvgPool(nn.Module):
    """Mean over (valid) tokens, layer norm, optional linear projection; (B, T, D) -> (B, out_dim).

    `config` is the PoolingConfig that rebuilds it.
    """

    def __init__(self, dim: int, out_dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or dim
        self.config = PoolingConfig("avg", out_dim=out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, self.dim)
        if mask is None:
            pooled = x.mean(dim=1)
        else:
            w = mask.to(x.dtype).unsqueeze(-1)
            pooled = (x * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.proj(self.norm(pooled))


class KeypointPool(nn.Module):
    """Spatial-softmax keypoints over each frame's token grid, beside an attention-pool summary.

    (B, n_frames * grid^2, D) -> (B, out_dim). Per frame, a linear map of the layer-normed tokens
    gives `n_keypoints` score maps over the grid; their softmax (learned temperature) weights the
    patch centres' (x, y) in [-1, 1], so each keypoint is an expected image position: sub-patch
    precision from coarse tokens. The attention pool adds what is there. `mask` applies to the
    attention summary only (keypoints always see whole frames).
    """

    def __init__(self, dim: int, n_keypoints: int = 16, grid: int = 16, n_frames: int = 1, n_heads: int = 8,
                 out_dim: int | None = None) -> None:
        super().__init__()
        self.dim, self.n_keypoints, self.grid, self.n_frames = dim, n_keypoints, grid, n_frames
        self.attn = AttentionPool(dim, n_heads=n_heads)
        self.norm = nn.LayerNorm(dim)
        self.score = nn.Linear(dim, n_keypoints)
        self.log_temperature = nn.Parameter(torch.zeros(()))
        self.register_buffer("coords", _patch_centres(grid).flatten(1).T, persistent=False)  # (g*g, 2)
        width = dim + n_frames * n_keypoints * 2
        self.proj = nn.Linear(width, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or width
        self.config = PoolingConfig("keypoints", n_heads=n_heads, out_dim=out_dim, n_keypoints=n_keypoints,
                                    grid=grid, n_frames=n_frames)

    def keypoints(self, x: torch.Tensor) -> torch.Tensor:
        """(B, n_frames * grid^2, D) -> (B, n_frames, n_keypoints, 2) expected (x, y) in [-1, 1]."""
        b, t, _ = x.shape
        g2 = self.grid * self.grid
        _check_frames("KeypointPool", t, self.n_frames, self.grid)
        scores = self.score(self.norm(x)).view(b, self.n_frames, g2, self.n_keypoints)
        weights = torch.softmax(scores * torch.exp(-self.log_temperature), dim=2)
        return torch.einsum("bfnk,nc->bfkc", weights, self.coords.to(weights.dtype))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, self.dim)
        points = self.keypoints(x).reshape(len(x), -1)
        return self.proj(torch.cat([self.attn(x, mask), points], dim=1))


class GridPool(nn.Module):
    """A conv net over each frame's token grid, read out by spatial-softmax keypoints and a mean.

    (B, n_frames * grid^2, D) -> (B, out_dim). Per frame: layer norm, the patch centres' (x, y)
    appended as two channels, a 1x1 conv to `width`, two 3x3 convs (GELU), then `n_keypoints`
    softmax maps over the grid giving expected (x, y) in [-1, 1] plus the mean of the conv
    features; the frames' outputs are concatenated. The two 3x3 layers see a 5x5-token neighbourhood.
    A token `mask` is refused: every frame is a full grid.
    """

    def __init__(self, dim: int, n_keypoints: int = 16, grid: int = 16, n_frames: int = 1, width: int = 32,
                 out_dim: int | None = None) -> None:
        super().__init__()
        self.dim, self.grid, self.n_frames = dim, grid, n_frames
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(
            nn.Conv2d(dim + 2, width, 1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GELU(),
        )
        self.score = nn.Conv2d(width, n_keypoints, 1)
        self.register_buffer("coords", _patch_centres(grid), persistent=False)  # (2, g, g)
        width_out = n_frames * (2 * n_keypoints + width)
        self.proj = nn.Linear(width_out, out_dim) if out_dim else nn.Identity()
        self.out_dim = out_dim or width_out
        self.config = PoolingConfig("grid", out_dim=out_dim, n_keypoints=n_keypoints, grid=grid, n_frames=n_frames,
                                    width=width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        _check_tokens(x, self.dim)
        if mask is not None:
            raise ValueError("GridPool reads whole frames: a token mask (padded history) is not supported; "
                             "use attention, avg or keypoints pooling")
        b, t, d = x.shape
        g = self.grid
        _check_frames("GridPool", t, self.n_frames, g)
        maps = self.norm(x).reshape(b * self.n_frames, g, g, d).permute(0, 3, 1, 2)  # raster order -> (BF, D, g, g)
        coords = self.coords.to(maps.dtype).expand(len(maps), -1, -1, -1)
        h = self.net(torch.cat([maps, coords], dim=1))
        weights = self.score(h).flatten(2).softmax(dim=2)  # (BF, K, g*g)
        points = weights @ coords[0].flatten(1).T  # (BF, K, 2)
        out = torch.cat([points.flatten(1), h.mean(dim=(2, 3))], dim=1)
        return self.proj(out.reshape(b, -1))


def build_pooling(cfg: PoolingConfig | dict[str, Any], dim: int) -> nn.Module:
    """The pooling head `cfg` describes, over token features of width `dim`."""
    cfg = cfg if isinstance(cfg, PoolingConfig) else PoolingConfig(**cfg)
    if cfg.kind not in _BUILDERS:
        raise ValueError(f"unknown pooling kind {cfg.kind!r}; expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[cfg.kind](cfg, dim)


_BUILDERS = {
    "attention": lambda c, d: AttentionPool(d, n_heads=c.n_heads, n_queries=c.n_queries, out_dim=c.out_dim),
    "avg": lambda c, d: AvgPool(d, out_dim=c.out_dim),
    "keypoints": lambda c, d: KeypointPool(d, n_keypoints=c.n_keypoints, grid=c.grid, n_frames=c.n_frames,
                                           n_heads=c.n_heads, out_dim=c.out_dim),
    "grid": lambda c, d: GridPool(d, n_keypoints=c.n_keypoints, grid=c.grid, n_frames=c.n_frames, width=c.width,
                                  out_dim=c.out_dim),
}


def _patch_centres(grid: int) -> torch.Tensor:
    """(2, grid, grid): each token's patch centre (x, y) in [-1, 1], raster order (rows = y)."""
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([xx, yy])


def _check_frames(name: str, n_tokens: int, n_frames: int, grid: int) -> None:
    per_frame = grid * grid
    if n_tokens != n_frames * per_frame:
        raise ValueError(f"{name}: expected {n_frames} frame(s) of {per_frame} tokens = {n_frames * per_frame} "
                         f"tokens, got {n_tokens}")


def _check_tokens(x: torch.Tensor, dim: int) -> None:
    if x.ndim != 3 or x.shape[-1] != dim:
        raise ValueError(f"pooling expects token features (B, T, {dim}), got {tuple(x.shape)}")
