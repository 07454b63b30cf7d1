"""One BC training epoch over N demos with cached frozen-encoder features, and what the cache saves.

Builds (or reads) the feature cache of a demo store for the default policy configuration (BC on
the Toto encoder, agentview + wrist, keypoints), then times full epochs over the store's first
`--demos` episodes reading cached features, and, in the same run, a few batches that encode the
frames live (the cache bypassed, as with augmentation) to give the cache's speed-up as a ratio.
Prints the cache size on disk too.

Target (issue 11): one epoch over 50 demos <= 5 s on the project's 2-core CPU.

    python bench/policy_epoch.py --store data/cube_pick_demos.zarr --artifact encoder.safetensors
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

from policies.algos import window  # noqa: E402
from policies.config import BCConfig, EncoderConfig, ObsConfig  # noqa: E402
from policies.dataset import WindowBatches  # noqa: E402
from policies.feature_cache import cache_root  # noqa: E402
from policies.train import prepare, toto_cores  # noqa: E402
from toto_robot.episode_store import EpisodeStore  # noqa: E402

TARGET_S = 5.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="demo store (collect_demos.py / train_policy.py)")
    ap.add_argument("--artifact", help="encoder artifact (default: the packaged one)")
    ap.add_argument("--demos", type=int, default=50)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--live-batches", type=int, default=3, help="batches timed with live encoding (cache bypassed)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import robomimic.utils.log_utils as LogUtils
    import robomimic.utils.train_utils as TrainUtils

    torch.set_num_threads(args.threads)
    store = EpisodeStore.open(args.store)
    episodes = list(range(min(args.demos, store.n_episodes)))
    cfg = BCConfig(encoder=EncoderConfig(artifact=args.artifact), obs=ObsConfig())
    t0 = time.perf_counter()
    policy, data = prepare(cfg, store, episodes, "cpu", progress=True)
    prep = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in cache_root(store.path).rglob("*") if f.is_file())
    before, after = window(cfg)
    batches = WindowBatches(data, policy.normalizers, args.batch_size, before, after)
    times = []
    for epoch in range(1, args.epochs + 1):
        batches.set_epoch(epoch)
        t = time.perf_counter()
        with LogUtils.silence_stdout():
            TrainUtils.run_epoch(policy.algo, batches, epoch)
        times.append(time.perf_counter() - t)
    epoch_s = float(np.median(times))

    live_policy, live_data = prepare(BCConfig(encoder=EncoderConfig(artifact=args.artifact, cache=False), obs=ObsConfig()),
                                     store, episodes, "cpu", progress=False)
    live = WindowBatches(live_data, live_policy.normalizers, args.batch_size, before, after,
                         featurize={k: c.token_features for k, c in toto_cores(live_policy).items()})
    t = time.perf_counter()
    with LogUtils.silence_stdout():
        TrainUtils.run_epoch(live_policy.algo, live, 1, num_steps=args.live_batches)
    live_epoch = (time.perf_counter() - t) / args.live_batches * len(live)

    print(f"store {store.path}: {len(episodes)} demos, {data.n_steps} steps, {len(batches)} batches of {args.batch_size}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, torch threads {args.threads}")
    print(f"feature cache {cache_root(store.path)}: {size / 2**20:.0f} MiB on disk; data + cache ready in {prep:.1f} s")
    print(f"epoch with cached features: median {epoch_s:.2f} s over {args.epochs} ({', '.join(f'{x:.2f}' for x in times)}); "
          f"{epoch_s / TARGET_S:.2f}x the {TARGET_S:.0f} s target ({'meets' if epoch_s <= TARGET_S else 'MISSES'} it)")
    print(f"epoch encoding frames live (from {args.live_batches} batches): {live_epoch:.1f} s = {live_epoch / epoch_s:.1f}x the cached epoch")


if __name__ == "__main__":
    main()
