"""The scripted expert as a policy entry: the upper bound BC policies are compared against."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toto_robot.episode_store import EpisodeStore
from toto_robot.policy import Policy


def build_scripted_expert(cfg: dict[str, Any], demos: EpisodeStore, out_dir: Path) -> Callable[[Any], Policy]:
    """No training: the expert reads the simulator's cube pose (privileged), so this is a factory."""
    from envs.expert import ScriptedExpert

    noise = float(cfg.get("noise", 0.0))
    return lambda env: ScriptedExpert(env, noise=noise, seed=0)
