"""The self-describing policy checkpoint: one safetensors file, weights + JSON metadata.

Metadata keys (safetensors metadata is str -> str):

- `toto_robot.policy`: JSON with
    format, version     FORMAT, VERSION
    policy_class        registered name in `toto_robot.policy.POLICIES` (the class that loads it)
    config              that class's config (everything needed to rebuild the network)
    shape_meta          the observations the policy reads and its action (`ShapeMeta.to_dict`)
    image_preprocessing how camera frames become the policy's images (`prepare_image` + size)
    normalizers         observation/action statistics from the training data (plain lists)
    encoder             frozen visual encoder reference and hash, or null
    code_version        toto_robot version and git commit that wrote it
    training            free-form provenance (dataset, epoch, scores)
- `action_convention` (`toto_robot.action.ATTR_KEY`): JSON of the `ActionConvention` the actions
  were recorded under, or absent for policies that do not depend on one.

Tensors are the policy's trainable weights only (a frozen encoder trunk lives in its own artifact
and is referenced by hash). No pickled objects: the file can be inspected with any safetensors
reader and loaded without the training code's config files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toto_robot.action import ATTR_KEY, ActionConvention, check_convention
from toto_robot.safetensors_file import read_safetensors
from toto_robot.spec import ShapeMeta, SpecError

FORMAT = "toto_robot.policy"
VERSION = 1
METADATA_KEY = "toto_robot.policy"

# What `toto_robot.preprocess.prepare_image` does; recorded so a reader knows how frames were made.
PREPARE_IMAGE = {"function": "toto_robot.preprocess.prepare_image", "crop": "centre square", "resize": "area (box)"}


class CheckpointError(ValueError):
    """A policy checkpoint is missing, unreadable, of another format/version, or incomplete."""


class PolicyCompatibilityError(SpecError):
    """An env or robot does not provide what a policy checkpoint was trained on."""


def image_preprocessing(shape_meta: ShapeMeta) -> dict[str, Any]:
    """The `image_preprocessing` record of a policy reading `shape_meta`'s cameras."""
    sizes = {k: list(shape_meta.obs[k].shape) for k in shape_meta.rgb_keys}
    return {**PREPARE_IMAGE, "images": sizes}


@dataclass
class PolicyCheckpoint:
    """Everything one policy file holds. `tensors` are torch tensors (CPU)."""

    policy_class: str
    config: dict[str, Any]
    shape_meta: ShapeMeta
    tensors: dict[str, Any] = field(default_factory=dict)
    action_convention: dict[str, Any] | None = None
    normalizers: dict[str, Any] = field(default_factory=dict)
    encoder: dict[str, Any] | None = None
    training: dict[str, Any] = field(default_factory=dict)
    image_preprocessing: dict[str, Any] | None = None
    code_version: dict[str, str] | None = None
    path: Path | None = None  # where it was read from (not stored)

    def metadata(self) -> dict[str, str]:
        from toto_robot.provenance import code_version

        body = {
            "format": FORMAT,
            "version": VERSION,
            "policy_class": self.policy_class,
            "config": self.config,
            "shape_meta": self.shape_meta.to_dict(),
            "image_preprocessing": self.image_preprocessing or image_preprocessing(self.shape_meta),
            "normalizers": self.normalizers,
            "encoder": self.encoder,
            "code_version": self.code_version or code_version(),
            "training": self.training,
        }
        meta = {METADATA_KEY: json.dumps(body)}
        if self.action_convention is not None:
            meta[ATTR_KEY] = json.dumps(dict(self.action_convention))
        return meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically (temp file + rename) so a crash never leaves half a checkpoint."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        # clone: modules shared between parts of a network (one frozen encoder, two cameras) appear
        # under several names, and safetensors refuses tensors that share memory
        tensors = {k: v.detach().to("cpu").clone() for k, v in self.tensors.items()}
        save_file(tensors, str(tmp), metadata=self.metadata())
        os.replace(tmp, path)
        return path

    def check_compatible(self, provided: ShapeMeta, convention: ActionConvention | None, what: str) -> None:
        """Raise PolicyCompatibilityError naming every difference between what this policy reads
        and what `what` (an env, a robot session, a store) provides; the action convention must
        match when the checkpoint records one and `convention` is given."""
        check_provides(self.shape_meta, provided, what, f"policy {self.path or self.policy_class}")
        if convention is not None and self.action_convention is not None:
            check_convention(self.action_convention, convention, f"policy checkpoint {self.path or ''}".strip())


def check_provides(needed: ShapeMeta, provided: ShapeMeta, what: str, who: str = "the policy") -> None:
    """`provided` must hold every observation key of `needed` with the same shape and dtype, and the
    same action spec. Extra keys in `provided` are fine (a policy may read a subset)."""
    problems = []
    cams_needed, cams_have = needed.rgb_keys, provided.rgb_keys
    missing_cams = [k for k in cams_needed if k not in provided.obs]
    if missing_cams:
        problems.append(f"camera set: {who} uses cameras {cams_needed}, {what} has {cams_have}")
    missing = [k for k in needed.obs if k not in provided.obs and k not in missing_cams]
    if missing:
        problems.append(f"observation keys: {who} reads {missing}, which {what} does not provide (it has {sorted(provided.obs)})")
    for key, spec in needed.obs.items():
        have = provided.obs.get(key)
        if have is None or have == spec:
            continue
        if spec.kind == "rgb" and have.shape[-1] == spec.shape[-1] and have.shape != spec.shape:
            problems.append(f"image size of {key!r}: {who} expects {spec.shape[0]}x{spec.shape[1]}, "
                            f"{what} gives {have.shape[0]}x{have.shape[1]}")
        else:
            problems.append(f"{key!r}: {who} expects {spec.dtype}{list(spec.shape)} ({spec.kind}), "
                            f"{what} gives {have.dtype}{list(have.shape)} ({have.kind})")
    if needed.action != provided.action:
        problems.append(f"action: {who} outputs {needed.action.dtype}{list(needed.action.shape)}, "
                        f"{what} takes {provided.action.dtype}{list(provided.action.shape)}")
    if problems:
        raise PolicyCompatibilityError(f"{who} does not fit {what}:\n  " + "\n  ".join(problems))


def read_checkpoint(path: str | os.PathLike, load_tensors: bool = True) -> PolicyCheckpoint:
    """Read a policy checkpoint; CheckpointError naming the problem if it is not a usable one."""
    path = Path(path)
    metadata, tensors = read_safetensors(path, CheckpointError, "policy checkpoint", load_tensors)
    if METADATA_KEY not in metadata:
        hint = " (an encoder artifact? pass it as encoder.artifact)" if "toto_robot.encoder" in metadata else ""
        raise CheckpointError(f"{path}: not a toto_robot policy checkpoint (no {METADATA_KEY!r} metadata){hint}")
    try:
        body = json.loads(metadata[METADATA_KEY])
        convention = json.loads(metadata[ATTR_KEY]) if ATTR_KEY in metadata else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: checkpoint metadata is not valid JSON ({e})") from None
    if body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: format {body.get('format')!r} is not {FORMAT!r}")
    version = body.get("version")
    if version != VERSION:
        hint = "upgrade toto_robot" if isinstance(version, int) and version > VERSION else "retrain or convert it"
        raise CheckpointError(f"{path}: policy checkpoint version {version} is not supported (this code reads {VERSION}); {hint}")
    missing = [k for k in ("policy_class", "config", "shape_meta") if k not in body]
    if missing:
        raise CheckpointError(f"{path}: checkpoint metadata lacks {missing}")
    try:
        shape_meta = ShapeMeta.from_dict(body["shape_meta"])
    except SpecError as e:
        raise CheckpointError(f"{path}: bad shape_meta in checkpoint: {e}") from None
    return PolicyCheckpoint(
        policy_class=body["policy_class"],
        config=body["config"],
        shape_meta=shape_meta,
        tensors=tensors,
        action_convention=convention,
        normalizers=body.get("normalizers") or {},
        encoder=body.get("encoder"),
        training=body.get("training") or {},
        image_preprocessing=body.get("image_preprocessing"),
        code_version=body.get("code_version"),
        path=path,
    )
