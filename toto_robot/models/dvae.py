"""Discrete tokenizer: 128x128 RGB frame -> 16x16 grid of codes from a codebook (8192 in Toto).

Pure `nn.Module` (no I/O, no training loop): the frozen encoder artifact imports it. Two ways to
choose a patch's code (`DVAEConfig.quantizer`):

- "gumbel" (Toto's dVAE): the encoder's 1x1 output conv gives one logit per code; training relaxes
  the choice with Gumbel-softmax (`forward(x, tau)`). Needs long training to use its codebook.
- "vq": the encoder outputs a `code_dim` vector per patch, l2-normalized, and the code is the
  nearest (highest cosine) row of a unit-norm codebook kept in the encoder (straight-through
  gradients; the codebook itself is fitted by k-means/EMA in `pretrain.tokenizer`). Trains in
  minutes and uses most of its codebook by construction.

Either way the encoder's output is a (B, vocab, g, g) score map and `encode` is its argmax, so
inference runs the encoder alone.

The encoder is deliberately lean because tokenizing video is where pre-training data cost lives:
a stride-2 stem straight to 64x64, few residual blocks per resolution, stride-2 2x2 merges, and
no normalization layers (residual branches start at zero instead), about 4 GFLOP a frame at
`base` against ~70 GFLOP for the DALL-E dVAE encoder at the same input. The decoder is heavier
(it is used only to train and to inspect reconstructions).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class DVAEConfig:
    """Sizes of a dVAE. Encoder stage i runs at image_size / 2^(i+1); the decoder mirrors it up to
    image_size (its last stage at full resolution). grid = image_size / 2^len(enc_channels)."""

    vocab_size: int = 8192
    image_size: int = 128
    enc_channels: tuple[int, ...] = (64, 128, 256)
    enc_blocks: tuple[int, ...] = (1, 2, 2)
    dec_channels: tuple[int, ...] = (384, 256, 128, 64)
    dec_blocks: tuple[int, ...] = (2, 2, 2, 1)
    quantizer: str = "gumbel"  # "gumbel" (logit per code) | "vq" (nearest unit-norm codebook vector)
    code_dim: int = 32  # vq: width of the encoder's output vectors and codebook rows

    def __post_init__(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"dVAE quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        self.enc_channels, self.enc_blocks = tuple(self.enc_channels), tuple(self.enc_blocks)
        self.dec_channels, self.dec_blocks = tuple(self.dec_channels), tuple(self.dec_blocks)
        n = len(self.enc_channels)
        if len(self.enc_blocks) != n or len(self.dec_channels) != n + 1 or len(self.dec_blocks) != n + 1:
            raise ValueError(
                f"dVAE config: need len(enc_blocks) == len(enc_channels) = {n} and "
                f"len(dec_channels) == len(dec_blocks) == {n + 1}, got {self}"
            )
        if self.image_size % 2**n:
            raise ValueError(f"image_size {self.image_size} not divisible by 2^{n}")

    @property
    def grid(self) -> int:
        return self.image_size // 2 ** len(self.enc_channels)

    @classmethod
    def named(cls, name: str, **overrides: object) -> DVAEConfig:
        if name not in DVAE_SIZES:
            raise KeyError(f"unknown dVAE size {name!r}; known: {sorted(DVAE_SIZES)}")
        return replace(DVAE_SIZES[name], **overrides)


QUANTIZERS = ("gumbel", "vq")

DVAE_SIZES: dict[str, DVAEConfig] = {
    # CPU tests: same 128 -> 16x16 geometry, small widths and codebook.
    "tiny": DVAEConfig(vocab_size=512, enc_channels=(16, 32, 64), enc_blocks=(0, 1, 1),
                       dec_channels=(64, 32, 16, 16), dec_blocks=(1, 1, 0, 0)),
    "small": DVAEConfig(enc_channels=(32, 96, 192), enc_blocks=(1, 1, 2),
                        dec_channels=(256, 128, 64, 32), dec_blocks=(2, 2, 1, 0)),
    "base": DVAEConfig(),
}


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))); the second conv starts at zero so the block starts as identity,
    which keeps an unnormalized stack trainable."""

    def __init__(self, channels: int, norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(32, channels // 4), channels) if norm else nn.Identity()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class Encoder(nn.Module):
    """(B, 3, H, W) float in [-0.5, 0.5] -> (B, vocab, H/8, W/8) code scores (argmax = the code).

    gumbel: the scores are logits. vq: `latents` are unit vectors (B, code_dim, g, g) and the
    scores their cosine with each row of `codebook` (vocab, code_dim), a persistent buffer that
    training fits (it is not a gradient-trained parameter) and the artifact carries.
    """

    def __init__(self, cfg: DVAEConfig) -> None:
        super().__init__()
        ch = cfg.enc_channels
        layers: list[nn.Module] = [nn.Conv2d(3, ch[0], 4, stride=2, padding=1)]
        for i, (c, n) in enumerate(zip(ch, cfg.enc_blocks)):
            if i:
                layers.append(nn.Conv2d(ch[i - 1], c, 2, stride=2))
            layers.extend(ResBlock(c) for _ in range(n))
        self.vq = cfg.quantizer == "vq"
        layers += [nn.SiLU(), nn.Conv2d(ch[-1], cfg.code_dim if self.vq else cfg.vocab_size, 1)]
        self.layers = nn.Sequential(*layers)
        if self.vq:
            self.register_buffer("codebook", F.normalize(torch.randn(cfg.vocab_size, cfg.code_dim), dim=1))

    def latents(self, x: torch.Tensor) -> torch.Tensor:
        """vq: unit-norm patch vectors (B, code_dim, g, g) before quantization."""
        return F.normalize(self.layers(x), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.vq:
            return self.layers(x)
        return torch.einsum("bchw,kc->bkhw", self.latents(x), self.codebook.to(x.dtype))


class Decoder(nn.Module):
    """gumbel: (B, vocab, g, g) one-hot or relaxed code weights; vq: (B, code_dim, g, g) codebook
    vectors -> (B, 3, 8g, 8g) pixels in ~[0, 1]."""

    def __init__(self, cfg: DVAEConfig) -> None:
        super().__init__()
        ch = cfg.dec_channels
        if cfg.quantizer == "vq":  # the codebook lives in the encoder; a 1x1 conv widens its vectors
            self.in_proj = nn.Conv2d(cfg.code_dim, ch[0], 1)
        else:  # the codebook: row k is the embedding of code k (a 1x1 conv over one-hot input)
            self.codebook = nn.Parameter(torch.randn(cfg.vocab_size, ch[0]) * ch[0] ** -0.5)
        layers: list[nn.Module] = []
        for i, (c, n) in enumerate(zip(ch, cfg.dec_blocks)):
            if i:
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(ch[i - 1], c, 3, padding=1)]
            layers.extend(ResBlock(c, norm=True) for _ in range(n))
        layers += [nn.GroupNorm(min(32, ch[-1] // 4), ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "in_proj"):
            return self.layers(self.in_proj(z)) + 0.5
        h = torch.einsum("bkhw,kc->bchw", z, self.codebook.to(z.dtype))
        return self.layers(h) + 0.5

    def from_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """gumbel: (B, g, g) codes -> pixels, by embedding lookup (not a vocab-wide one-hot)."""
        return self.layers(F.embedding(codes.long(), self.codebook).permute(0, 3, 1, 2)) + 0.5


@dataclass
class DVAEOutput:
    recon: torch.Tensor  # (B, 3, H, W) float, ~[0, 1]
    logits: torch.Tensor  # (B, vocab, g, g) float: gumbel logits, vq cosines
    latents: torch.Tensor | None = None  # vq: (B, code_dim, g, g) unit vectors before quantization
    codes: torch.Tensor | None = None  # vq: (B, g, g) long, the nearest codebook rows


class DVAE(nn.Module):
    """Images: uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1]. Codes: (B, grid, grid) long."""

    def __init__(self, cfg: DVAEConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or DVAEConfig()
        self.encoder = Encoder(self.cfg)
        self.decoder = Decoder(self.cfg)

    def normalize(self, images: torch.Tensor, any_size: bool = False) -> torch.Tensor:
        """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> float (B, 3, H, W) in [-0.5, 0.5].

        H = W = image_size, or with `any_size` (training on crops: the nets are convolutional) any
        multiple of the total stride. The uint8 path permutes without copying, which yields a
        channels-last tensor: the layout the convolutions want anyway.
        """
        s = self.cfg.image_size
        dtype = self.encoder.layers[0].weight.dtype  # bf16 when the encoder was cast for inference
        hw = tuple(images.shape[1:3] if images.dtype == torch.uint8 else images.shape[2:4])
        stride = s // self.cfg.grid
        ok = hw == (s, s) or (any_size and len(hw) == 2 and hw[0] % stride == 0 and hw[1] % stride == 0)
        want = f"{s}, {s}" if not any_size else f"multiples of {stride}"
        if images.dtype == torch.uint8:
            if images.ndim != 4 or images.shape[-1] != 3 or not ok:
                raise ValueError(f"dVAE: expected uint8 images (B, {want}, 3), got {tuple(images.shape)}")
            return images.permute(0, 3, 1, 2).to(dtype) * (1 / 255) - 0.5
        if not images.is_floating_point() or images.ndim != 4 or images.shape[1] != 3 or not ok:
            raise ValueError(
                f"dVAE: expected uint8 (B, {want}, 3) or float (B, 3, {want}) images, "
                f"got {images.dtype} {tuple(images.shape)}"
            )
        return images.to(dtype) - 0.5

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """-> (B, vocab, grid, grid)."""
        return self.encoder(self.normalize(images))

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images -> (B, grid, grid) long codes (argmax of the encoder logits; no decoder work)."""
        return self.logits(images).argmax(dim=1)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """(B, grid, grid) integer codes -> (B, 3, H, W) float images clamped to [0, 1]."""
        g = self.cfg.grid
        if codes.ndim != 3 or tuple(codes.shape[1:]) != (g, g):
            raise ValueError(f"dVAE: expected codes (B, {g}, {g}), got {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.cfg.vocab_size):
            raise ValueError(f"dVAE: codes must lie in [0, {self.cfg.vocab_size})")
        out = self.decoder(self.embed(codes)) if self.cfg.quantizer == "vq" else self.decoder.from_codes(codes)
        return out.clamp(0, 1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """vq: (B, g, g) integer codes -> their codebook vectors (B, code_dim, g, g)."""
        return F.embedding(codes.long(), self.encoder.codebook).permute(0, 3, 1, 2)

    def forward(self, images: torch.Tensor, tau: float = 1.0, hard: bool = False, quantize: bool = True) -> DVAEOutput:
        """Training pass on frames or crops (any multiple of the stride).

        gumbel: Gumbel-softmax relaxation of the code choice at temperature `tau`. vq: the nearest
        codebook vectors with straight-through gradients to the latents; `quantize=False` decodes
        the latents themselves (the plain-autoencoder warm-up before the codebook is fitted).
        """
        x = self.normalize(images, any_size=True)
        if self.cfg.quantizer == "gumbel":
            logits = self.encoder(x)
            z = F.gumbel_softmax(logits.float(), tau=tau, hard=hard, dim=1).to(logits.dtype)
            return DVAEOutput(recon=self.decoder(z), logits=logits)
        latents = self.encoder.latents(x)
        logits = torch.einsum("bchw,kc->bkhw", latents, self.encoder.codebook.to(latents.dtype))
        codes = logits.argmax(dim=1)
        if not quantize:
            return DVAEOutput(recon=self.decoder(latents), logits=logits, latents=latents, codes=codes)
        quantized = self.embed(codes).to(latents.dtype)
        z = latents + (quantized - latents).detach()  # straight-through
        return DVAEOutput(recon=self.decoder(z), logits=logits, latents=latents, codes=codes)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
