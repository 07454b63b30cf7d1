"""Policies for deployment, by name or from a checkpoint, through one lazy registry.

`build_policy(cfg, shape_meta)`: with `cfg.checkpoint`, the checkpoint's own `policy_type`
metadata picks the class (its `load(path)` rebuilds it without the training YAML); otherwise
`cfg.type` picks the class and its `Config` dataclass validates the node. A trained BC policy
plugs in by registering its class here (`POLICIES.register("bc", "policies.bc:BCPolicy")`) with
a `load` classmethod; the runner does not change.
"""

from __future__ import annotations

from typing import Any

from toto_robot.config import as_dataclass
from toto_robot.policy import Policy
from toto_robot.registry import Registry
from toto_robot.spec import ShapeMeta

POLICIES = Registry("policy")
POLICIES.register("tiny_torch", "hardware.simple_policies:TinyTorchPolicy")
POLICIES.register("scripted", "hardware.simple_policies:ScriptedPickPolicy")


def build_policy(cfg: Any, shape_meta: ShapeMeta | None = None) -> Policy:
    """Policy from a config node (`type`, optional `checkpoint`, type-specific keys)."""
    checkpoint = cfg.get("checkpoint", "") if cfg is not None else ""
    if checkpoint:
        from hardware.simple_policies import read_checkpoint_metadata

        kind = read_checkpoint_metadata(checkpoint)["policy_type"]
        overrides = {k: v for k, v in dict(cfg).items() if k not in ("type", "checkpoint")}
        policy = POLICIES.get(kind).load(checkpoint, **overrides)
    else:
        if shape_meta is None:
            raise ValueError("a policy without checkpoint needs the run's shape_meta")
        cls = POLICIES.get(cfg.get("type", ""))
        policy = cls(as_dataclass(cls.Config, cfg), shape_meta)
    if not isinstance(policy, Policy):
        raise TypeError(f"{type(policy).__name__} does not implement toto_robot.policy.Policy")
    return policy
