"""The pre-training loop, top to bottom: set up devices and ranks, build and parallelize the model,
resume, then step / log / checkpoint until `steps`.

Runs unchanged on CPU (tiny, fp32), one GPU (bf16 autocast) and many GPUs or nodes under
`torchrun` (DDP or FSDP2 chosen by `ParallelConfig.strategy`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from pretrain.loader import ClipSource, PackedLoader, PackingConfig
from pretrain.train import checkpoint
from pretrain.train.metrics import Throughput, drop_records_after, flops_per_token, measure_peak_flops
from pretrain.train.parallelize import ParallelConfig, parallelize, resolve
from pretrain.train.schedule import warmup_cosine
from pretrain.train.step import TrainStep, build_optimizer
from toto_robot.models.transformer import Transformer, TransformerConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    steps: int = 1000
    # > 0: a wall-clock budget [min]. The step rate measured over the first log intervals (after
    # the compile) fixes how many steps fit (train.steps the most); the cosine schedule ends there
    # and a resumed run keeps that count. A device lent for minutes runs one command.
    max_minutes: float = 0.0
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine ends at lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    seed: int = 0
    device: str = "auto"  # auto (cuda:LOCAL_RANK if available, else cpu) | cpu | cuda
    precision: str = "auto"  # auto (bf16 on cuda, fp32 on cpu) | bf16 | fp32
    log_every: int = 10
    ckpt_every: int = 500  # 0 = only at the end
    keep_checkpoints: int = 3
    resume: bool = True  # continue from the newest checkpoint in <out_dir>/checkpoints
    peak_tflops: float = 0.0  # MFU denominator per device; 0 = measure a bf16 matmul at start
    tensorboard: bool = False
    wandb_project: str = ""  # empty = no W&B

    def __post_init__(self) -> None:
        if self.max_minutes < 0:
            raise ValueError(f"train.max_minutes must be >= 0 (0 = no time budget), got {self.max_minutes}")
        if self.device not in ("auto", "cpu", "cuda") or self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"train.device={self.device!r} (auto|cpu|cuda), train.precision={self.precision!r} "
                             "(auto|bf16|fp32)")


def init_distributed(device: str) -> tuple[int, int, torch.device]:
    """(rank, world_size, device) from torchrun's environment; single process without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("train.device=cuda, but torch sees no CUDA GPU here: set train.device=cpu (or auto); "
                         "the default encoder's CPU preset is preset=default_encoder_cpu")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=dev if use_cuda else None)
    return rank, world, dev


def build_model(cfg: TransformerConfig, parallel: ParallelConfig, device: torch.device, seed: int) -> Transformer:
    """Same seed -> same weights on every rank. FSDP models start on the meta device and are
    materialized shard by shard (`to_empty` + `init_weights`), so no rank holds a full copy."""
    torch.manual_seed(seed)
    if parallel.strategy == "fsdp":
        with torch.device("meta"):
            return Transformer(cfg)
    with torch.device(device):
        return Transformer(cfg)


def train(model_cfg: TransformerConfig, cfg: TrainConfig, data: PackingConfig, parallel: ParallelConfig,
          source: ClipSource, out_dir: str | Path, stop_after: int | None = None) -> list[dict[str, float]]:
    """Train; returns per-step records {step, loss, grad_norm, lr} (loss averaged over ranks).

    `stop_after` ends this call after that many steps without a final checkpoint, as if killed
    (used to test that resuming continues the exact run).
    """
    t_start = time.perf_counter()  # a time budget counts from here: model build and start-up included
    rank, world, device = init_distributed(cfg.device)
    out = Path(out_dir)
    check_vocab(model_cfg, source)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    parallel = resolve(parallel, device)
    model = build_model(model_cfg, parallel, device, cfg.seed)
    n_non_emb = model.num_params(embedding=False)
    wrapped = parallelize(model, parallel, param_dtype=torch.bfloat16 if bf16 else None)
    if parallel.strategy == "fsdp":
        model.to_empty(device=device)
        torch.manual_seed(cfg.seed)
        model.init_weights()
    optimizer = build_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device)
    scheduler = warmup_cosine(optimizer, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    loader = PackedLoader(source, data, rank=rank, world_size=world)
    step_fn = TrainStep(wrapped, optimizer, scheduler, device, parallel, bf16, cfg.grad_clip)

    step, planned = 0, None  # planned: the step count a time budget fixed
    ckpt_dir = out / "checkpoints"
    # The schedule's shape comes from this run's config (so train.steps can be raised on resume);
    # the checkpoint supplies the step it has reached.
    if cfg.resume and (path := checkpoint.latest(ckpt_dir)) is not None:
        check_same_model(path, model_cfg)
        state = checkpoint.load(path, model, optimizer)
        scheduler.load_state_dict(state["scheduler"] | {"lr_lambdas": [None] * len(scheduler.lr_lambdas)})
        loader.load_state_dict(state["loader"])
        step = int(state["step"])
        planned = state.get("planned_steps") if cfg.max_minutes else None  # a run resumed without a budget: train.steps
        if planned is not None:
            scheduler.lr_lambdas[0].total_steps = planned
        if rank == 0:
            drop_records_after(out / "metrics.jsonl", step)  # the steps after the checkpoint are replayed
        log.info("resumed from %s at step %d", path, step)

    peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops > 0 else measure_peak_flops(device)
    meter = Throughput(flops_per_token(n_non_emb, model_cfg.n_layers, model_cfg.dim, loader.seq_len), peak, world)
    if rank == 0:
        log.info("model %.1fM params, %d ranks on %s, %s; padding %.2f%% of tokens; %d steps/epoch",
                 model.num_params() / 1e6, world, device, "bf16" if bf16 else "fp32",
                 100 * loader.padding_fraction(), loader.steps_per_epoch)
    writers = _Writers(out, cfg, model_cfg, rank) if rank == 0 else None

    def save() -> None:
        train_state = {"step": step, "scheduler": scheduler.state_dict(), "loader": loader.state_dict(),
                       "model_config": asdict(model_cfg), "train_config": asdict(cfg), "planned_steps": planned}
        checkpoint.save(ckpt_dir, step, model, optimizer, train_state, keep=cfg.keep_checkpoints)

    history: list[dict[str, float]] = []
    pending: list[tuple[int, float, torch.Tensor, torch.Tensor]] = []
    total = planned or cfg.steps
    bar = tqdm(total=total, initial=step, disable=rank != 0, desc="pretrain", dynamic_ncols=True)
    batches = iter(loader)
    start_step, mark = step, None  # mark: (step, time) of the first log point
    while step < total:
        if stop_after is not None and step - start_step >= stop_after:
            break
        batch = next(batches)
        lr = scheduler.get_last_lr()[0]
        loss, norm = step_fn(batch.tokens, batch.targets)
        step += 1
        meter.add(batch.tokens.numel())
        pending.append((step, lr, loss, norm))
        if step % cfg.log_every == 0 or step == total:
            # The only host sync: losses of the interval reduced across ranks in one call.
            losses = torch.stack([p[2] for p in pending]).float()
            if world > 1:
                dist.all_reduce(losses, op=dist.ReduceOp.AVG)
            rates = meter.report()
            for (s, lr_s, _, n), value in zip(pending, losses.tolist()):
                history.append({"step": s, "loss": value, "grad_norm": float(n), "lr": lr_s})
            pending.clear()
            bar.update(step - bar.n)
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", tok_s=f"{rates['tok_per_s']:.3g}",
                            mfu=f"{100 * rates['mfu']:.1f}%")
            if writers:
                writers.write(history[-1] | rates)
            if cfg.max_minutes and planned is None:
                now = time.perf_counter()
                if mark is None:
                    mark = (step, now)
                elif step - mark[0] >= CALIBRATION_STEPS:
                    planned = fit_steps(cfg, step, (step - mark[0]) / (now - mark[1]), now - t_start, world, device)
                    total = scheduler.lr_lambdas[0].total_steps = bar.total = planned
                    if rank == 0:
                        log.info("time budget %.1f min: %d steps fit (%.2f steps/s measured)", cfg.max_minutes, planned,
                                 (step - mark[0]) / (now - mark[1]))
        if (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == total:
            save()
    bar.close()
    if writers:
        writers.close()
    return history


CALIBRATION_STEPS = 10  # a time budget's step rate is measured over at least this many steps
BUDGET_MARGIN = 0.97  # of the remaining time planned for steps (checkpoints and the last sync take the rest)


def fit_steps(cfg: TrainConfig, step: int, steps_per_s: float, elapsed_s: float, world: int, device: torch.device) -> int:
    """The step count that ends this run within cfg.max_minutes (rank 0's measurement, on every rank)."""
    remaining = max(0.0, cfg.max_minutes * 60.0 - elapsed_s) * BUDGET_MARGIN
    planned = torch.tensor([min(cfg.steps, step + max(1, int(remaining * steps_per_s)))], device=device)
    if world > 1:
        dist.broadcast(planned, src=0)
    return int(planned.item())


def check_vocab(model_cfg: TransformerConfig, source: ClipSource) -> None:
    """The model must embed every code in the shards: a smaller vocabulary would fail mid-run with a
    bare IndexError, so it is refused at start. A larger one trains, but export pairs a model only
    with a tokenizer of its exact vocabulary, so it is warned about."""
    data_vocab = getattr(source, "vocab_size", None)
    if data_vocab is None or data_vocab == model_cfg.vocab_size:
        return
    where = getattr(source, "root", "the token data")
    msg = (f"model.vocab_size={model_cfg.vocab_size}, but the tokens at {where} come from a {data_vocab}-code "
           f"tokenizer: set model.vocab_size={data_vocab}")
    if model_cfg.vocab_size < data_vocab:
        raise ValueError(msg)
    log.warning("%s to export this model with that tokenizer", msg)


def check_same_model(path: Path, model_cfg: TransformerConfig) -> None:
    """Refuse to resume a checkpoint of another model configuration (it would fail mid-load)."""
    saved = torch.load(path / "train_state.pt", weights_only=False).get("model_config")
    if saved is not None and saved != asdict(model_cfg):
        diff = {k: (saved.get(k), v) for k, v in asdict(model_cfg).items() if saved.get(k) != v}
        raise ValueError(f"{path} is a checkpoint of another model (checkpoint vs config: {diff}); start a "
                         f"fresh run with run_name=<new name> (or delete {path.parent.parent})")


class _Writers:
    """metrics.jsonl always; TensorBoard and W&B only when configured (imported lazily)."""

    def __init__(self, out: Path, cfg: TrainConfig, model_cfg: TransformerConfig, rank: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(out / "metrics.jsonl", "a")
        self.tb = self.wandb = None
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        if cfg.wandb_project:
            import wandb

            self.wandb = wandb.init(project=cfg.wandb_project, dir=str(out),
                                    config={"train": asdict(cfg), "model": asdict(model_cfg)})

    def write(self, record: dict[str, Any]) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        scalars = {k: v for k, v in record.items() if k != "step"}
        if self.tb:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, record["step"])
        if self.wandb:
            self.wandb.log(scalars, step=record["step"])

    def close(self) -> None:
        self.jsonl.close()
        if self.tb:
            self.tb.close()
        if self.wandb:
            self.wandb.finish()
