"""Apply parallelism from outside the model: activation checkpointing -> per-block compile ->
FSDP2 `fully_shard` (or DDP). The model file stays a plain nn.Module.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

STRATEGIES = ("none", "ddp", "fsdp")
COMPILE_MODES = ("auto", "none", "block", "model")
ATTENTION = ("auto", "cudnn", "flash", "efficient", "math")


@dataclass
class ParallelConfig:
    strategy: str = "none"  # none | ddp | fsdp (FSDP2 fully_shard per block + root)
    compile: str = "auto"  # auto | none | block (each block, fullgraph) | model (whole forward + loss)
    activation_checkpointing: bool = False  # recompute each block in backward (memory for compute)
    attention: str = "cudnn"  # SDPA kernel preference on CUDA: auto | cudnn | flash | efficient | math
    reshard_after_forward: bool = True  # FSDP: free gathered params after forward (ZeRO-3)

    def __post_init__(self) -> None:
        for name, value, allowed in (("strategy", self.strategy, STRATEGIES), ("compile", self.compile, COMPILE_MODES),
                                     ("attention", self.attention, ATTENTION)):
            if value not in allowed:
                raise ValueError(f"parallel.{name}={value!r}; expected one of {allowed}")
        if self.strategy == "fsdp" and self.compile == "model":
            raise ValueError("parallel.compile=model is not supported with fsdp; use compile=block")


def resolve(cfg: ParallelConfig, device: torch.device) -> ParallelConfig:
    """`compile=auto`: the benchmarked choice on GPU (whole model, or per block under FSDP), none on
    CPU (compiling a tiny CPU model costs more than it saves)."""
    if cfg.compile != "auto":
        return cfg
    mode = "none" if device.type != "cuda" else "block" if cfg.strategy == "fsdp" else "model"
    return replace(cfg, compile=mode)


def parallelize(model: nn.Module, cfg: ParallelConfig, param_dtype: torch.dtype | None = None) -> nn.Module:
    """Wrap `model` (with `.layers` blocks) in place; returns the module to call for forward.

    `param_dtype` (e.g. bf16) is FSDP's compute dtype for gathered parameters; master weights,
    gradients reductions and optimizer state stay fp32. DDP/FSDP need an initialized process group.
    """
    if cfg.compile == "auto":
        raise ValueError("resolve(cfg, device) the compile mode before parallelize()")
    layers = model.layers
    if cfg.activation_checkpointing:
        from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

        for i, block in enumerate(layers):
            layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if cfg.compile == "block":
        for block in layers:
            # Blocks share code, so one compiled graph serves them all (params are graph inputs).
            block.compile(fullgraph=True)
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for i, block in enumerate(layers):
            # The last block's params are needed again right away in backward: keep them gathered.
            fully_shard(block, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward and i < len(layers) - 1)
        fully_shard(model, mp_policy=mp, reshard_after_forward=cfg.reshard_after_forward)
        return model
    if cfg.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return model
