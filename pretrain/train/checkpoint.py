"""Atomic, resumable checkpoints: model + optimizer through torch.distributed.checkpoint (sharded
under FSDP, one file set for plain and DDP models), plus scheduler, data position and RNG.

Layout: `<dir>/step_00000100/` holding DCP files, `train_state.pt` (scheduler, loader, step,
config; rank 0) and `rng_rank00000.pt` per rank. Every rank writes into `<dir>/.tmp_step_.../`;
after a barrier rank 0 renames it, so a directory named `step_*` is always complete.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

log = logging.getLogger(__name__)
_STEP_RE = re.compile(r"^step_(\d{8})$")


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def latest(ckpt_dir: str | Path) -> Path | None:
    """Newest complete checkpoint directory under `ckpt_dir`, or None."""
    root = Path(ckpt_dir)
    steps = sorted(p for p in root.glob("step_*") if _STEP_RE.match(p.name) and p.is_dir()) if root.is_dir() else []
    return steps[-1] if steps else None


def save(ckpt_dir: str | Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
         train_state: dict[str, Any], keep: int = 3) -> Path:
    """Collective: every rank calls it. Returns the final directory."""
    root = Path(ckpt_dir)
    final, tmp = root / f"step_{step:08d}", root / f".tmp_step_{step:08d}"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-save
        tmp.mkdir(parents=True)
    _barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    torch.save(rng_state(), tmp / f"rng_rank{_rank():05d}.pt")
    if _rank() == 0:
        torch.save(train_state, tmp / "train_state.pt")
    _barrier()
    if _rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(p for p in root.glob("step_*") if _STEP_RE.match(p.name))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    _barrier()
    return final


def load(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Collective: restore model, optimizer and this rank's RNG in place; returns train_state."""
    path = Path(path)
    if not (path / "train_state.pt").is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no train_state.pt)")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    rng_file = path / f"rng_rank{_rank():05d}.pt"
    if rng_file.is_file():
        set_rng_state(torch.load(rng_file, weights_only=False))
    else:
        log.warning("%s has no RNG state for rank %d (world size changed?): RNG not restored", path, _rank())
    return torch.load(path / "train_state.pt", weights_only=False)
