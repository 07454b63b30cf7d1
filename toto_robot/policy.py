"""The policy interface every consumer of a policy talks to.

The sim evaluator, the hardware deployment runner and replay only need `reset` and
`select_action`; BC policies additionally implement `forward` / `predict_action_chunk` for the
trainer. Scripted experts, tiny test policies and trained BC policies all fit the same protocol,
so the runner never changes when a new policy arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from toto_robot.spec import ShapeMeta


@runtime_checkable
class Policy(Protocol):
    """Observation dict (unbatched, as `shape_meta.obs` says) -> one action (A,) in [-1, 1]."""

    shape_meta: ShapeMeta

    def reset(self) -> None:
        """Forget history and queued actions; called at every episode start and after any stop."""

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Action for this control step, float32 (A,). May serve from an internal action queue."""


@runtime_checkable
class TrainablePolicy(Policy, Protocol):
    """What the BC trainer additionally needs (batched torch tensors)."""

    def forward(self, batch: Mapping[str, Any]) -> tuple[Any, dict[str, float]]:
        """batch: {"obs": {k: (B, T, ...)}, "action": (B, T, A)} -> (loss, metrics)."""

    def predict_action_chunk(self, obs: Mapping[str, Any]) -> Any:
        """obs: {k: (B, T_obs, ...)} -> actions (B, T_act, A)."""
