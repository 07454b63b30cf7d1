"""Training throughput of our transformer + training step vs the plain reference, same process.

For each size, runs the reference anchor's `run(...)` (shared/anchors/reference_transformer_mfu.py:
compiled plain LLaMA, fused AdamW, bf16 autocast) and then our model with our training step
(pretrain.train: compile mode, SDPA backend, fused loss, AdamW with clipping and LR schedule) on
the same batch, sequence length and dims, and prints tokens/s, MFU against the anchor's measured
bf16 matmul peak, and our/reference ratio.

Needs only torch (no hydra/zarr/mujoco):
    python bench/pretrain_throughput.py --reference shared/anchors/reference_transformer_mfu.py \
        --sizes small,base,large
    python bench/pretrain_throughput.py --device cpu --quick --reference ...   # CPU smoke test

Measured 2026-11-26 on one H200 (torch 2.11, matmul peak 802 TFLOP/s), seq 4096, same batch,
`--variants model:cudnn --batch-mult 2` (~3 min incl. compile):
    base  d768 L12  B8:  reference 481k tok/s (46.4% MFU), ours 497k (48.0%): 1.03x; ours B16 510k (49.2%)
    small d512 L8  B16:  reference 1.14M (39.9%), ours 1.26M (44.0%): 1.10x
    large d1024 L24 B4:  reference 160k (49.9%), ours 163k (50.8%): 1.02x
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pretrain.train.metrics import flops_per_token, measure_peak_flops  # noqa: E402
from pretrain.train.parallelize import ParallelConfig, parallelize  # noqa: E402
from pretrain.train.schedule import warmup_cosine  # noqa: E402
from pretrain.train.step import TrainStep, build_optimizer  # noqa: E402
from toto_robot.models.transformer import Transformer, TransformerConfig  # noqa: E402

# The anchor's configurations (name, dim, layers, heads, ffn, batch). Its "large" has 24 layers
# (our `large` preset has Toto's 16); the comparison uses the anchor's dims so both sides match.
SIZES = {
    "small": ("d512 L8", 512, 8, 8, 1408, 16),
    "base": ("d768 L12", 768, 12, 12, 2048, 8),
    "large": ("d1024 L24", 1024, 24, 16, 2816, 4),
    "quick": ("d64 L2 (CPU smoke)", 64, 2, 4, 192, 2),
}


def load_reference(path: str):
    spec = importlib.util.spec_from_file_location("reference_transformer_mfu", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"cannot import reference script {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def cpu_reference(module, device: torch.device):
    """The anchor hard-codes CUDA; for the CPU smoke mode point it at the CPU."""
    if device.type == "cuda":
        yield
        return
    saved = module.dev, torch.cuda.synchronize
    module.dev, torch.cuda.synchronize = "cpu", lambda *a, **k: None
    try:
        yield
    finally:
        module.dev, torch.cuda.synchronize = saved


def time_ours(dims: tuple, seq: int, steps: int, warmup: int, device: torch.device, compile_mode: str,
              attention: str, batch_mult: int = 1) -> dict:
    _, d, n_layers, heads, ffn, batch = dims
    batch *= batch_mult
    cfg = TransformerConfig(vocab_size=8192, dim=d, n_layers=n_layers, n_heads=heads, ffn_dim=ffn, max_seq_len=seq)
    torch.manual_seed(0)
    with torch.device(device):
        model = Transformer(cfg)
    parallel = ParallelConfig(compile=compile_mode, attention=attention)
    wrapped = parallelize(model, parallel)
    opt = build_optimizer(model, 3e-4, 0.1, (0.9, 0.95), device)
    step = TrainStep(wrapped, opt, warmup_cosine(opt, 100, 10_000), device, parallel,
                     bf16=device.type == "cuda", grad_clip=1.0)
    x = torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=device)
    tokens, targets = x[:, :-1], x[:, 1:]
    t_compile = time.perf_counter()
    for _ in range(warmup):
        loss, _ = step(tokens, targets)
    sync(device)
    t_compile = time.perf_counter() - t_compile
    t = time.perf_counter()
    for _ in range(steps):
        loss, _ = step(tokens, targets)
    sync(device)
    dt = (time.perf_counter() - t) / steps
    tok_s = batch * seq / dt
    flops = flops_per_token(model.num_params(embedding=False), n_layers, d, seq)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return dict(batch=batch, tok_per_s=round(tok_s), tflops=round(tok_s * flops / 1e12, 1), loss=round(float(loss), 3),
                warmup_s=round(t_compile, 1), max_mem_gib=round(mem, 1), compile=compile_mode, attention=attention)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference", required=True, help="path to reference_transformer_mfu.py")
    ap.add_argument("--sizes", default="small,base,large", help=f"comma list of {sorted(SIZES)}")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile happens here)")
    ap.add_argument("--variants", default="model:cudnn",
                    help="our configs to time, comma list of compile:attention, e.g. model:cudnn,block:flash")
    ap.add_argument("--batch-mult", type=int, default=1,
                    help="also time our first variant at this multiple of the reference batch (reported apart)")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: tiny dims, seq 256, 2 steps, no compile")
    args = ap.parse_args()

    device = torch.device(args.device)
    sizes = args.sizes.split(",")
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    if args.quick:
        sizes, args.seq, args.steps, args.warmup, variants = ["quick"], 256, 2, 1, [("none", "auto")]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or any(len(v) != 2 for v in variants):
        ap.error(f"unknown sizes {unknown} (known {sorted(SIZES)}) or malformed --variants {args.variants}")

    ref = load_reference(args.reference)
    with cpu_reference(ref, device):
        peak = ref.peak_bf16() if device.type == "cuda" else measure_peak_flops(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(json.dumps(dict(device=name, torch=torch.__version__, peak_tflops=round(peak / 1e12))), flush=True)

    summary = []
    for size in sizes:
        dims = SIZES[size]
        try:
            with cpu_reference(ref, device):
                r = ref.run(dims[0], *dims[1:], seq=args.seq, steps=args.steps, compile_=not args.quick)
            r["mfu_pct"] = round(100 * r["tflops"] * 1e12 / peak, 1)
            print(json.dumps(dict(size=size, impl="reference", **r)), flush=True)
        except Exception as e:  # keep going: the other sizes still give numbers
            print(json.dumps(dict(size=size, impl="reference", error=f"{type(e).__name__}: {e}"[:400])), flush=True)
            r = None
        free(device)
        for compile_mode, attention in variants:
            try:
                o = time_ours(dims, args.seq, args.steps, args.warmup, device, compile_mode, attention)
            except Exception as e:
                print(json.dumps(dict(size=size, impl="ours", compile=compile_mode, attention=attention,
                                      error=f"{type(e).__name__}: {e}"[:400])), flush=True)
                free(device)
                continue
            o["mfu_pct"] = round(100 * o["tflops"] * 1e12 / peak, 1)
            o["ratio_vs_reference"] = round(o["tok_per_s"] / r["tok_per_s"], 3) if r else None
            print(json.dumps(dict(size=size, impl="ours", seq=args.seq, **o)), flush=True)
            summary.append((size, f"{compile_mode}:{attention}", r, o))
            free(device)
        if args.batch_mult > 1:  # throughput headroom with a larger micro-batch: not a same-batch ratio
            try:
                o = time_ours(dims, args.seq, args.steps, args.warmup, device, *variants[0], args.batch_mult)
                o["mfu_pct"] = round(100 * o["tflops"] * 1e12 / peak, 1)
                print(json.dumps(dict(size=size, impl="ours-larger-batch", seq=args.seq, **o)), flush=True)
            except Exception as e:
                print(json.dumps(dict(size=size, impl="ours-larger-batch", error=f"{type(e).__name__}: {e}"[:400])))
            free(device)

    print(f"\n{'size':6} {'ours':14} {'ref tok/s':>10} {'ref MFU':>8} {'our tok/s':>10} {'our MFU':>8} {'ratio':>6}")
    for size, variant, r, o in summary:
        rt, rm = (f"{r['tok_per_s']:>10}", f"{r['mfu_pct']:>7}%") if r else (f"{'-':>10}", f"{'-':>8}")
        print(f"{size:6} {variant:14} {rt} {rm} {o['tok_per_s']:>10} {o['mfu_pct']:>7}% "
              f"{o['ratio_vs_reference'] or '-':>6}")


if __name__ == "__main__":
    main()
