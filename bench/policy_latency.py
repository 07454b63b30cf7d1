"""Observation -> action latency of a BC policy at batch 1 on this CPU, encoder included.

Measures `select_action` of a trained checkpoint (or, without one, of an untrained policy of the
default configuration: BC on the Toto encoder, agentview + wrist at 128 px, proprioception) on
observations from a store or synthetic ones, for each torch thread count asked; and, in the same
run, the frozen encoder's share (all cameras in one batch) so the ratio policy/encoder says where
the time goes.

Target (issue 11): p50 <= 30 ms at batch 1 on the project's 2-core CPU, encoder included.

    python bench/policy_latency.py --checkpoint outputs/train_policy/bc-toto-100demos/policy.safetensors
    python bench/policy_latency.py --artifact encoder.safetensors --threads 1 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.latency import measure_latency, store_observations  # noqa: E402

TARGET_MS = 30.0


def untrained_policy(artifact: str | None, cameras: list[str]):
    """A default-config policy (random heads) with identity normalizers: latency does not depend on weights."""
    from policies.bc_policy import RobomimicPolicy
    from policies.config import BCConfig, EncoderConfig, ObsConfig
    from policies.normalize import Normalizers
    from toto_robot.spec import franka_shape_meta

    cfg = BCConfig(encoder=EncoderConfig(artifact=artifact), obs=ObsConfig(cameras=cameras))
    spec = franka_shape_meta(cameras, 128)
    spec = type(spec)(obs={k: spec.obs[k] for k in [*cameras, *cfg.obs.proprio]}, action=spec.action)
    norm = Normalizers({k: (np.zeros(spec.obs[k].shape, np.float32), np.ones(spec.obs[k].shape, np.float32))
                        for k in cfg.obs.proprio}, -np.ones(7, np.float32), np.ones(7, np.float32))
    return RobomimicPolicy(cfg, spec, norm, device="cpu")


def synthetic_observations(spec, n: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    obs = []
    for _ in range(n):
        o = {k: rng.integers(0, 256, s.shape, dtype=np.uint8) if s.kind == "rgb" else
             rng.normal(0, 0.1, s.shape).astype(np.float32) for k, s in spec.obs.items()}
        if "eef_quat" in o:
            o["eef_quat"] = np.array([0, 1, 0, 0], np.float32)
        obs.append(o)
    return obs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="policy checkpoint (default: an untrained default-config policy)")
    ap.add_argument("--artifact", help="encoder artifact for the untrained policy (default: the packaged one)")
    ap.add_argument("--cameras", nargs="+", default=["agentview_image", "wrist_image"])
    ap.add_argument("--store", help="episode store to take observations from (default: synthetic)")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch thread counts to measure")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()

    if args.checkpoint:
        from toto_robot.policy import load_policy

        policy = load_policy(args.checkpoint, device="cpu")
    else:
        policy = untrained_policy(args.artifact, args.cameras)
    keys = list(policy.shape_meta.obs)
    if args.store:
        from toto_robot.episode_store import EpisodeStore

        observations = store_observations(EpisodeStore.open(args.store), keys, 30)
    else:
        observations = synthetic_observations(policy.shape_meta, 30)
    core = getattr(policy, "_core", None)
    cams = policy.shape_meta.rgb_keys
    print(f"policy: {policy.config.algo.name} on {policy.config.encoder.kind}, cameras {cams}, "
          f"{sum(p.numel() for p in policy.algo.nets.parameters() if p.requires_grad) / 1e6:.2f}M trainable parameters; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    for threads in args.threads:
        torch.set_num_threads(threads)
        lat = measure_latency(policy, observations, repeats=args.repeats)
        line = (f"threads {threads}: obs->action p50 {lat['p50_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, max {lat['max_ms']:.1f} ms "
                f"(CPU time p50 {lat['cpu_p50_ms']:.1f} ms: the wall time on an idle machine is about this)")
        if core is not None and cams:
            frames = torch.from_numpy(np.stack([observations[0][k] for k in cams]))
            core.token_features(frames)
            t = []
            for _ in range(max(10, args.repeats // 4)):
                t0 = time.perf_counter()
                core.token_features(frames)
                t.append((time.perf_counter() - t0) * 1e3)
            enc = float(np.median(t))
            line += f"; frozen encoder ({len(cams)} frames, one batch) p50 {enc:.1f} ms = {enc / lat['p50_ms']:.0%} of it"
        verdict = "meets" if lat["p50_ms"] <= TARGET_MS else "MISSES"
        print(f"{line}; {lat['p50_ms'] / TARGET_MS:.2f}x the {TARGET_MS:.0f} ms target ({verdict} it)")


if __name__ == "__main__":
    main()
