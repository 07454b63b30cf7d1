"""Fitting a VQ tokenizer's codebook: k-means start, EMA updates, dead-code restarts.

A Gumbel dVAE only spreads over its codebook after long training (round one of the default
encoder: 120 CPU steps used 12% of 1024 codes). A nearest-code tokenizer is fitted the way
k-means is, which is fast and keeps every code alive:

1. `warmup_steps` of a plain autoencoder (the decoder reads the unit-norm latents themselves),
   so the latents mean something before codes are cut;
2. spherical k-means on the latents of `kmeans_batches` batches sets the codebook;
3. from then on each step moves every used code towards the mean of the latents assigned to it
   (exponential moving average, `ema_decay`), and every `restart_every` steps a code that got
   fewer than `dead_fraction` of a uniform share of the assignments since the last check is
   moved onto a random latent of the batch (so a code cannot stay unused for long).

The codebook is a buffer of the encoder (`toto_robot.models.dvae.Encoder.codebook`), so the
artifact carries it; the running sums live here and in the training checkpoint. Torch only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pretrain.tokenizer.objective import psnr_from_mse
from toto_robot.models.dvae import DVAE, DVAEOutput


@dataclass
class VQConfig:
    """Codebook fitting of a `quantizer: vq` tokenizer (ignored by gumbel)."""

    beta: float = 0.25  # commitment loss weight: pulls latents towards their codes
    ema_decay: float = 0.99  # codebook moving-average decay per step
    warmup_steps: int = 200  # plain-autoencoder steps before k-means fits the codebook
    kmeans_batches: int = 8  # batches of latents k-means sees
    kmeans_iters: int = 20
    dead_fraction: float = 0.1  # restart codes that got less than this fraction of a uniform share ...
    restart_every: int = 10  # ... of the assignments over this many steps


def spherical_kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """x (N, d) unit vectors -> (k, d) unit centroids: cosine k-means seeded by k-means++ (each next
    seed drawn with probability proportional to its cosine distance to the nearest seed, so the
    seeds spread over the clusters); an empty cluster takes a random row."""
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} vectors, got {len(x)}: raise vq.kmeans_batches")
    first = int(torch.randint(len(x), (1,), generator=generator))
    c = torch.empty(k, x.shape[1], dtype=x.dtype, device=x.device)
    c[0] = x[first]
    dist = (1 - x @ c[0]).clamp_min(0)
    for i in range(1, k):
        weights = dist.cpu().double() + 1e-12
        c[i] = x[int(torch.multinomial(weights, 1, generator=generator))]
        dist = torch.minimum(dist, (1 - x @ c[i]).clamp_min(0))
    for _ in range(iters):
        assign = (x @ c.T).argmax(1)
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        empty = counts == 0
        sums[empty] = x[torch.randint(len(x), (int(empty.sum()),), generator=generator).to(x.device)]
        c = F.normalize(sums, dim=1)
    return c


class CodebookFitter:
    """Owns the codebook's running statistics; `fit` at the end of warm-up, `update` after each step."""

    def __init__(self, model: DVAE, cfg: VQConfig) -> None:
        self.model, self.cfg = model, cfg
        book = model.encoder.codebook
        self.sums = book.detach().clone().float()  # EMA of the summed latents per code (unnormalized)
        self.window = torch.zeros(len(book), device=book.device)  # assignments per code since the last check
        self.fitted = False
        self.restarts = 0

    def warming_up(self, step: int) -> bool:
        return step < self.cfg.warmup_steps

    @torch.no_grad()
    def fit(self, latents: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """k-means start from latents (N, d) of the warmed-up encoder."""
        book = spherical_kmeans(latents.float(), len(self.sums), self.cfg.kmeans_iters, generator)
        self.model.encoder.codebook.copy_(book)
        self.sums.copy_(book)
        self.window.zero_()
        self.fitted = True

    @torch.no_grad()
    def update(self, out: DVAEOutput, step: int) -> dict[str, float]:
        """EMA step towards the batch's assignments, then (every restart_every steps) restarts."""
        z = out.latents.detach().float().permute(0, 2, 3, 1).reshape(-1, out.latents.shape[1])
        codes = out.codes.reshape(-1)
        k, d = self.cfg.ema_decay, len(self.sums)
        counts = torch.bincount(codes, minlength=d).float()
        batch_sums = torch.zeros_like(self.sums).index_add_(0, codes, z)
        used = counts > 0
        self.sums[used] = k * self.sums[used] + (1 - k) * batch_sums[used]
        self.window += counts
        book = self.model.encoder.codebook
        book[used] = F.normalize(self.sums[used], dim=1).to(book.dtype)
        restarted = 0
        if step % self.cfg.restart_every == 0:
            dead = (self.window < self.cfg.dead_fraction * self.window.sum() / d).nonzero().flatten()
            self.window.zero_()
            if len(dead):
                pick = z[torch.randint(len(z), (len(dead),), device=z.device)]
                pick = F.normalize(pick + 0.01 * torch.randn_like(pick), dim=1)  # a little apart from the source code
                book[dead] = pick.to(book.dtype)
                self.sums[dead] = pick
                restarted = len(dead)
                self.restarts += restarted
        return {"used_in_batch": float(used.float().mean()), "restarted": float(restarted)}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "window": self.window.cpu(), "fitted": self.fitted, "restarts": self.restarts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.window.copy_(state["window"])
        self.fitted, self.restarts = bool(state["fitted"]), int(state["restarts"])


def vq_loss(out: DVAEOutput, target: torch.Tensor, codebook: torch.Tensor | None, beta: float) -> tuple[torch.Tensor, dict[str, float]]:
    """target (B, 3, H, W) in [0, 1]. Pixel MSE + beta * commitment (latent to its code vector);
    before the codebook is fitted (`codebook` None) the MSE alone."""
    mse = F.mse_loss(out.recon.float(), target.float())
    loss = mse
    metrics = {"mse": mse.item(), "psnr_soft": psnr_from_mse(mse.item())}
    if codebook is not None:
        codes_vec = F.embedding(out.codes, codebook).permute(0, 3, 1, 2)
        commit = F.mse_loss(out.latents.float(), codes_vec.float())
        loss = mse + beta * commit
        metrics["commit"] = commit.item()
    metrics["loss"] = loss.item()
    return loss, metrics
