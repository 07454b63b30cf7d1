"""Disjoint seed ranges: demonstrations are collected on TRAIN_SEEDS, policies evaluated on EVAL_SEEDS."""

from __future__ import annotations

TRAIN_SEEDS = range(0, 1_000_000)
EVAL_SEEDS = range(1_000_000, 1_100_000)


def train_seeds(n: int, start: int = 0) -> list[int]:
    """The first `n` training seeds from offset `start`."""
    return _take(TRAIN_SEEDS, n, start)


def eval_seeds(n: int, start: int = 0) -> list[int]:
    """The first `n` evaluation seeds from offset `start` (never overlapping training seeds)."""
    return _take(EVAL_SEEDS, n, start)


def _take(seeds: range, n: int, start: int) -> list[int]:
    if n < 0 or start < 0 or start + n > len(seeds):
        raise ValueError(f"need 0 <= start and start + n <= {len(seeds)}, got start={start}, n={n}")
    return list(seeds[start : start + n])
