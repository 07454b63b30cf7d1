"""toto-robot's shared floor: specs, the episode store, the policy protocol, configs, encoders.

Nothing here imports `envs`, `pretrain`, `policies` or `hardware`. Names are resolved lazily so
that importing one submodule (say, the transformer on a bare GPU box) does not pull in zarr,
and reading a store does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "ArraySpec": "toto_robot.spec",
    "ShapeMeta": "toto_robot.spec",
    "SpecError": "toto_robot.spec",
    "EpisodeStore": "toto_robot.episode_store",
    "EpisodeStoreError": "toto_robot.episode_store",
    "Policy": "toto_robot.policy",
    "load_encoder": "toto_robot.encoder",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'toto_robot' has no attribute {name!r}")
