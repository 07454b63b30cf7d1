"""Frozen-encoder latency at batch 1 on this machine: one 128x128 frame and a two-camera pair.

    python bench/encoder_latency.py                     # the shipped default encoder, CPU
    python bench/encoder_latency.py --artifact E.safetensors --threads 1 2

Times each stage a policy pays per control step - dVAE tokenize, transformer up to the exported
layer, the artifact's pooling head - as medians over `--iters` calls, for 1 frame (one camera) and
2 frames (agentview + wrist, tokenized and run as a batch of two 256-token sequences, pooled over
their 512 token features together), at each `--threads` setting. In the same run it times a
`base`-sized encoder (dVAE base, transformer width 768 cut at layer 6, random weights: speed does
not depend on them) so the ratio is measured on the same load. Prints the load average, since the
machine may be shared, and a JSON line with every figure last.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toto_robot.encoder import TotoEncoder, build_encoder, load_encoder  # noqa: E402
from toto_robot.models.dvae import DVAE, DVAEConfig  # noqa: E402
from toto_robot.models.pooling import PoolingConfig, build_pooling  # noqa: E402
from toto_robot.models.transformer import Transformer, config_for  # noqa: E402

TARGET_MS_PER_FRAME = 25.0  # issue 12's hard target; the policy budget asks for ~12 ms


def median_ms(fn: Callable[[], object], iters: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def base_reference(layer: int = 6) -> TotoEncoder:
    """A `base`-sized encoder with random weights (the size the issue measured at 133 + 26 ms)."""
    from pretrain.export import artifact_config, artifact_tensors  # bench-only: the real export layout

    torch.manual_seed(0)
    dvae = DVAE(DVAEConfig.named("base")).eval()
    transformer = Transformer(config_for("base", max_seq_len=512)).eval()
    head = build_pooling(PoolingConfig("attention", n_heads=8), transformer.cfg.dim)
    config = artifact_config(dvae, transformer, layer, head.config, head.out_dim)
    config["encoder_hash"] = "0" * 64
    return build_encoder(config, artifact_tensors(dvae, transformer, layer, head))


def stages(encoder: TotoEncoder, n_frames: int, iters: int) -> dict[str, float]:
    """Median ms of tokenize, transformer, pooling and the whole path for `n_frames` frames."""
    s = encoder.image_size
    frames = torch.randint(0, 256, (n_frames, s, s, 3), dtype=torch.uint8)
    tokens = encoder.tokenize(frames)  # (n, 256): each frame its own sequence
    feats = encoder.token_features(tokens)
    joined = feats.reshape(1, -1, feats.shape[-1])  # pool over all cameras' tokens together

    def whole() -> torch.Tensor:
        with torch.inference_mode():
            f = encoder.token_features(encoder.tokenize(frames))
            return encoder.pool(f.reshape(1, -1, f.shape[-1])) if encoder.pool_head is not None else f

    with torch.inference_mode():
        out = {
            "tokenize_ms": median_ms(lambda: encoder.tokenize(frames), iters),
            "transformer_ms": median_ms(lambda: encoder.token_features(tokens), iters),
            "pool_ms": median_ms(lambda: encoder.pool(joined), iters) if encoder.pool_head is not None else 0.0,
        }
    out["total_ms"] = median_ms(whole, iters)
    return {k: round(v, 2) for k, v in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", default=None, help="encoder artifact (default: the one shipped with toto_robot)")
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()], help="torch CPU threads to time")
    p.add_argument("--iters", type=int, default=50, help="timed calls per figure (median)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the base-size reference")
    args = p.parse_args()

    encoder = load_encoder(args.artifact)
    reference = base_reference() if args.reference else None
    n_params = sum(t.numel() for t in encoder.parameters())
    print(f"encoder {encoder.encoder_hash[:16]}: tokenizer {encoder.config['tokenizer']['vocab_size']} codes, "
          f"transformer d{encoder.feature_dim} to layer {encoder.layer}, pool {encoder.config['pooling']}, "
          f"{n_params / 1e6:.2f}M params; torch {torch.__version__}, {os.cpu_count()} CPUs")
    result: dict[str, object] = {"encoder_hash": encoder.encoder_hash, "layer": encoder.layer,
                                 "params_m": round(n_params / 1e6, 3), "target_ms_per_frame": TARGET_MS_PER_FRAME}
    for threads in args.threads:
        torch.set_num_threads(threads)
        load_before = os.getloadavg()[0]
        for n in (1, 2):
            ours = stages(encoder, n, args.iters)
            line = f"threads {threads}, {n} frame{'s' if n > 1 else ''}: " + ", ".join(f"{k} {v}" for k, v in ours.items())
            result[f"t{threads}_frames{n}"] = ours
            if reference is not None:
                ref = stages(reference, n, max(5, args.iters // 5))
                result[f"t{threads}_frames{n}_base"] = ref
                ratio = ref["total_ms"] / ours["total_ms"]
                result[f"t{threads}_frames{n}_speedup_vs_base"] = round(ratio, 2)
                line += f" | base (5.3M dVAE + d768 to layer 6) {ref['total_ms']} ms: {ratio:.1f}x faster"
            print(line, flush=True)
        result[f"t{threads}_loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(f"  load average (1 min) before/after: {load_before:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    per_frame = min(result[f"t{t}_frames1"]["total_ms"] for t in args.threads)  # type: ignore[index]
    result["meets_target"] = per_frame <= TARGET_MS_PER_FRAME
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
