"""Toto's causal video transformer: a LLaMA-style decoder over discrete visual tokens.

Token embedding -> pre-RMSNorm blocks (causal self-attention with RoPE, SwiGLU MLP) -> final
RMSNorm -> output head. A 128x128 frame is 256 tokens; the context holds 16 frames (4096 tokens).
Pure module: no parallelism, compilation, logging or I/O here (see pretrain/train/parallelize.py).
Imports only torch, so the throughput bench and the frozen-encoder loader run on a bare GPU box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    """Sizes of the decoder. `ffn_dim=0` means LLaMA's 8/3 * dim rounded up to `ffn_multiple`."""

    vocab_size: int = 8192
    dim: int = 768
    n_layers: int = 12
    n_heads: int = 12
    ffn_dim: int = 0
    ffn_multiple: int = 128
    max_seq_len: int = 4096
    rope_base: float = 10000.0
    norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.dim % self.n_heads or (self.dim // self.n_heads) % 2:
            raise ValueError(f"dim {self.dim} must split into {self.n_heads} heads of even size")
        if self.ffn_dim <= 0:
            hidden = int(8 * self.dim / 3)
            self.ffn_dim = self.ffn_multiple * math.ceil(hidden / self.ffn_multiple)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads


# Named sizes (Toto's base/large/1b; tiny for CPU tests, small for quick GPU runs).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(dim=64, n_layers=2, n_heads=4),
    "small": dict(dim=512, n_layers=8, n_heads=8),
    "base": dict(dim=768, n_layers=12, n_heads=12),
    "large": dict(dim=1024, n_layers=16, n_heads=16),
    "1b": dict(dim=2048, n_layers=22, n_heads=16),
}


def config_for(size: str, **overrides: int | float) -> TransformerConfig:
    """Config of a named size with any field overridden (e.g. `config_for("tiny", vocab_size=64)`)."""
    if size not in SIZES:
        raise KeyError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    return replace(TransformerConfig(**SIZES[size]), **overrides)


def rope_tables(seq_len: int, head_dim: int, base: float, device: torch.device | None = None) -> torch.Tensor:
    """(2, seq_len, head_dim) float32 cos/sin tables in rotate-half layout (frequency i at i and i+hd/2)."""
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return torch.stack([angles.cos(), angles.sin()])


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+hd/2}) of x: (B, T, H, hd) by position angles; cos/sin: (T, 1, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class Attention(nn.Module):
    """Causal multi-head self-attention; one fused QKV matmul, flash/cuDNN kernels through SDPA."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)
        # Tables cast to the activation dtype (bf16 under autocast) so RoPE does not upcast q, k.
        cos, sin = rope[:, :T, None, :].to(q.dtype).unbind(0)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.proj(out.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """SwiGLU MLP with the gate and up projections fused into one matmul."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.w13 = nn.Linear(cfg.dim, 2 * cfg.ffn_dim, bias=False)
        self.w2 = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.ffn = FeedForward(cfg)

    def forward(self, x: torch.Tensor, rope: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), rope)
        return x + self.ffn(self.ffn_norm(x))


class Transformer(nn.Module):
    """tokens: (B, T) int64 codes < vocab_size, T <= max_seq_len -> logits (B, T, vocab_size)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Derived, not learned: rebuilt by init_weights() and kept out of checkpoints.
        self.register_buffer("rope", rope_tables(cfg.max_seq_len, cfg.head_dim, cfg.rope_base), persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2 style init; residual output projections scaled by 1/sqrt(2 * n_layers).

        Also rebuilds the RoPE tables, so a model built on the meta device is usable after
        `to_empty(device=...)` + `init_weights()`.
        """
        std = 0.02
        self.rope.copy_(rope_tables(self.cfg.max_seq_len, self.cfg.head_dim, self.cfg.rope_base, self.rope.device))
        nn.init.normal_(self.tok_emb.weight, std=std)
        for block in self.layers:
            for norm in (block.attn_norm, block.ffn_norm):
                nn.init.ones_(norm.weight)
            nn.init.normal_(block.attn.qkv.weight, std=std)
            nn.init.normal_(block.ffn.w13.weight, std=std)
            for out in (block.attn.proj, block.ffn.w2):
                nn.init.normal_(out.weight, std=std / math.sqrt(2 * self.cfg.n_layers))
        nn.init.ones_(self.norm.weight)
        nn.init.normal_(self.head.weight, std=std)

    def _check(self, tokens: torch.Tensor) -> None:
        if tokens.dim() != 2 or tokens.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"tokens must be (B, T<={self.cfg.max_seq_len}); got {tuple(tokens.shape)}")

    def features(self, tokens: torch.Tensor, layer: int = -1) -> torch.Tensor:
        """Residual stream after `layer` blocks: (B, T, dim); blocks above `layer` are not run.

        layer 0 is the token embedding, layer n_layers (or -1) the last block's output (before
        the final norm). Negative values count from the top like Python indices.
        """
        self._check(tokens)
        n = self.cfg.n_layers
        depth = layer + n + 1 if layer < 0 else layer
        if not 0 <= depth <= n:
            raise ValueError(f"layer {layer} out of range for {n} layers (0..{n} or -1..{-n - 1})")
        x = self.tok_emb(tokens)
        for block in self.layers[:depth]:
            x = block(x, self.rope)
        return x

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.features(tokens, self.cfg.n_layers)))

    def num_params(self, embedding: bool = True) -> int:
        """Parameter count; `embedding=False` leaves out the token embedding (the head is kept)."""
        n = sum(p.numel() for p in self.parameters())
        return n if embedding else n - self.tok_emb.weight.numel()
