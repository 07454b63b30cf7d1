"""`eval_policy.py`: any checkpoint (or the scripted expert) on held-out sim seeds, one env per core."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.config import CubePickConfig
from toto_robot.config import as_dataclass, to_dict


@dataclass
class EvalPolicyConfig:
    checkpoint: str = "???"  # a policy checkpoint, or "expert" for the scripted expert
    n_episodes: int = 50
    seed_start: int = 0  # offset into envs.seeds.EVAL_SEEDS
    workers: int = 2
    videos: int = 2  # mp4s of up to N successes and N failures
    env: CubePickConfig = field(default_factory=CubePickConfig)
    use_training_env: bool = True  # the env config recorded in the checkpoint (its demos' env) instead of `env`
    out_dir: str = "outputs/eval_policy"
    progress: bool = True


def env_for(cfg: EvalPolicyConfig) -> dict[str, Any]:
    """The env to evaluate in: the checkpoint's training env (its camera set, image size, render
    mode) unless `use_training_env` is off; a blind policy's env renders nothing."""
    from policies.evaluation import EXPERT
    from toto_robot.checkpoint import read_checkpoint

    env = to_dict(cfg.env)
    if cfg.checkpoint == EXPERT:
        return {**env, "cameras": []}
    ckpt = read_checkpoint(cfg.checkpoint, load_tensors=False)
    recorded = ckpt.training.get("env_config")
    if cfg.use_training_env and recorded:
        env = to_dict(as_dataclass(CubePickConfig, recorded))
    return env if ckpt.shape_meta.rgb_keys else {**env, "cameras": []}


def run(cfg: EvalPolicyConfig) -> dict[str, Any]:
    from envs.seeds import eval_seeds
    from policies.evaluation import RolloutPool
    from toto_robot.atomic import write_json

    out = Path(cfg.out_dir)
    seeds = eval_seeds(cfg.n_episodes, start=cfg.seed_start)
    env = env_for(cfg)
    with RolloutPool(env, cfg.workers) as pool:
        result = pool.evaluate(cfg.checkpoint, seeds, video_dir=out / "videos", n_videos=cfg.videos,
                               results_path=out / "eval.jsonl", progress=cfg.progress)
    metrics = {"checkpoint": cfg.checkpoint, **result.summary(), "per_seed": result.episodes, "videos": result.videos,
               "seeds": {"first": seeds[0], "n": len(seeds)}, "env": env, "load_avg": os.getloadavg(), "workers": cfg.workers}
    write_json(out / "metrics.json", metrics)
    return metrics
