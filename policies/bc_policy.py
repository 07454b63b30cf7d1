"""A trained robomimic algorithm behind `toto_robot.policy.Policy`, saved as one checkpoint.

Inference does what training did, with the same functions: `eef_quat` sign made continuous,
low-dim keys standardised with the training statistics, camera frames kept as uint8 for the Toto
core (its history of K frames kept here, the episode's first frame repeated until K exist) or
turned into CHW floats by robomimic's own `rgb` processing for the ResNet core; BC-Transformer
gets its context of past observations the same way. Predicted actions are unnormalized and
clipped to the range seen in training; with action chunks, overlapping predictions are averaged
(ACT's temporal ensembling). Nothing here imports `envs`: the robot stack loads this class by
the name its checkpoint records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policies.algos import build_algo, window
from policies.config import BCConfig
from policies.encoders import TotoCore
from policies.normalize import Normalizers, canonical_low_dim
from toto_robot.checkpoint import CheckpointError, PolicyCheckpoint
from toto_robot.config import as_dataclass, to_dict
from toto_robot.spec import ArraySpec, ShapeMeta, SpecError

POLICY_CLASS = "robomimic"


def policy_shape_meta(cfg: BCConfig, data_spec: Mapping[str, ArraySpec], action: ArraySpec) -> ShapeMeta:
    """The observations a policy of `cfg` reads, with the specs the data (or env) gives them."""
    keys = [*cfg.camera_keys, *cfg.low_dim_keys]
    missing = [k for k in keys if k not in data_spec]
    if missing:
        raise SpecError(f"the data lacks {missing} that encoder={cfg.encoder.kind} / obs reads; it has {sorted(data_spec)}")
    obs = {k: ArraySpec(data_spec[k].shape, data_spec[k].dtype, "rgb" if k in cfg.camera_keys else "low_dim") for k in keys}
    return ShapeMeta(obs=obs, action=action)


def resolve_device(device: str) -> torch.device:
    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)


class TemporalEnsembler:
    """ACT's temporal ensembling: the action for step t is the weighted mean of every prediction made
    for t by the chunks of steps t-k+1..t, weights exp(-coeff * i) with i = 0 the oldest."""

    def __init__(self, chunk: int, coeff: float) -> None:
        self.chunk, self.coeff = chunk, coeff
        self.reset()

    def reset(self) -> None:
        self._chunks: list[np.ndarray] = []

    def update(self, chunk: np.ndarray) -> np.ndarray:
        """chunk (k, A) predicted now -> the action (A,) to execute now."""
        self._chunks = [c[1:] for c in self._chunks if len(c) > 1] + [np.asarray(chunk)]
        preds = np.stack([c[0] for c in self._chunks])  # oldest first
        w = np.exp(-self.coeff * np.arange(len(preds)))
        return (w[:, None] * preds).sum(0) / w.sum()


class RobomimicPolicy:
    """BC / BC-RNN / BC-Transformer / chunked BC on any encoder; see the module docstring."""

    done = False  # the env or the operator ends an episode

    def __init__(self, config: BCConfig, shape_meta: ShapeMeta, normalizers: Normalizers,
                 action_convention: dict[str, Any] | None = None, device: str = "auto",
                 training: dict[str, Any] | None = None) -> None:
        self.config, self.shape_meta, self.normalizers = config, shape_meta, normalizers
        self.action_convention, self.training = action_convention, dict(training or {})
        self.device = resolve_device(device)
        self.algo = build_algo(config, shape_meta, self.device)
        self.algo.set_eval()
        self.context = window(config)[0] + 1 if config.algo.name == "bc_transformer" else 1
        cores = [m for m in self.algo.nets.modules() if isinstance(m, TotoCore)]
        self._core = cores[0] if cores else None  # every camera's core shares one frozen encoder, layer and history
        self.reset()

    # ------------------------------------------------------------------ Policy
    def reset(self) -> None:
        self.algo.reset()
        self._steps: deque[dict[str, np.ndarray]] = deque(maxlen=self.context)
        self._frames: dict[str, deque[np.ndarray]] = {k: deque(maxlen=self.config.obs.history) for k in self.config.camera_keys}
        self._ensemble = TemporalEnsembler(self.config.algo.chunk, self.config.algo.ensemble_coeff) if self.config.algo.chunk > 1 else None

    @torch.inference_mode()
    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        obs = self.shape_meta.check_obs(obs)
        self._steps.append(self._prepare(obs))
        while len(self._steps) < self.context:  # episode start: the first observation stands in for the past
            self._steps.appendleft(self._steps[0])
        steps = list(self._steps)
        if self.context == 1:
            batch = {k: torch.as_tensor(v)[None] for k, v in steps[0].items()}
        else:
            batch = {k: torch.as_tensor(np.stack([s[k] for s in steps]))[None] for k in steps[0]}
        out = self.algo.get_action({k: v.to(self.device) for k, v in batch.items()})[0].float().cpu().numpy()
        if self._ensemble is not None:
            out = self._ensemble.update(out)
        return self.normalizers.unnormalize_action(out)

    def _prepare(self, obs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One step's network inputs (no batch/time dims), as the training batches hold them."""
        import robomimic.utils.obs_utils as ObsUtils

        step = {k: self.normalizers.normalize_obs(k, canonical_low_dim(k, obs[k])) for k in self.config.low_dim_keys}
        cams = self.config.camera_keys
        for k in cams:
            if self.config.encoder.kind == "resnet18":
                step[k] = ObsUtils.process_obs(obs[k], obs_modality="rgb")
            elif self.config.obs.history == 1:
                step[k] = obs[k]
            else:
                frames = self._frames[k]
                frames.append(obs[k])
                step[k] = np.stack([frames[0]] * (frames.maxlen - len(frames)) + list(frames))
        if self._core is not None and cams:
            # All cameras through the frozen encoder in one batch (one call instead of one per camera);
            # the cores then take the token features, as they do from the training feature cache.
            feats = self._core.token_features(torch.as_tensor(np.stack([step[k] for k in cams])).to(self.device))
            step.update({k: feats[i].cpu().numpy() for i, k in enumerate(cams)})
        return step

    # ------------------------------------------------------------------ checkpoint
    def encoder_reference(self) -> dict[str, Any] | None:
        """What the checkpoint records about the image encoder (the frozen trunk is not in it)."""
        e = self.config.encoder
        if e.kind == "resnet18":
            return {"kind": e.kind, "weights": "trained with the policy (in this checkpoint)"}
        if not e.frozen or not self.config.camera_keys:
            return None
        core = next(m for m in self.algo.nets.modules() if isinstance(m, TotoCore))
        return {"kind": e.kind, "artifact": e.artifact or "packaged default (toto_robot.load_encoder())",
                "weights": "random" if e.kind == "toto_random" else "pretrained", "seed": e.seed,
                "hash": core.encoder.encoder_hash, "layer": core.layer}

    def to_checkpoint(self) -> PolicyCheckpoint:
        return PolicyCheckpoint(POLICY_CLASS, to_dict(self.config), self.shape_meta, tensors=self.algo.serialize(),
                                action_convention=self.action_convention, normalizers=self.normalizers.to_dict(),
                                encoder=self.encoder_reference(), training=self.training)

    def save(self, path: Any) -> Any:
        return self.to_checkpoint().save(path)

    @classmethod
    def from_checkpoint(cls, ckpt: PolicyCheckpoint, device: str = "auto", encoder_artifact: str | None = None) -> RobomimicPolicy:
        """Rebuild from a checkpoint. encoder_artifact: where the frozen encoder lives on this machine
        if not where training found it (its hash must still match the checkpoint's)."""
        from toto_robot.encoder import EncoderArtifactError

        try:
            config = as_dataclass(BCConfig, ckpt.config)
            if encoder_artifact:
                config.encoder.artifact = encoder_artifact
            policy = cls(config, ckpt.shape_meta, Normalizers.from_dict(ckpt.normalizers), ckpt.action_convention,
                         device, ckpt.training)
            policy.algo.deserialize(ckpt.tensors)
        except EncoderArtifactError as e:
            ref = ckpt.encoder or {}
            raise CheckpointError(f"{ckpt.path}: trained on encoder {ref.get('hash', '?')[:16]}... ({ref.get('artifact')}): {e}; "
                                  "pass encoder_artifact=PATH of that artifact") from None
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{ckpt.path}: does not rebuild as a {POLICY_CLASS} policy: {e}") from None
        policy.algo.set_eval()
        return policy
