"""Learning-rate schedule: linear warmup, then cosine decay to `min_ratio` of the peak."""

from __future__ import annotations

import math

import torch


class WarmupCosine:
    """LR multiplier at a step; a plain object (not a lambda) so LambdaLR can checkpoint it."""

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.1) -> None:
        if total_steps < 1 or warmup_steps < 0 or not 0.0 <= min_ratio <= 1.0:
            raise ValueError(f"bad schedule: warmup {warmup_steps}, total {total_steps}, min_ratio {min_ratio}")
        self.warmup_steps, self.total_steps, self.min_ratio = warmup_steps, total_steps, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, total_steps, min_ratio))
