"""toto-robot's shared floor: specs, the episode store, the policy protocol, configs, encoders.

Nothing here imports `envs`, `pretrain`, `policies` or `hardware`. Torch-dependent pieces
(`load_encoder`) are imported lazily so that reading a store does not pull in torch.
"""

from toto_robot.episode_store import EpisodeStore, EpisodeStoreError
from toto_robot.policy import Policy
from toto_robot.spec import ArraySpec, ShapeMeta, SpecError

__version__ = "0.1.0"
__all__ = ["ArraySpec", "EpisodeStore", "EpisodeStoreError", "Policy", "ShapeMeta", "SpecError", "load_encoder"]


def __getattr__(name: str):
    if name == "load_encoder":
        from toto_robot.encoder import load_encoder

        return load_encoder
    raise AttributeError(name)
