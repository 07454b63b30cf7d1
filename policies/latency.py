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
    as at an episode start): ms percentiles. The first `warmup` calls (allocation, lazy init) are not timed.
    cpu_p50_ms: the process CPU time a call used, which the wall time approaches on an idle machine (on a
    shared, loaded CPU the wall time also holds the time other processes ran)."""
    policy.reset()
    for i in range(warmup):
        policy.select_action(observations[i % len(observations)])
    policy.reset()
    times, cpu = [], []
    for i in range(repeats):
        obs = observations[i % len(observations)]
        t0, c0 = time.perf_counter(), time.process_time()
        policy.select_action(obs)
        times.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    t = np.asarray(times)
    return {"p50_ms": float(np.percentile(t, 50)), "p90_ms": float(np.percentile(t, 90)),
            "max_ms": float(t.max()), "mean_ms": float(t.mean()), "cpu_p50_ms": float(np.median(cpu)), "n": repeats}
