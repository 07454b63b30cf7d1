"""The policy contract: the protocol every consumer talks to, the one registry of policy classes,
and the one `load_policy(path)`.

The sim evaluator, the deployment runner, replay and teleop only use `Policy`: `shape_meta`
(which observations to build), `reset`, `select_action` and `done`. Policies that live in a
checkpoint (`toto_robot.checkpoint`) also implement `CheckpointPolicy`; the checkpoint names its
class by registered name, so `load_policy` imports the class only when a file asks for it and
`hardware` never imports training code or `envs` to run one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from toto_robot.registry import Registry
from toto_robot.spec import ShapeMeta


@runtime_checkable
class Policy(Protocol):
    """Observation dict (unbatched, as `shape_meta.obs` says) -> one action (A,) in [-1, 1]."""

    shape_meta: ShapeMeta  # the observations it reads (keys, shapes, dtypes) and its action
    done: bool  # True once the policy considers its task finished: the runner ends the rollout

    def reset(self) -> None:
        """Forget history and queued actions; called at every episode start and after any stop."""

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Action for this control step, float32 (A,). May serve from an internal action queue."""


@runtime_checkable
class CheckpointPolicy(Policy, Protocol):
    """A policy that round-trips through one checkpoint file."""

    def to_checkpoint(self) -> Any:
        """-> toto_robot.checkpoint.PolicyCheckpoint (weights + self-describing metadata)."""

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, **runtime: Any) -> CheckpointPolicy:
        """Rebuild from a PolicyCheckpoint; `runtime` holds settings that may differ from training
        (device, latency padding...); anything else is refused by the class."""


# Policy classes by name. A checkpoint's `policy_class` is looked up here; `type=...` in a deploy
# config too (for policies without a checkpoint). Targets are imported on use only.
POLICIES = Registry("policy class")
POLICIES.register("tiny_torch", "hardware.simple_policies:TinyTorchPolicy")
POLICIES.register("scripted", "hardware.simple_policies:ScriptedPickPolicy")
POLICIES.register("robomimic", "policies.bc_policy:RobomimicPolicy")


def load_policy(
    path: str | os.PathLike,
    provided: ShapeMeta | None = None,
    convention: Any = None,
    what: str = "the environment",
    **runtime: Any,
) -> CheckpointPolicy:
    """The policy in checkpoint `path`, rebuilt by its registered class.

    With `provided` (the observation spec an env or robot offers) and/or `convention` (its
    `ActionConvention`), refuses a mismatch before building anything, naming every difference.
    """
    from toto_robot.checkpoint import CheckpointError, read_checkpoint

    ckpt = read_checkpoint(path)
    if provided is not None:
        ckpt.check_compatible(provided, convention, what)
    elif convention is not None and ckpt.action_convention is not None:
        from toto_robot.action import check_convention

        check_convention(ckpt.action_convention, convention, f"policy checkpoint {path}")
    try:
        cls = POLICIES.get(ckpt.policy_class)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None
    policy = cls.from_checkpoint(ckpt, **runtime)
    if not isinstance(policy, Policy):
        raise TypeError(f"{type(policy).__name__} does not implement toto_robot.policy.Policy")
    return policy
