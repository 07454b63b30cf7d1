"""Observation -> action latency of a policy at batch 1, on real observations from a store."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from toto_robot.episode_store import EpisodeStore


def store_observations(store: EpisodeStore, keys: list[str], n: int, episode: int = 0) -> list[dict[str, np.ndarray]]:
    """Up to `n` consecutive observations (the keys a policy reads) from the start of `episode`."""
    ep = store.get_episode(episode, keys=keys)
    steps = min(n, len(ep[keys[0]]))
    return [{k: np.asarray(ep[k][t]) for k in keys} for t in range(steps)]


def measure_latency(policy: Any, observations: list[dict[str, np.ndarray]], repeats: int = 50, warmup: int = 5) -> dict[str, float]:
    """Time `select_action` over `repeats` calls cycling through `observations` (reset at the start,
    as at an episode start): ms percentiles. The first `warmup` calls (allocation, lazy init) are not timed."""
    policy.reset()
    for i in range(warmup):
        policy.select_action(observations[i % len(observations)])
    policy.reset()
    times = []
    for i in range(repeats):
        obs = observations[i % len(observations)]
        t0 = time.perf_counter()
        policy.select_action(obs)
        times.append((time.perf_counter() - t0) * 1e3)
    t = np.asarray(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "max_ms": float(t.max()), "mean_ms": float(t.mean()), "n": repeats}
