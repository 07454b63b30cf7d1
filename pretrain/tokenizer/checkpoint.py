"""Tokenizer checkpoints: atomic save (temp + rename), resume, and rebuilding a DVAE from a file.

A checkpoint is a dict {"model", "optimizer", "step", "dvae_config", "train_config", "rng", and
the objective's and crop RNG's state} saved
with torch.save; `load_dvae` needs only the file (the config travels inside it).
"""

from __future__ import annotations

import dataclasses
import os
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toto_robot.models.dvae import DVAE, DVAEConfig


def save_checkpoint(path: str | os.PathLike, model: DVAE, optimizer: torch.optim.Optimizer | None, step: int,
                    train_config: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:
    """`extra`: further resumable state (the quantizer objective's, the crop RNG), stored beside."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "step": step,
        "dvae_config": dataclasses.asdict(model.cfg),
        "train_config": train_config or {},
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        **dict(extra or {}),
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no tokenizer checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"{path}: unreadable tokenizer checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or "model" not in state or "dvae_config" not in state:
        raise ValueError(f"{path}: not a tokenizer checkpoint (needs 'model' and 'dvae_config')")
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng"]["torch"])
    np.random.set_state(state["rng"]["numpy"])
    random.setstate(state["rng"]["python"])


def load_dvae(path: str | os.PathLike, device: str | torch.device = "cpu") -> DVAE:
    """Rebuild the trained DVAE from a checkpoint file alone, in eval mode."""
    state = load_checkpoint(path)
    model = DVAE(DVAEConfig(**state["dvae_config"]))
    model.load_state_dict(state["model"])
    return model.to(device).eval()
