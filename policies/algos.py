"""robomimic 0.3.0 algorithms built from a `BCConfig`: BC (MLP), BC-RNN, BC-Transformer, and BC
with action chunks (`BCChunk`, a subclass of robomimic's BC, not a fork).

robomimic keeps the observation-key -> modality mapping in module globals, read when networks are
built and when `postprocess_batch_for_training` converts a batch; `build_algo` sets it for the
policy being built (one policy trains at a time in a process; inference does not read it).
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

import torch
from robomimic.algo.bc import BC
from torch import nn

import policies.encoders  # noqa: F401  (registers TotoCore, RandomShift and the toto modality with robomimic)
from policies.config import BCConfig
from policies.encoders import TOTO_MODALITY, frozen_encoder
from toto_robot.spec import ShapeMeta


def modalities(cfg: BCConfig) -> dict[str, list[str]]:
    """robomimic modality -> observation keys: low_dim, and the cameras as `toto` or `rgb`."""
    cams = cfg.camera_keys
    return {"low_dim": cfg.low_dim_keys, "rgb": cams if cfg.encoder.kind == "resnet18" else [],
            TOTO_MODALITY: cams if cfg.encoder.frozen else []}


def obs_key_shapes(cfg: BCConfig, shape_meta: ShapeMeta) -> OrderedDict[str, list[int]]:
    """Per-step shapes as the network sees them: low-dim (D,), rgb (3, H, W) after robomimic's
    processing, toto (K * 256, D) token features of the frozen encoder."""
    shapes: OrderedDict[str, list[int]] = OrderedDict()
    for key in cfg.low_dim_keys:
        shapes[key] = list(shape_meta.obs[key].shape)
    for key in cfg.camera_keys:
        h, w, c = shape_meta.obs[key].shape
        if cfg.encoder.kind == "resnet18":
            shapes[key] = [c, h, w]
            continue
        e = cfg.encoder
        enc = frozen_encoder(e.artifact, "random" if e.kind == "toto_random" else "pretrained", e.seed)
        if (h, w) != (enc.image_size, enc.image_size):
            raise ValueError(f"the encoder reads {enc.image_size}x{enc.image_size} frames, the observation "
                             f"{key!r} is {h}x{w}: collect the demos with env.render_size={enc.image_size}")
        shapes[key] = list(enc.feature_shape(cfg.obs.history))
    return shapes


def robomimic_config(cfg: BCConfig) -> Any:
    """robomimic's BCConfig with our algorithm, network sizes, optimizer and encoders."""
    from robomimic.config import Config, config_factory

    rc = config_factory("bc")
    a, e = cfg.algo, cfg.encoder
    with rc.unlocked(), rc.values_unlocked():
        policy_optim = rc.algo.optim_params.policy
        policy_optim.learning_rate.initial = a.lr
        policy_optim.learning_rate.epoch_schedule = list(a.lr_decay_epochs)
        policy_optim.regularization.L2 = a.weight_decay
        rc.algo.actor_layer_dims = list(a.hidden_dims)
        rc.algo.rnn.enabled = a.name == "bc_rnn"
        rc.algo.rnn.horizon = a.rnn.horizon
        rc.algo.rnn.hidden_dim = a.rnn.hidden_dim
        rc.algo.rnn.num_layers = a.rnn.num_layers
        t = rc.algo.transformer
        t.enabled = a.name == "bc_transformer"
        t.context_length = a.transformer.context_length
        t.embed_dim = a.transformer.embed_dim
        t.num_layers = a.transformer.num_layers
        t.num_heads = a.transformer.num_heads
        t.emb_dropout = t.attn_dropout = t.block_output_dropout = a.transformer.dropout
        if a.name == "bc_transformer":
            rc.train.frame_stack = a.transformer.context_length
        mods = modalities(cfg)
        rc.observation.modalities.obs.low_dim = mods["low_dim"]
        rc.observation.modalities.obs.rgb = mods["rgb"]
        rc.observation.modalities.obs[TOTO_MODALITY] = mods[TOTO_MODALITY]
        shift = {"obs_randomizer_class": "RandomShift", "obs_randomizer_kwargs": {"pad": e.shift}} if e.shift else {}
        rgb = rc.observation.encoder.rgb
        rgb.core_kwargs = Config({"feature_dimension": e.feature_dim, "backbone_class": "ResNet18Conv",
                           "backbone_kwargs": {"pretrained": False, "input_coord_conv": False},
                           "pool_class": "SpatialSoftmax",
                           "pool_kwargs": {"num_kp": 32, "learnable_temperature": False, "temperature": 1.0,
                                           "noise_std": 0.0, "output_variance": False}})
        rgb.obs_randomizer_class = shift.get("obs_randomizer_class")
        rgb.obs_randomizer_kwargs = Config(shift.get("obs_randomizer_kwargs", {}))
        rc.observation.encoder[TOTO_MODALITY] = Config({
            "core_class": "TotoCore",
            "core_kwargs": {"artifact": e.artifact, "weights": "random" if e.kind == "toto_random" else "pretrained",
                            "seed": e.seed, "layer": e.layer, "pooling": e.pooling, "pool_heads": e.pool_heads,
                            "feature_dimension": e.feature_dim, "keypoints": e.keypoints},
            "obs_randomizer_class": None,  # toto frames are shifted before encoding (policies.dataset)
            "obs_randomizer_kwargs": {},
        })
    return rc


def window(cfg: BCConfig) -> tuple[int, int]:
    """(before, after): steps of observation context and of future actions a training sample spans."""
    a = cfg.algo
    if a.name == "bc_transformer":
        return a.transformer.context_length - 1, 0
    if a.name == "bc_rnn":
        return 0, a.rnn.horizon - 1
    return 0, a.chunk - 1


def build_algo(cfg: BCConfig, shape_meta: ShapeMeta, device: torch.device) -> Any:
    """The robomimic algorithm object (nets + optimizers) for `cfg` over `shape_meta`'s keys."""
    import robomimic.utils.obs_utils as ObsUtils
    from robomimic.algo import algo_factory

    rc = robomimic_config(cfg)
    ObsUtils.initialize_obs_modality_mapping_from_dict(modalities(cfg))
    ObsUtils.initialize_default_obs_encoder(rc.observation.encoder)
    shapes = obs_key_shapes(cfg, shape_meta)
    ac_dim = int(shape_meta.action.shape[0])
    with warnings.catch_warnings():
        # robomimic's ResNet18Conv asks torchvision for `pretrained=False`, deprecated wording for no weights
        warnings.filterwarnings("ignore", message="Arguments other than a weight enum", category=UserWarning)
        warnings.filterwarnings("ignore", message="The parameter 'pretrained' is deprecated", category=UserWarning)
        if cfg.algo.chunk > 1:
            return BCChunk(algo_config=rc.algo, obs_config=rc.observation, global_config=rc, obs_key_shapes=shapes,
                           ac_dim=ac_dim, device=device, chunk=cfg.algo.chunk)
        return algo_factory("bc", rc, shapes, ac_dim, device)


class BCChunk(BC):
    """BC predicting the next `chunk` actions from one observation (ACT's action chunking, with an
    MLP head instead of its CVAE transformer). Trained on (B, chunk, A) action windows; get_action
    returns (B, chunk, A) and the policy averages the overlapping chunks (temporal ensembling)."""

    def __init__(self, *args: Any, chunk: int, **kwargs: Any) -> None:
        self.chunk = chunk  # read by _create_networks, which the base __init__ calls
        super().__init__(*args, **kwargs)

    def _create_networks(self) -> None:
        import robomimic.models.policy_nets as PolicyNets
        import robomimic.utils.obs_utils as ObsUtils

        self.nets = nn.ModuleDict()
        self.nets["policy"] = PolicyNets.ActorNetwork(
            obs_shapes=self.obs_shapes, goal_shapes=self.goal_shapes, ac_dim=self.ac_dim * self.chunk,
            mlp_layer_dims=self.algo_config.actor_layer_dims,
            encoder_kwargs=ObsUtils.obs_encoder_kwargs_from_config(self.obs_config.encoder),
        )
        self.nets = self.nets.float().to(self.device)

    def process_batch_for_training(self, batch: dict[str, Any]) -> dict[str, Any]:
        import robomimic.utils.tensor_utils as TensorUtils

        actions = batch["actions"][:, : self.chunk]
        if actions.shape[1] != self.chunk:
            raise ValueError(f"action windows of {actions.shape[1]} steps, the chunk is {self.chunk}")
        out = {"obs": {k: v[:, 0] for k, v in batch["obs"].items()}, "goal_obs": batch.get("goal_obs"),
               "actions": actions.reshape(actions.shape[0], -1)}
        return TensorUtils.to_float(TensorUtils.to_device(out, self.device))

    def get_action(self, obs_dict: dict[str, Any], goal_dict: Any = None) -> torch.Tensor:
        flat = super().get_action(obs_dict, goal_dict=goal_dict)
        return flat.reshape(flat.shape[0], self.chunk, self.ac_dim)
