"""Procedurally generated images for tests and the GPU benchmark (no files, any device).

Each image: a random two-colour linear gradient background plus random filled discs and
axis-aligned rectangles in random colours, with a little pixel noise: edges, flat regions and
smooth shading, so reconstruction quality is measurable and the task is not trivial.
"""

from __future__ import annotations

import torch


def synthetic_images(
    n: int, size: int = 128, shapes: int = 6, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """-> (n, size, size, 3) uint8 on `device`."""
    g = generator
    dev = torch.device(device)

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, device=dev if g is None else g.device).to(dev)

    yy, xx = torch.meshgrid(torch.linspace(0, 1, size, device=dev), torch.linspace(0, 1, size, device=dev), indexing="ij")
    ang = rand(n, 1, 1) * 6.2832
    t = (torch.cos(ang) * xx + torch.sin(ang) * yy + 1.5) / 3  # (n, size, size) in ~[0, 1]
    c0, c1 = rand(n, 1, 1, 3), rand(n, 1, 1, 3)
    img = c0 + (c1 - c0) * t[..., None]
    for _ in range(shapes):
        color = rand(n, 1, 1, 3)
        cx, cy, r = rand(n, 1, 1), rand(n, 1, 1), 0.04 + 0.2 * rand(n, 1, 1)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        w, h = 0.05 + 0.3 * rand(n, 1, 1), 0.05 + 0.3 * rand(n, 1, 1)
        rect = ((xx - cx).abs() < w) & ((yy - cy).abs() < h)
        mask = torch.where(rand(n, 1, 1) < 0.5, disc, rect)
        img = torch.where(mask[..., None], color, img)
    img = img + 0.02 * (rand(n, size, size, 3) - 0.5)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)
