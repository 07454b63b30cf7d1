"""One training step: bf16 autocast on GPU (fp32 on CPU), next-token cross-entropy, backward,
gradient clipping, AdamW, LR schedule. Shared by the training loop and the throughput bench.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.train.parallelize import ParallelConfig

IGNORE = -100  # targets at segment ends and padding (pretrain.loader.IGNORE)


def next_token_loss(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over non-ignored targets. tokens, targets: (B, T) int64."""
    logits = model(tokens)
    # Under compile the fp32 cast fuses into the softmax kernels: no fp32 copy of the logits.
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW with decay on matrices only (not norms); fused kernel on CUDA, foreach on CPU."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=fused, foreach=None if fused else True)


def attention_context(device: torch.device, preference: str) -> contextlib.AbstractContextManager:
    """SDPA backend preference (cuDNN attention is the fastest on H100 for head dim 64-128);
    the later entries are fallbacks for shapes a backend rejects."""
    if device.type != "cuda" or preference == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
    backends = [order.pop(preference), *order.values()]
    try:
        return sdpa_kernel(backends, set_priority=True)
    except TypeError:  # torch without priorities: only the preferred kernel (+ math as a last resort)
        return sdpa_kernel([backends[0], SDPBackend.MATH])


class TrainStep:
    """Callable `(tokens, targets) -> (loss, grad_norm)` (both detached 0-dim tensors, no sync)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, device: torch.device,
                 parallel: ParallelConfig, bf16: bool, grad_clip: float) -> None:
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.device, self.bf16, self.grad_clip = device, bf16, grad_clip
        self.attention = parallel.attention
        self.loss_fn: Callable[..., torch.Tensor] = next_token_loss
        if parallel.compile == "model":
            self.loss_fn = torch.compile(next_token_loss, fullgraph=parallel.strategy == "none")
        elif parallel.compile == "block":
            self.loss_fn = _blockwise_loss
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __call__(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = tokens.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        with attention_context(self.device, self.attention):
            with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
                loss = self.loss_fn(self.model, tokens, targets)
            loss.backward()
        if self.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip, foreach=True)
        else:
            norm = torch.zeros((), device=self.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.scheduler is not None:
            self.scheduler.step()
        if hasattr(norm, "full_tensor"):  # DTensor under FSDP
            norm = norm.full_tensor()
        return loss.detach(), norm.detach()


def _head_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


@functools.cache
def _compiled_head_loss() -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Compiled on first use, not at import: importing torch's compiler costs seconds per process."""
    return torch.compile(_head_loss, fullgraph=True)


def _blockwise_loss(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """With per-block compile the loss is compiled on its own, so the fp32 cast still fuses."""
    return _compiled_head_loss()(model(tokens), targets)
