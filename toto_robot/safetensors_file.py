"""Reading a safetensors file of the project (policy checkpoint, encoder artifact) with one error.

Both kinds are one safetensors file whose JSON metadata says what it is; a missing, truncated or
garbled file must end in the caller's error type naming the path, not in safetensors' own types.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def read_safetensors(path: str | os.PathLike, error: type[Exception], what: str,
                     load_tensors: bool = True) -> tuple[dict[str, str], dict[str, "torch.Tensor"]]:
    """(metadata, tensors) of the file at `path` (tensors empty unless `load_tensors`); raises
    `error` naming `what` and the path when the file is missing or not readable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise error(f"no {what} at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()} if load_tensors else {}
    except Exception as e:  # safetensors raises its own types for truncated or garbled files
        raise error(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return metadata, tensors
