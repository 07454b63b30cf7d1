"""The frozen Toto encoder: one self-describing artifact and its inference-only loader.

Artifact = one `.safetensors` file. Tensors are prefixed `tokenizer.` (the dVAE encoder half),
`transformer.` (the causal transformer truncated at the chosen layer, no output head) and `pool.`
(an optional pooling head). Its metadata key `toto_robot.encoder` holds a JSON config::

    format, version          "toto_robot.encoder", ARTIFACT_VERSION
    image_size               input frames are image_size x image_size x 3 uint8 RGB
    n_tokens_per_frame       dVAE codes per frame (16 x 16 = 256)
    normalization            how the tokenizer maps uint8 pixels to its input (informational)
    tokenizer, transformer   model config dicts (transformer n_layers = layer)
    layer, feature_dim       the exported layer and its width D
    pooling, pool_dim        PoolingConfig dict and output width, or null
    encoder_hash             sha256 over the config above and every tensor (see `encoder_hash`)
    provenance               source checkpoints, export time, code version (not hashed)

Only `toto_robot.models.*`, torch and safetensors are imported: a robot computer can load it
without training code or a network.

The package ships one pre-trained artifact, `toto_robot/assets/default_encoder.safetensors`
(model card: `toto_robot/assets/MODEL_CARD.md`); `load_encoder()` with no path loads it and
checks that its hash is `DEFAULT_ENCODER_HASH`. Policies store `encoder_hash` in their checkpoints and
compare it with `TotoEncoder.encoder_hash` before reusing cached features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toto_robot.safetensors_file import read_safetensors

FORMAT = "toto_robot.encoder"
ARTIFACT_VERSION = 1
METADATA_KEY = "toto_robot.encoder"
UNHASHED_KEYS = ("encoder_hash", "provenance")
DEFAULT_ENCODER = Path(__file__).resolve().parent / "assets" / "default_encoder.safetensors"
DEFAULT_ENCODER_HASH = "119795dc9b6cb0de310f37a6e7c77eb962fb3014975650a0744be9b154a1101a"


class EncoderArtifactError(ValueError):
    """The file is not a readable encoder artifact, is of another version, or its weights changed."""


def encoder_hash(config: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of the canonical JSON config (without hash/provenance) and every tensor's name,
    dtype, shape and bytes in name order: equal hashes mean equal features for equal input."""
    h = hashlib.sha256()
    hashed = {k: v for k, v in config.items() if k not in UNHASHED_KEYS}
    h.update(json.dumps(hashed, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class TotoEncoder(nn.Module):
    """Frozen dVAE tokenizer + truncated causal transformer (+ optional pooling head).

    Call on uint8 RGB frames: (H, W, 3) -> (256, D); (B, H, W, 3) -> (B, 256, D);
    (B, K, H, W, 3) k-frame histories -> (B, K*256, D), each frame tokenized on its own and the
    K*256 tokens fed causally as one sequence (oldest frame first). numpy or torch input; the
    output is a float32 tensor on the encoder's device. Parameters are frozen and the trunk stays
    in eval mode even when a parent module calls `.train()`; unfreeze the pooling head with
    `encoder.pool_head.requires_grad_(True)` to train it with a policy.

    Inside a policy (e.g. a robomimic encoder core), the policy's `state_dict()` holds only this
    module's pooling head and an `encoder_hash` buffer, not the frozen trunk (the artifact has
    it): checkpoints stay small, and loading one into a policy built on another artifact fails
    with an error naming both hashes.
    """

    def __init__(
        self,
        tokenizer: nn.Module,
        transformer: nn.Module,
        config: Mapping[str, Any],
        pool_head: nn.Module | None = None,
        amp_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.pool_head = pool_head
        self._config = dict(config)
        self.amp_dtype = amp_dtype
        self.register_buffer("encoder_hash_bytes", torch.tensor(list(bytes.fromhex(config["encoder_hash"])), dtype=torch.uint8))
        self.register_state_dict_post_hook(_drop_trunk)
        self.register_load_state_dict_pre_hook(_check_hash_and_keep_trunk)
        self.requires_grad_(False)
        self.train(False)

    # ------------------------------------------------------------------ description
    @property
    def config(self) -> dict[str, Any]:
        return json.loads(json.dumps(self._config))

    @property
    def image_size(self) -> int:
        return int(self._config["image_size"])

    @property
    def feature_dim(self) -> int:
        return int(self._config["feature_dim"])

    @property
    def n_tokens_per_frame(self) -> int:
        return int(self._config["n_tokens_per_frame"])

    @property
    def layer(self) -> int:
        return int(self._config["layer"])

    @property
    def max_tokens(self) -> int:
        """Longest token sequence (K * n_tokens_per_frame) one sample may have."""
        return int(self._config["transformer"]["max_seq_len"])

    @property
    def encoder_hash(self) -> str:
        return str(self._config["encoder_hash"])

    @property
    def pool_dim(self) -> int | None:
        """Width of `pool()` output, None without a pooling head."""
        return None if self.pool_head is None else int(self._config["pool_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    def feature_shape(self, n_frames: int = 1) -> tuple[int, int]:
        """(n_frames * n_tokens_per_frame, feature_dim): token features of one sample."""
        return (n_frames * self.n_tokens_per_frame, self.feature_dim)

    def train(self, mode: bool = True) -> TotoEncoder:
        """Only the pooling head follows `mode`; the frozen trunk always runs in eval mode."""
        super().train(False)
        self.training = mode
        if self.pool_head is not None:
            self.pool_head.train(mode)
        return self

    # ------------------------------------------------------------------ inference
    def tokenize(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (..., H, W, 3) -> dVAE codes (..., n_tokens_per_frame) int64, raster order."""
        x = self._check_frames(frames)
        lead = x.shape[:-3]
        with torch.no_grad(), self._autocast():
            codes = self.tokenizer.encode(x.reshape(-1, *x.shape[-3:]))
        return codes.reshape(*lead, self.n_tokens_per_frame).long()

    def token_features(self, tokens: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """tokens (B, T) int64 -> features (B, T, D) float32 of `layer` (default: the exported one)."""
        layer = self.layer if layer is None else layer
        if not 0 <= layer <= self.layer:
            raise ValueError(f"layer must be in 0..{self.layer} (0 = token embedding), got {layer}")
        if tokens.shape[-1] > self.max_tokens:
            raise ValueError(
                f"{tokens.shape[-1]} tokens exceed the transformer context of {self.max_tokens} "
                f"({self.max_tokens // self.n_tokens_per_frame} frames)"
            )
        with torch.no_grad(), self._autocast():
            return self.transformer.features(tokens, layer=layer).float()

    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        codes = self.tokenize(frames)  # (...,K?, 256)
        single = codes.ndim == 1
        tokens = codes.reshape(1 if single else codes.shape[0], -1)
        feats = self.token_features(tokens)
        return feats[0] if single else feats

    def pool(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token features (B, T, D) -> (B, pool_dim) through the artifact's pooling head."""
        if self.pool_head is None:
            raise RuntimeError("this encoder artifact has no pooling head; export it with pooling=... or pool yourself")
        with self._autocast():
            return self.pool_head(features, mask).float()

    def encode_pooled(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Frames as for `forward` -> pooled features (B, pool_dim) ((pool_dim,) for one frame)."""
        feats = self(frames)
        return self.pool(feats[None])[0] if feats.ndim == 2 else self.pool(feats)

    def encode_chunked(self, frames: np.ndarray, batch_size: int = 64, pooled: bool = False) -> np.ndarray:
        """Batched frames (N, ...) -> numpy features (N, ...) in chunks, for caching over datasets."""
        if len(frames) == 0:
            raise ValueError("encode_chunked needs at least one frame")
        step = self.encode_pooled if pooled else self
        return np.concatenate([step(frames[i : i + batch_size]).cpu().numpy() for i in range(0, len(frames), batch_size)])

    # ------------------------------------------------------------------ helpers
    def _check_frames(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if isinstance(frames, np.ndarray):
            # Flipped (BGR->RGB view) or read-only (zarr, camera buffers) arrays: copy once, torch needs neither.
            ok = frames.flags.c_contiguous and frames.flags.writeable
            frames = torch.from_numpy(frames if ok else np.array(frames, order="C"))
        x = frames
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"frames must be a numpy array or torch tensor, got {type(frames).__name__}")
        if x.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 RGB, got dtype {x.dtype}")
        if x.ndim not in (3, 4, 5) or x.shape[-1] != 3:
            raise ValueError(f"frames must be (H, W, 3), (B, H, W, 3) or (B, K, H, W, 3); got shape {tuple(x.shape)}")
        s = self.image_size
        if tuple(x.shape[-3:-1]) != (s, s):
            raise ValueError(
                f"wrong image size: encoder expects {s}x{s}x3 frames, got {x.shape[-3]}x{x.shape[-2]}x3 "
                "(resize with toto_robot.preprocess.prepare_image)"
            )
        return x.to(self.device, non_blocking=True)

    def _autocast(self) -> Any:
        enabled = self.amp_dtype is not None
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=enabled)


_TRUNK = ("tokenizer.", "transformer.")


def _drop_trunk(module: TotoEncoder, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    for key in [k for k in state_dict if k.startswith(tuple(prefix + t for t in _TRUNK))]:
        del state_dict[key]


def _check_hash_and_keep_trunk(module: TotoEncoder, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Refuse a state dict saved on another artifact; keep the loaded trunk where none is given."""
    saved = state_dict.get(prefix + "encoder_hash_bytes")
    if saved is not None:
        saved_hash = bytes(saved.to("cpu", torch.uint8).tolist()).hex()
        if saved_hash != module.encoder_hash:
            raise EncoderArtifactError(
                f"state dict was saved with encoder {saved_hash[:16]}..., this encoder is "
                f"{module.encoder_hash[:16]}...: load the artifact the checkpoint was trained on"
            )
    for part in ("tokenizer", "transformer"):
        for key, value in getattr(module, part).state_dict(prefix=f"{prefix}{part}.").items():
            state_dict.setdefault(key, value)


# ---------------------------------------------------------------------- artifact I/O
def read_artifact(path: str | os.PathLike, verify: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(config, tensors) of an artifact, after format, version and (if `verify`) hash checks."""
    path = Path(path)
    metadata, tensors = read_safetensors(path, EncoderArtifactError, "encoder artifact")
    if METADATA_KEY not in metadata:
        raise EncoderArtifactError(f"{path}: not a toto_robot encoder artifact (no {METADATA_KEY!r} metadata)")
    try:
        config = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as e:
        raise EncoderArtifactError(f"{path}: artifact config is not valid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise EncoderArtifactError(f"{path}: format {config.get('format')!r} is not {FORMAT!r}")
    version = config.get("version")
    if version != ARTIFACT_VERSION:
        hint = "upgrade toto_robot" if isinstance(version, int) and version > ARTIFACT_VERSION else "re-export it"
        raise EncoderArtifactError(
            f"{path}: encoder artifact version {version} is incompatible with this toto_robot "
            f"(supports version {ARTIFACT_VERSION}); {hint}"
        )
    if verify:
        digest = encoder_hash(config, tensors)
        if digest != config.get("encoder_hash"):
            raise EncoderArtifactError(
                f"{path}: weights/config do not match encoder_hash {config.get('encoder_hash')} "
                f"(computed {digest}); the file is corrupt or was edited"
            )
    return config, tensors


def build_encoder(
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> TotoEncoder:
    """TotoEncoder from an artifact's config and prefixed tensors (all must be used, none missing)."""
    from toto_robot.models.pooling import build_pooling

    tokenizer = _build_tokenizer(config["tokenizer"])
    transformer = _build_transformer(config["transformer"])
    pool_head = build_pooling(config["pooling"], int(config["feature_dim"])) if config.get("pooling") else None
    parts = {"tokenizer": tokenizer, "transformer": transformer, "pool": pool_head}
    for prefix, module in parts.items():
        sub = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        if module is None:
            if sub:
                raise EncoderArtifactError(f"artifact has {prefix}.* tensors but no {prefix} config")
            continue
        missing, unexpected = module.load_state_dict(sub, strict=False)
        if missing or unexpected:
            raise EncoderArtifactError(f"{prefix} weights do not fit its config: missing {missing}, unexpected {unexpected}")
    stray = [k for k in tensors if k.split(".", 1)[0] not in parts]
    if stray:
        raise EncoderArtifactError(f"artifact has tensors outside tokenizer/transformer/pool: {stray[:5]}")
    return TotoEncoder(tokenizer, transformer, config, pool_head, amp_dtype).to(device)


@dataclass
class EncoderConfig:
    """The `encoder` hydra group (conf/encoder/toto.yaml): which artifact, where it runs.

    artifact None is the default encoder shipped with the package. device "auto" picks cuda when
    available; amp autocasts the trunk to bf16 on cuda.
    """

    artifact: str | None = None
    device: str = "auto"
    amp: bool = True


def load_encoder_from_config(cfg: EncoderConfig) -> TotoEncoder:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    amp = torch.bfloat16 if cfg.amp and device.type == "cuda" else None
    return load_encoder(cfg.artifact, device=device, amp_dtype=amp)


def load_encoder(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    amp_dtype: torch.dtype | None = None,
    verify: bool = True,
) -> TotoEncoder:
    """Load a frozen encoder artifact for inference; no `path` = the default encoder shipped with
    the package (its hash must be DEFAULT_ENCODER_HASH). `amp_dtype=torch.bfloat16` autocasts on GPU."""
    config, tensors = read_artifact(DEFAULT_ENCODER if path is None else path, verify=verify)
    if path is None and config["encoder_hash"] != DEFAULT_ENCODER_HASH:
        raise EncoderArtifactError(
            f"{DEFAULT_ENCODER} has encoder_hash {config['encoder_hash']}, the package documents "
            f"{DEFAULT_ENCODER_HASH}: the shipped default encoder was replaced; reinstall toto_robot"
        )
    return build_encoder(config, tensors, device=device, amp_dtype=amp_dtype)


def _build_tokenizer(cfg: Mapping[str, Any]) -> nn.Module:
    """The dVAE without its decoder: `encode(uint8 (N, H, W, 3)) -> (N, grid, grid)` codes.

    Built on the meta device so the (larger) decoder is never allocated, then dropped.
    """
    from toto_robot.models.dvae import DVAE, DVAEConfig

    with torch.device("meta"):
        model = DVAE(DVAEConfig(**cfg))
    del model.decoder
    return model.to_empty(device="cpu")


def _build_transformer(cfg: Mapping[str, Any]) -> nn.Module:
    """The causal transformer without final norm and output head: `features(tokens, layer)`."""
    from toto_robot.models.transformer import Transformer, TransformerConfig, rope_tables

    tcfg = TransformerConfig(**cfg)
    with torch.device("meta"):
        model = Transformer(tcfg)
    del model.norm, model.head
    model.to_empty(device="cpu")
    # RoPE tables are a derived, non-persistent buffer: rebuild them (to_empty left them garbage).
    model.rope.copy_(rope_tables(tcfg.max_seq_len, tcfg.head_dim, tcfg.rope_base))
    return model
