"""Typed configs of behaviour cloning (hydra groups `policy/`, `encoder/`, and `obs`/`train` nodes).

`BCConfig` (algorithm + encoder + observations) is what a checkpoint stores and rebuilds the
network from; `TrainConfig` is how it was trained (not needed to run it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALGOS = ("bc", "bc_rnn", "bc_transformer")
ENCODERS = ("toto", "toto_random", "resnet18", "none", "oracle")


@dataclass
class RNNConfig:
    """bc_rnn: LSTM over windows of `horizon` steps (robomimic's BC-RNN)."""

    horizon: int = 10  # training sequence length; the hidden state is reset every `horizon` steps in rollouts
    hidden_dim: int = 256
    num_layers: int = 2


@dataclass
class TransformerConfig:
    """bc_transformer: GPT over the last `context_length` observations (robomimic's BC-Transformer)."""

    context_length: int = 5
    embed_dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.1


@dataclass
class AlgoConfig:
    """conf/policy/*.yaml: which robomimic algorithm and its size/optimizer."""

    name: str = "bc"  # bc | bc_rnn | bc_transformer
    hidden_dims: list[int] = field(default_factory=lambda: [256, 256])  # actor MLP
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_decay_epochs: list[int] = field(default_factory=list)  # multiply lr by 0.1 at these epochs
    chunk: int = 1  # bc: predict this many future actions per observation (1 = one step)
    ensemble_coeff: float = 0.01  # chunk > 1: ACT temporal ensembling weight exp(-m * i), i = 0 the oldest prediction
    rnn: RNNConfig = field(default_factory=RNNConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)

    def __post_init__(self) -> None:
        if self.name not in ALGOS:
            raise ValueError(f"policy.name must be one of {ALGOS}, got {self.name!r}")
        if self.chunk < 1:
            raise ValueError(f"policy.chunk must be >= 1, got {self.chunk}")
        if self.chunk > 1 and self.name != "bc":
            raise ValueError(f"action chunking is implemented for policy=bc, not {self.name}")


@dataclass
class EncoderConfig:
    """conf/encoder/*.yaml (policy side): how camera images (or privileged state) become features.

    toto: the frozen artifact (`artifact`; null = the packaged default) truncated at `layer`, a
    trainable pooling head per camera; toto_random: the same architecture with random frozen
    weights (`seed`); resnet18: robomimic's VisualCore (ResNet-18 + spatial softmax) trained from
    scratch; none: proprioception only; oracle: the privileged cube pose instead of images (sim only).
    """

    kind: str = "toto"
    artifact: str | None = None
    device: str = "auto"  # auto = cuda when available, else cpu
    amp: bool = True  # bf16 autocast of the frozen trunk on cuda
    layer: int | None = None  # toto: 0 (token embedding) .. the artifact's exported layer (None)
    pooling: str = "attention"  # attention | avg | grid (trainable, one head per camera; grid = a conv net
    # over the token grid read out by `keypoints` spatial-softmax maps, instead of the separate keypoints)
    pool_heads: int = 4
    feature_dim: int = 64  # pooled features per camera handed to the policy network
    keypoints: int = 16  # toto: spatial-softmax keypoints per frame over the token grid (0 = pooling only)
    seed: int = 0  # toto_random: weight seed
    privileged: list[str] = field(default_factory=list)  # oracle: store extras read instead of images
    shift: int = 0  # random-shift augmentation in pixels (0 = off); disables the feature cache
    cache: bool = True  # frozen encoders: cache features beside the dataset

    def __post_init__(self) -> None:
        if self.kind not in ENCODERS:
            raise ValueError(f"encoder.kind must be one of {ENCODERS}, got {self.kind!r}")
        if self.pooling not in ("attention", "avg", "grid"):
            raise ValueError(f"encoder.pooling must be attention, avg or grid, got {self.pooling!r}")
        if self.pooling == "grid" and self.keypoints < 1:
            raise ValueError("encoder.pooling=grid reads its conv net out with keypoints: set encoder.keypoints >= 1")
        if self.kind == "oracle" and not self.privileged:
            raise ValueError("encoder=oracle needs encoder.privileged (e.g. [cube_pos, cube_quat])")

    @property
    def uses_images(self) -> bool:
        return self.kind in ("toto", "toto_random", "resnet18")

    @property
    def frozen(self) -> bool:
        return self.kind in ("toto", "toto_random")

    @property
    def cached(self) -> bool:
        """Training reads this encoder's features from the feature cache (frozen, cache on, no augmentation)."""
        return self.frozen and self.cache and not self.shift


@dataclass
class ObsConfig:
    """Which observations the policy reads (keys of the Franka spec, `toto_robot.spec`)."""

    cameras: list[str] = field(default_factory=lambda: ["agentview_image", "wrist_image"])
    proprio: list[str] = field(default_factory=lambda: ["eef_pos", "eef_quat", "gripper_width"])
    history: int = 1  # frames per camera fed to the encoder as one causal sequence (toto)


@dataclass
class BCConfig:
    """What a BC checkpoint needs to rebuild its network."""

    algo: AlgoConfig = field(default_factory=AlgoConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    obs: ObsConfig = field(default_factory=ObsConfig)

    @property
    def camera_keys(self) -> list[str]:
        return list(self.obs.cameras) if self.encoder.uses_images else []

    @property
    def low_dim_keys(self) -> list[str]:
        return [*self.obs.proprio, *self.encoder.privileged]


@dataclass
class TrainConfig:
    """The `train` node: optimisation, checkpoints and rollout evaluation during training."""

    epochs: int = 100
    batch_size: int = 64
    seed: int = 0
    eval_every: int = 0  # epochs between rollout evaluations (0 = only the final job evaluation)
    eval_episodes: int = 10  # on validation seeds (disjoint from demos and from the final held-out seeds)
    checkpoint_every: int = 1  # epochs between resumable training states
    num_threads: int = 1  # torch intra-op threads (0 = torch's default); see conf/train_policy.yaml
