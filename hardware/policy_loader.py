"""The policy a deploy/replay session runs: from a checkpoint, or a named class without one.

With `checkpoint`, `toto_robot.policy.load_policy` rebuilds whatever class the file names
(a trained BC policy, a tiny test net) and refuses it when the session's cameras/state or
action convention differ from what it was trained on; the remaining keys of the node are
runtime settings passed to that class. Without, `type` picks a class from the same registry
and its `Config` dataclass validates the node. No training code is imported here.
"""

from __future__ import annotations

from typing import Any

from toto_robot.config import as_dataclass
from toto_robot.policy import POLICIES, Policy, load_policy
from toto_robot.spec import ShapeMeta


def build_policy(cfg: Any, shape_meta: ShapeMeta | None = None, convention: Any = None,
                 what: str = "this robot session") -> Policy:
    """Policy from a config node (`type` | `checkpoint`, plus type-specific or runtime keys).

    shape_meta: what the session provides (cameras at the policy's image size + robot state);
    checked against a checkpoint's, and the spec of a policy built without one.
    """
    node = dict(cfg or {})
    checkpoint = node.pop("checkpoint", "")
    if checkpoint:
        node.pop("type", None)
        return load_policy(checkpoint, provided=shape_meta, convention=convention, what=what, **node)
    if shape_meta is None:
        raise ValueError("a policy without checkpoint needs the run's shape_meta")
    cls = POLICIES.get(node.get("type", ""))
    policy = cls(as_dataclass(cls.Config, node), shape_meta)
    if not isinstance(policy, Policy):
        raise TypeError(f"{type(policy).__name__} does not implement toto_robot.policy.Policy")
    return policy


def prepare_checkpoint(path: str) -> tuple[int | None, list[float] | None]:
    """Before a session starts: import the checkpoint's policy class, and return the side of the
    square images it reads (None without cameras), to which the session resizes camera frames,
    and the arm joints its demonstrations started from (None if it does not record them).

    The class is imported first because some (BC policies: torch's compiler stack, via robomimic)
    load a native LLVM that segfaults when Mesa's llvmpipe - franky-sim's camera rendering - is
    already in the process."""
    from toto_robot.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path, load_tensors=False)
    POLICIES.get(ckpt.policy_class)
    spec = ckpt.shape_meta
    sizes = {spec.obs[k].shape[0] for k in spec.rgb_keys}
    if len(sizes) > 1:
        raise ValueError(f"{path}: cameras of different sizes {sorted(sizes)} are not supported by the runner")
    return (sizes.pop() if sizes else None), ckpt.training.get("start_joints")
