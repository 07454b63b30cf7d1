"""Observation encoders as robomimic cores: the frozen Toto encoder, and a random-shift augmentation.

robomimic finds encoder cores and randomizers by class name once their module is imported
(`EncoderCore.__init_subclass__` registers them), so import this module before building an algo.
Camera keys the Toto core reads use the `toto` modality, whose processing is the identity:
frames stay (.., H, W, 3) with values 0..255, the layout the dVAE tokenizer takes, instead of
robomimic's CHW [0, 1] `rgb` processing (which the ResNet baseline uses).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from robomimic.models.obs_core import EncoderCore, Randomizer
from robomimic.utils.obs_utils import Modality

from toto_robot.encoder import TotoEncoder, build_encoder, encoder_hash, load_encoder
from toto_robot.models.pooling import PoolingConfig, build_pooling

TOTO_MODALITY = "toto"
_ENCODERS: dict[tuple[str | None, str, int], TotoEncoder] = {}


class TotoModality(Modality):
    """Frames for the Toto core: no channel swap or scaling (the tokenizer does its own)."""

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
    """Frozen Toto encoder + trainable pooling head -> (feature_dimension,) per sample.

    Input per sample, either frames (H, W, 3) or a history (K, H, W, 3) with values 0..255
    (uint8, or float after robomimic's batch conversion), or the token features the encoder
    makes of them, (K * 256, D) - what the feature cache stores. Frames are tokenized one by one
    and the K * 256 tokens run causally through the transformer up to `layer`; no gradient ever
    reaches the encoder (it runs under no_grad and its parameters are frozen).
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
    ) -> None:
        super().__init__(input_shape=input_shape)
        shape = tuple(int(s) for s in input_shape)
        if len(shape) not in (3, 4) or shape[-1] != 3:
            raise ValueError(f"TotoCore input must be (H, W, 3) or (K, H, W, 3) frames, got {shape}")
        self.encoder = frozen_encoder(artifact, weights, seed)
        self.frame_shape = shape[-3:]
        self.history = shape[0] if len(shape) == 4 else 1
        if self.frame_shape[:2] != (self.encoder.image_size, self.encoder.image_size):
            raise ValueError(f"the encoder reads {self.encoder.image_size}x{self.encoder.image_size} frames, "
                             f"the observation is {self.frame_shape[0]}x{self.frame_shape[1]}")
        self.layer = self.encoder.layer if layer is None else int(layer)
        self.token_shape = self.encoder.feature_shape(self.history)
        self.pool = build_pooling(PoolingConfig(pooling, n_heads=pool_heads, out_dim=feature_dimension), self.encoder.feature_dim)
        self.feature_dimension = feature_dimension

    def output_shape(self, input_shape: Any = None) -> list[int]:
        return [self.feature_dimension]

    @torch.no_grad()
    def token_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, [K,] H, W, 3), 0..255 -> (B, K * 256, D) float32 features of `layer`."""
        if frames.dtype != torch.uint8:
            frames = frames.round().clamp(0, 255).to(torch.uint8)
        codes = self.encoder.tokenize(frames)  # (B, [K,] 256)
        return self.encoder.token_features(codes.reshape(codes.shape[0], -1), layer=self.layer)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if tuple(inputs.shape[1:]) == self.token_shape:
            feats = inputs.float()
        elif tuple(inputs.shape[1:]) == tuple(self.input_shape):
            feats = self.token_features(inputs)
        else:
            raise ValueError(f"TotoCore expects frames {tuple(self.input_shape)} or token features {self.token_shape} "
                             f"per sample, got {tuple(inputs.shape[1:])}")
        return self.pool(feats)

    def __repr__(self) -> str:
        return (f"TotoCore(input_shape={tuple(self.input_shape)}, layer={self.layer}, history={self.history}, "
                f"encoder={self.encoder.encoder_hash[:12]}, pool={self.pool.config})")


class RandomShift(Randomizer):
    """Random image shift (pad by replicating edges, crop back at a random offset; DrQ), training only.

    Works on frames in either layout robomimic hands over: (.., H, W, 3) (toto) or (.., 3, H, W)
    (rgb); the shape is unchanged, so it composes with any core.
    """

    def __init__(self, input_shape: list[int], pad: int = 4) -> None:
        super().__init__()
        self.input_shape = tuple(int(s) for s in input_shape)
        self.pad = int(pad)
        self.channels_last = self.input_shape[-1] == 3

    def output_shape_in(self, input_shape: Any = None) -> list[int]:
        return list(input_shape if input_shape is not None else self.input_shape)

    def output_shape_out(self, input_shape: Any = None) -> list[int]:
        return list(input_shape)

    def _forward_in(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs.movedim(-1, -3) if self.channels_last else inputs
        lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
        x = x.reshape(-1, c, h, w).float()
        n, p = x.shape[0], self.pad
        padded = torch.nn.functional.pad(x, (p, p, p, p), mode="replicate")
        dx, dy = torch.randint(0, 2 * p + 1, (2, n), device=x.device)
        rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # (n, h)
        cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None])  # (n, w)
        out = padded[torch.arange(n, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        out = out.reshape(*lead, c, h, w).to(inputs.dtype)
        return out.movedim(-3, -1) if self.channels_last else out

    def _forward_out(self, inputs: torch.Tensor) -> torch.Tensor:
        return inputs

    def _visualize(self, pre_random_input: Any, randomized_input: Any, num_samples_to_visualize: int = 2) -> None:
        pass
