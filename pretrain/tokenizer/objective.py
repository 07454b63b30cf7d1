"""dVAE training objective: Gumbel temperature and KL-weight schedules, the loss, and metrics.

Torch only (no hydra, no I/O) so that `bench/tokenizer_throughput.py` can train on a bare GPU box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from toto_robot.models.dvae import DVAE, DVAEOutput


@dataclass
class AnnealConfig:
    """Gumbel temperature decays exponentially tau_start -> tau_end over `tau_steps`; the KL weight
    rises linearly 0 -> kl_weight over `kl_steps` (both hold their end value afterwards)."""

    tau_start: float = 1.0
    tau_end: float = 1 / 16
    tau_steps: int = 20000
    kl_weight: float = 1e-3
    kl_steps: int = 5000


def temperature(step: int, cfg: AnnealConfig) -> float:
    frac = min(1.0, step / max(1, cfg.tau_steps))
    return cfg.tau_start * (cfg.tau_end / cfg.tau_start) ** frac


def kl_weight(step: int, cfg: AnnealConfig) -> float:
    return cfg.kl_weight * min(1.0, step / max(1, cfg.kl_steps))


def kl_to_uniform(logits: torch.Tensor) -> torch.Tensor:
    """Mean over grid positions of KL(q || uniform) in nats; logits (B, K, g, g). In [0, log K]."""
    logq = F.log_softmax(logits.float(), dim=1)
    return (logq.exp() * logq).sum(1).mean() + math.log(logits.shape[1])


def dvae_loss(out: DVAEOutput, target: torch.Tensor, kl_w: float) -> tuple[torch.Tensor, dict[str, float]]:
    """target: (B, 3, H, W) float in [0, 1]. Loss = pixel MSE + kl_w * KL(q || uniform).

    The KL term pulls every position's code distribution towards uniform, which is what keeps
    the whole codebook in use (a dVAE's advantage over a VQ-VAE)."""
    mse = F.mse_loss(out.recon.float(), target.float())
    kl = kl_to_uniform(out.logits)
    loss = mse + kl_w * kl
    return loss, {"loss": loss.item(), "mse": mse.item(), "kl": kl.item(), "psnr_soft": psnr_from_mse(mse.item())}


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [0, 1]."""
    return 10 * math.log10(1 / max(mse, 1e-10))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean-squared-error PSNR [dB] between two (B, 3, H, W) float batches in [0, 1]."""
    return psnr_from_mse(F.mse_loss(a.float(), b.float()).item())


def codebook_usage(codes: torch.Tensor, vocab_size: int) -> dict[str, float]:
    """codes: any-shape integer tensor. Fraction of the codebook used and the perplexity
    exp(entropy) of the code histogram (vocab_size = all codes equally used)."""
    counts = torch.bincount(codes.flatten().long(), minlength=vocab_size).double()
    p = counts / counts.sum()
    nz = p[p > 0]
    return {"usage": (counts > 0).double().mean().item(), "perplexity": math.exp(-(nz * nz.log()).sum().item())}


@torch.no_grad()
def evaluate(model: DVAE, images_u8: torch.Tensor, batch_size: int = 256) -> dict[str, float]:
    """Hard-code reconstruction (encode -> decode, as the tokens are used): PSNR [dB] and codebook
    usage over `images_u8` (N, H, W, 3) uint8."""
    recon_se, codes = 0.0, []
    for i in range(0, len(images_u8), batch_size):
        x = images_u8[i : i + batch_size]
        c = model.encode(x)
        r = model.decode(c).float()
        t = x.permute(0, 3, 1, 2).float() / 255
        recon_se += F.mse_loss(r, t, reduction="sum").item()
        codes.append(c)
    mse = recon_se / images_u8.numel()
    return {"psnr": psnr_from_mse(mse), **codebook_usage(torch.cat(codes), model.cfg.vocab_size)}
