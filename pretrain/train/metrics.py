"""Throughput accounting: tokens/s and model FLOPs utilization (MFU).

MFU convention (shared/REFERENCE.md, same as the reference anchor): FLOPs per token =
6 x (non-embedding parameters, output head included) + 6 x layers x width x context (causal
attention), divided by the measured bf16 matmul peak of the device.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import torch


def flops_per_token(n_params_non_embedding: int, n_layers: int, dim: int, seq_len: int) -> float:
    """Training FLOPs (forward + backward) per token."""
    return 6.0 * n_params_non_embedding + 6.0 * n_layers * dim * seq_len


@torch.no_grad()
def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """Measured dense matmul FLOP/s on `device` (8192^2 bf16 on GPU, as in the anchor script)."""
    if device.type != "cuda":
        n, dtype = 1024, torch.float32  # CPU: only to make MFU lines meaningful relative to each other
    # A private generator: the global RNG (restored on resume) must not be advanced by a timing probe.
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=g)
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 5
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Throughput:
    """Tokens/s and MFU over the interval since the last `report()`; timing ends at a sync point."""

    def __init__(self, flops_per_tok: float, peak_flops: float, world_size: int = 1) -> None:
        self.flops_per_tok, self.peak_flops, self.world_size = flops_per_tok, peak_flops, world_size
        self.tokens = 0
        self.t0 = time.perf_counter()

    def add(self, tokens: int) -> None:
        """Tokens processed by this rank since the last report."""
        self.tokens += tokens

    def report(self) -> dict[str, float]:
        """Global tokens/s and MFU (all ranks assumed to process the same number of tokens)."""
        now = time.perf_counter()
        tok_s = self.tokens * self.world_size / max(now - self.t0, 1e-9)
        self.tokens, self.t0 = 0, now
        mfu = tok_s * self.flops_per_tok / (self.peak_flops * self.world_size) if self.peak_flops > 0 else 0.0
        return {"tok_per_s": tok_s, "mfu": mfu}


def drop_records_after(path: str | os.PathLike, step: int) -> None:
    """Remove the JSON-lines records of `path` with "step" > `step` (temp + rename).

    A resumed run replays the steps after its checkpoint; without this its metrics file would
    hold those steps twice. A torn last line (crash mid-write) is dropped too."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)
