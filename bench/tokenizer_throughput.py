"""Tokenizer throughput and quality: our dVAE encoder vs OpenAI's DALL-E dVAE encoder.

Runs standalone on a bare GPU box (python + torch + numpy [+ dall_e]; no hydra/zarr/av/mujoco).
Without the optional `dall_e` package (`pip install dall-e requests attrs`) the DALL-E comparison
is skipped with a note:

    python bench/tokenizer_throughput.py                 # cuda when available: full run, < 4 min
    python bench/tokenizer_throughput.py --device cpu --quick   # smoke test (CI)

Both encoders run at 128x128 input (-> 16x16 codes of 8192) on the same batch of frames per call
(--batch), bf16 weights + autocast, channels-last,
torch.compile (falls back to eager, and says so, if compiling fails), codes = argmax of the logits,
inputs already on the device (ours takes uint8 frames, DALL-E float32 as its API requires).
DALL-E uses random weights (54M parameters): speed does not depend on the values. Then our dVAE
is trained briefly on procedurally generated images and its hard-code reconstruction PSNR and
codebook use are reported next to the speed. The last line printed is JSON with every figure.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pretrain.tokenizer.objective import AnnealConfig, dvae_loss, evaluate, kl_weight, temperature  # noqa: E402
from pretrain.tokenizer.synthetic import synthetic_images  # noqa: E402
from toto_robot.models.dvae import DVAE, DVAEConfig  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def maybe_compile(fn: Callable, example: torch.Tensor, use: bool, name: str, notes: dict) -> Callable:
    """torch.compile `fn` and run it once; on any failure fall back to eager and record why."""
    if not use:
        notes[name] = "eager (compile off)"
        return fn
    try:
        t0 = time.perf_counter()
        compiled = torch.compile(fn)
        compiled(example)
        compiled(example)
        notes[name] = f"compiled ({time.perf_counter() - t0:.0f} s)"
        return compiled
    except Exception as e:  # any inductor/triton failure: measure eager instead of crashing
        notes[name] = f"eager (compile failed: {type(e).__name__}: {str(e).splitlines()[0][:200]})"
        log(f"[{name}] torch.compile failed, falling back to eager:\n{traceback.format_exc(limit=3)}")
        return fn


def frames_per_s(fn: Callable, x: torch.Tensor, device: torch.device, min_s: float, min_iters: int) -> float:
    fn(x)
    sync(device)
    n, t0 = 0, time.perf_counter()
    while n < min_iters or time.perf_counter() - t0 < min_s:
        fn(x)
        n += 1
    sync(device)
    return n * len(x) / (time.perf_counter() - t0)


def bench_ours(args: argparse.Namespace, device: torch.device, notes: dict) -> tuple[float, float]:
    model = DVAE(DVAEConfig.named(args.size)).to(device).eval()
    params = sum(p.numel() for p in model.encoder.parameters()) / 1e6
    enc = model.encoder.to(torch.bfloat16 if device.type == "cuda" else torch.float32)
    enc = enc.to(memory_format=torch.channels_last)
    x = synthetic_images(args.batch, device=device)  # (B, 128, 128, 3) uint8

    @torch.no_grad()
    def encode(u8: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            return enc(model.normalize(u8)).argmax(dim=1)

    fn = maybe_compile(encode, x, args.compile, "ours", notes)
    codes = fn(x)
    assert codes.shape == (args.batch, 16, 16), codes.shape
    return frames_per_s(fn, x, device, args.min_seconds, args.min_iters), params


def bench_dalle(args: argparse.Namespace, device: torch.device, notes: dict) -> tuple[float, float]:
    from dall_e.encoder import Encoder
    from dall_e.utils import Conv2d

    enc = Encoder(device=device).eval()
    # The package's Conv2d casts to fp16 on CUDA by itself; switch that off and give it the same
    # treatment as ours (bf16 weights under bf16 autocast, channels-last).
    for m in enc.modules():
        if isinstance(m, Conv2d):
            m.use_float16 = False
    params = sum(p.numel() for p in enc.parameters()) / 1e6
    if device.type == "cuda":
        enc = enc.to(torch.bfloat16)
    enc = enc.to(memory_format=torch.channels_last)
    x = (synthetic_images(args.batch, device=device).permute(0, 3, 1, 2).float() / 255)
    x = x.contiguous(memory_format=torch.channels_last)

    @torch.no_grad()
    def encode(f32: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            return enc(f32).argmax(dim=1)

    fn = maybe_compile(encode, x, args.compile, "dalle", notes)
    codes = fn(x)
    assert codes.shape == (args.batch, 16, 16), codes.shape
    return frames_per_s(fn, x, device, args.min_seconds, args.min_iters), params


def train_briefly(args: argparse.Namespace, device: torch.device) -> dict:
    """Train our dVAE for ~args.train_seconds on synthetic images; hard-code eval on held-out ones."""
    torch.manual_seed(0)
    model = DVAE(DVAEConfig.named(args.train_size)).to(device).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.99), weight_decay=1e-4)
    amp = device.type == "cuda"
    gen = torch.Generator(device).manual_seed(1)

    def step_fn(step: int, anneal: AnnealConfig, total: int) -> dict:
        lr = args.lr * min(1.0, (step + 1) / 50) * (0.5 + 0.5 * math.cos(math.pi * min(1.0, step / total)))
        for g in opt.param_groups:
            g["lr"] = lr
        x = synthetic_images(args.train_batch, generator=gen, device=device)
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            out = model(x, tau=temperature(step, anneal))
        loss, m = dvae_loss(out, x.permute(0, 3, 1, 2).float() / 255, kl_weight(step, anneal))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return m

    # Measure the step rate first, then fix the step count so the schedules fit the time budget.
    probe = AnnealConfig(tau_steps=10**9, kl_steps=10**9)
    warm, timed = (1, 2) if args.quick else (3, 10)
    for s in range(warm):
        step_fn(s, probe, 10**9)
    sync(device)
    t0 = time.perf_counter()
    for s in range(warm, warm + timed):
        step_fn(s, probe, 10**9)
    sync(device)
    rate = timed / (time.perf_counter() - t0)
    total = max(4 if args.quick else 20, int(rate * args.train_seconds))
    anneal = AnnealConfig(tau_steps=int(0.8 * total), kl_steps=int(0.3 * total), kl_weight=args.kl_weight)
    log(f"[train] {args.train_size}: {rate:.1f} steps/s at batch {args.train_batch}; running {total} steps")
    t0, m = time.perf_counter(), {}
    for s in range(total):
        m = step_fn(s, anneal, total)
        if s % max(1, total // 10) == 0:
            log(f"[train] step {s}/{total} tau {temperature(s, anneal):.3f} mse {m['mse']:.5f} kl {m['kl']:.3f}")
    sync(device)
    train_s = time.perf_counter() - t0
    model.eval()
    held = synthetic_images(args.eval_images, generator=torch.Generator(device).manual_seed(2), device=device)
    with torch.autocast(device.type, torch.bfloat16, enabled=amp):
        ev = evaluate(model, held, batch_size=256)
    return {"train_size": args.train_size, "train_steps": total, "train_seconds": round(train_s, 1),
            "train_batch": args.train_batch, "final_train_mse": m.get("mse"), "recon_psnr_db": ev["psnr"],
            "codebook_usage": ev["usage"], "codebook_perplexity": ev["perplexity"], "eval_images": args.eval_images}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (seconds): small batches, short training")
    p.add_argument("--size", default="base", help="dVAE size whose encoder is timed")
    p.add_argument("--train-size", default="base", help="dVAE size trained for the quality figures")
    p.add_argument("--batch", type=int, default=256, help="frames per encode call (both encoders)")
    p.add_argument("--min-seconds", type=float, default=8.0, help="timing window per encoder")
    p.add_argument("--min-iters", type=int, default=10)
    p.add_argument("--train-seconds", type=float, default=75.0)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--kl-weight", type=float, default=5e-4)
    p.add_argument("--eval-images", type=int, default=2048)
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--skip-dalle", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.quick:
        args.batch, args.min_seconds, args.min_iters = 8, 0.0, 1
        args.train_seconds, args.train_batch, args.eval_images, args.train_size = 1.0, 8, 32, "tiny"
    if device.type == "cpu":
        args.compile = args.compile and not args.quick
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    log(f"device {dev_name}, torch {torch.__version__}, args {vars(args)}")

    notes: dict[str, str] = {}
    t_start = time.perf_counter()
    ours, ours_params = bench_ours(args, device, notes)
    log(f"[ours] {args.size} encoder ({ours_params:.1f}M params): {ours:,.0f} frames/s at batch {args.batch} ({notes['ours']})")
    result = {"device": dev_name, "torch": torch.__version__, "input": "128x128 -> 16x16 codes, vocab 8192",
              "batch": args.batch, "ours_size": args.size, "ours_params_m": round(ours_params, 2),
              "ours_frames_per_s": round(ours, 1)}
    if not args.skip_dalle and importlib.util.find_spec("dall_e") is None:
        notes["dalle"] = "skipped: the dall_e package is not installed (pip install dall-e requests attrs)"
        log(f"[dalle] {notes['dalle']}; the comparison is left out")
    elif not args.skip_dalle:
        dalle, params = bench_dalle(args, device, notes)
        log(f"[dalle] encoder ({params:.1f}M params): {dalle:,.0f} frames/s at batch {args.batch} ({notes['dalle']})")
        log(f"[ratio] ours ({ours_params:.1f}M params) / DALL-E ({params:.1f}M params): {ours / dalle:.1f}x the frames/s")
        result.update({"dalle_frames_per_s": round(dalle, 1), "dalle_params_m": round(params, 2),
                       "speedup_vs_dalle": round(ours / dalle, 2)})
    quality = train_briefly(args, device)
    log(f"[quality] ours ({args.train_size}) after {quality['train_seconds']:.0f} s of training: held-out PSNR "
        f"{quality['recon_psnr_db']:.2f} dB, codebook usage {quality['codebook_usage']:.3f}, perplexity "
        f"{quality['codebook_perplexity']:.0f}, next to {ours:,.0f} frames/s (DALL-E's quality cannot be measured "
        "offline: its weights download at load time)")
    result.update(quality)
    result.update({"compile": notes, "target_frames_per_s": 20000, "target_speedup": 4.0,
                   "meets_targets": ours >= 20000 and result.get("speedup_vs_dalle", 0) >= 4.0,
                   "total_seconds": round(time.perf_counter() - t_start, 1)})
    if device.type == "cuda":
        result["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
