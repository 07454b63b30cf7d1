"""Observation encoders as robomimic cores: the frozen Toto encoder, and a random-shift augmentation.

robomimic finds encoder cores and randomizers by class name once their module is imported
(`EncoderCore.__init_subclass__` registers them), so import this module before building an algo.
Camera keys the Toto core reads use the `toto` modality, whose processing is the identity
(their network inputs are token features), instead of robomimic's CHW [0, 1] `rgb` processing
of frames (which the ResNet baseline uses).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from robomimic.models.base_nets import SpatialSoftmax
from robomimic.models.obs_core import EncoderCore, Randomizer
from robomimic.utils.obs_utils import Modality

from toto_robot.encoder import EncoderArtifactError, TotoEncoder, build_encoder, encoder_hash, load_encoder
from toto_robot.models.pooling import PoolingConfig, build_pooling

TOTO_MODALITY = "toto"
_ENCODERS: dict[tuple[str | None, str, int], TotoEncoder] = {}


class TotoModality(Modality):
    """Token features for the Toto core: nothing to convert."""

    name = TOTO_MODALITY

    @classmethod
    def _default_obs_processor(cls, obs: Any) -> Any:
        return obs

    @classmethod
    def _default_obs_unprocessor(cls, obs: Any) -> Any:
        return obs


def frozen_encoder(artifact: str | None, weights: str = "pretrained", seed: int = 0) -> TotoEncoder:
    """The frozen encoder an `encoder` config names, loaded once per process and shared.

    artifact: path of an exported artifact, None for the packaged default; weights "random":
    the same architecture re-initialised from `seed` (a baseline for what pre-training adds).
    """
    if weights not in ("pretrained", "random"):
        raise ValueError(f"weights must be 'pretrained' or 'random', got {weights!r}")
    key = (str(Path(artifact).resolve()) if artifact else None, weights, seed if weights == "random" else 0)
    if key not in _ENCODERS:
        if not artifact and inspect.signature(load_encoder).parameters["path"].default is inspect.Parameter.empty:
            raise EncoderArtifactError("this toto_robot ships no default encoder yet: pass encoder.artifact=PATH "
                                       "(an export_encoder.py artifact)")
        # Loading draws from (and random_like reseeds) torch's global RNG: keep it as it was, so a
        # policy's trainable heads start the same whether this process had loaded the encoder or not.
        with torch.random.fork_rng(devices=[]):
            encoder = load_encoder(artifact) if artifact else load_encoder()
            _ENCODERS[key] = random_like(encoder, seed) if weights == "random" else encoder
    return _ENCODERS[key]


def random_like(encoder: TotoEncoder, seed: int) -> TotoEncoder:
    """Same tokenizer + transformer architecture, freshly initialised from `seed`, no pooling head;
    its hash is computed like an artifact's so cached features never mix with the trained ones'."""
    from toto_robot.models.dvae import DVAE, DVAEConfig
    from toto_robot.models.transformer import Transformer, TransformerConfig

    config = {k: v for k, v in encoder.config.items() if k not in ("encoder_hash", "provenance")}
    config.update(pooling=None, pool_dim=None, random_init_seed=seed)
    torch.manual_seed(seed)
    dvae = DVAE(DVAEConfig(**config["tokenizer"]))
    transformer = Transformer(TransformerConfig(**config["transformer"]))
    tensors = {f"tokenizer.{k}": v for k, v in dvae.state_dict().items() if k.startswith("encoder.")}
    tensors.update({f"transformer.{k}": v for k, v in transformer.state_dict().items() if not k.startswith(("norm.", "head."))})
    config["encoder_hash"] = encoder_hash(config, tensors)
    return build_encoder(config, tensors)


class TotoCore(EncoderCore):
    """Frozen Toto encoder + trainable heads: token features (K * 256, D) -> (feature_dimension,),
    or (2 * feature_dimension,) with separate keypoints.

    The pooling head (attention or average) summarises what is in the image; pooling discards
    where, and RoPE transformers carry little absolute position in their features, so
    `keypoints` > 0 adds robomimic's SpatialSoftmax over each frame's 16x16 token grid: learned
    1x1 projections whose softmax over the grid gives expected (x, y) image coordinates, the
    standard visuomotor way to read positions precisely; a linear layer maps them to
    feature_dimension features (as robomimic's VisualCore does: its encoders' outputs pass a ReLU,
    which would cut raw coordinates in half). `pooling="grid"` replaces both with one head
    (toto_robot.models.pooling.GridPool): a small conv net over each frame's token grid read out by
    `keypoints` spatial-softmax maps, so a keypoint can fire where a token differs from its neighbours.

    The network input of a camera key is the token features the frozen encoder makes of its
    frame (or its K-frame history), not the frames: robomimic's sequence models check every input's
    rank, and features are also what the feature cache stores. `token_features` turns frames
    into them - called by the cache builder, by the training batches when the cache is off, and
    by the policy at inference - under no_grad, so no gradient ever reaches the encoder.
    """

    def __init__(
        self,
        input_shape: list[int],
        artifact: str | None = None,
        weights: str = "pretrained",
        seed: int = 0,
        layer: int | None = None,
        pooling: str = "attention",
        pool_heads: int = 4,
        feature_dimension: int = 64,
        keypoints: int = 0,
    ) -> None:
        super().__init__(input_shape=input_shape)
        self.encoder = frozen_encoder(artifact, weights, seed)
        self.token_shape = tuple(int(s) for s in input_shape)
        n_tokens, dim = self.token_shape
        if dim != self.encoder.feature_dim or n_tokens % self.encoder.n_tokens_per_frame:
            raise ValueError(f"TotoCore input {self.token_shape} is not (K * {self.encoder.n_tokens_per_frame}, "
                             f"{self.encoder.feature_dim}) token features of this encoder")
        self.history = n_tokens // self.encoder.n_tokens_per_frame
        self.layer = self.encoder.layer if layer is None else int(layer)
        self.feature_dimension = feature_dimension
        self.grid = int(round(self.encoder.n_tokens_per_frame**0.5))
        self.pool = build_pooling(PoolingConfig(pooling, n_heads=pool_heads, out_dim=feature_dimension, grid=self.grid,
                                                n_frames=self.history, n_keypoints=keypoints), self.encoder.feature_dim)
        keypoints = 0 if pooling == "grid" else keypoints  # the grid head reads its own keypoints
        self.keypoints = SpatialSoftmax([dim, self.grid, self.grid], num_kp=keypoints, learnable_temperature=True) if keypoints else None
        self.keypoint_proj = torch.nn.Linear(self.history * keypoints * 2, feature_dimension) if keypoints else None

    def output_shape(self, input_shape: Any = None) -> list[int]:
        return [self.feature_dimension * (2 if self.keypoints is not None else 1)]

    @torch.no_grad()
    def token_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, [K,] H, W, 3), 0..255 -> (B, K * 256, D) features of `layer`, float32 values
        rounded to float16: what the feature cache stores, so cached and live features are identical."""
        if frames.dtype != torch.uint8:
            frames = frames.round().clamp(0, 255).to(torch.uint8)
        codes = self.encoder.tokenize(frames)  # (B, [K,] 256)
        feats = self.encoder.token_features(codes.reshape(codes.shape[0], -1), layer=self.layer).half()
        if not torch.isfinite(feats).all():
            raise ValueError(f"encoder features of layer {self.layer} overflow float16 (|x| > 65504) or are not finite")
        return feats.float()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if tuple(inputs.shape[1:]) != self.token_shape:
            raise ValueError(f"TotoCore expects token features {self.token_shape} per sample, got {tuple(inputs.shape[1:])}")
        x = inputs.float()
        pooled = self.pool(x)
        if self.keypoints is None:
            return pooled
        b, g = x.shape[0], self.grid
        frames = x.reshape(b * self.history, g, g, -1).permute(0, 3, 1, 2)  # raster-order tokens -> (B*K, D, 16, 16)
        return torch.cat([pooled, self.keypoint_proj(self.keypoints(frames).reshape(b, -1))], dim=1)

    def __repr__(self) -> str:
        return (f"TotoCore(tokens={self.token_shape}, layer={self.layer}, encoder={self.encoder.encoder_hash[:12]}, "
                f"pool={self.pool.config})")


def random_shift(x: torch.Tensor, pad: int, channels_last: bool) -> torch.Tensor:
    """Shift each image by up to +-pad pixels (edges replicated; DrQ's augmentation), shape kept.
    x: (..., H, W, C) if channels_last else (..., C, H, W)."""
    y = x.movedim(-1, -3) if channels_last else x
    lead, (c, h, w) = y.shape[:-3], y.shape[-3:]
    y = y.reshape(-1, c, h, w).float()
    n = y.shape[0]
    padded = torch.nn.functional.pad(y, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), device=y.device)
    rows = torch.arange(h, device=y.device)[None, :] + dy[:, None]  # (n, h)
    cols = torch.arange(w, device=y.device)[None, :] + dx[:, None]  # (n, w)
    idx = torch.arange(n, device=y.device)[:, None, None, None]
    ch = torch.arange(c, device=y.device)[None, :, None, None]
    out = padded[idx, ch, rows[:, None, :, None], cols[:, None, None, :]].reshape(*lead, c, h, w).to(x.dtype)
    return out.movedim(-3, -1) if channels_last else out


class RandomShift(Randomizer):
    """`random_shift` as a robomimic randomizer (training only) for frames the network reads
    directly (rgb: (.., 3, H, W), the ResNet baseline). Toto frames are shifted by the training
    batches before they are encoded (their network inputs are features)."""

    def __init__(self, input_shape: list[int], pad: int = 4) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pad = int(pad)

    def output_shape_in(self, input_shape: Any = None) -> list[int]:
        return list(input_shape if input_shape is not None else self.input_shape)

    def output_shape_out(self, input_shape: Any = None) -> list[int]:
        return list(input_shape)

    def _forward_in(self, inputs: torch.Tensor) -> torch.Tensor:
        return random_shift(inputs, self.pad, channels_last=self.input_shape[-1] == 3)

    def _forward_out(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def _visualize(self, pre_random_input: Any, randomized_input: Any, num_samples_to_visualize: int = 2) -> None:
        pass
