"""Run any Policy in the cube_pick sim over a list of seeds; optionally write an mp4.

Used by the scripted-expert checks, BC evaluation and train_policy.py. Evaluation should use
`envs.seeds.eval_seeds(n)` (disjoint from the seeds demonstrations were collected on).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from tqdm import tqdm

from envs.config import CubePickConfig
from toto_robot.policy import Policy

PolicyOrFactory = Policy | Callable[[gym.Env], Policy]


def make_env(env_cfg: gym.Env | CubePickConfig | dict | Any) -> tuple[gym.Env, bool]:
    """(env, owned): an env passed in is used as is; a config (dataclass, dict, DictConfig) builds one."""
    if isinstance(env_cfg, gym.Env):
        return env_cfg, False
    from envs.cube_pick import CubePickEnv

    return CubePickEnv(env_cfg), True


def side_by_side(obs: dict[str, np.ndarray], rgb_keys: list[str]) -> np.ndarray:
    """The camera images of one observation side by side (H, W * n_cameras, 3) uint8."""
    return np.concatenate([obs[k] for k in rgb_keys], axis=1)


def write_video(path: str | Path, frames: list[np.ndarray], fps: float) -> None:
    """H.264 mp4 written to a temp file, then renamed into place."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with imageio.get_writer(tmp, fps=fps, codec="libx264", macro_block_size=1, ffmpeg_log_level="error") as writer:
        for frame in frames:
            writer.append_data(frame)
    tmp.replace(path)


def evaluate(
    policy: PolicyOrFactory,
    env_cfg_or_env: gym.Env | CubePickConfig | dict | Any,
    seeds: Iterable[int],
    video_path: str | Path | None = None,
    progress: bool = True,
    video_episodes: int = 3,
) -> dict[str, Any]:
    """Roll out `policy` once per seed.

    `policy` is a Policy or a factory `env -> Policy` (e.g. `lambda env: ScriptedExpert(env)`
    for policies that read privileged state). An episode succeeds if `is_success` is true at
    any step. Returns success_rate, n_episodes, mean_steps,
    episodes (per-episode seed/success/steps/return), frames_per_s (control steps/s incl.
    rendering and policy time) and wall_s.
    """
    env, owned = make_env(env_cfg_or_env)
    if not isinstance(policy, Policy):
        policy = policy(env)
    seeds = list(seeds)
    rgb_keys = env.unwrapped.shape_meta.rgb_keys
    episodes, frames = [], []
    steps_total, start = 0, time.perf_counter()
    try:
        for i, seed in enumerate(tqdm(seeds, desc="evaluate", disable=not progress)):
            obs, info = env.reset(seed=int(seed))
            policy.reset()
            record = video_path is not None and i < video_episodes
            done, success, steps, ret = False, False, 0, 0.0
            while not done:
                if record:
                    frames.append(side_by_side(obs, rgb_keys) if rgb_keys else env.unwrapped.render())
                obs, reward, terminated, truncated, info = env.step(policy.select_action(obs))
                steps, ret, done = steps + 1, ret + float(reward), terminated or truncated
                success = success or bool(info["is_success"])
            if record:
                frames.append(side_by_side(obs, rgb_keys) if rgb_keys else env.unwrapped.render())
            steps_total += steps
            episodes.append({"seed": int(seed), "success": success, "steps": steps, "return": ret})
    finally:
        if owned:
            env.close()
    wall = time.perf_counter() - start
    if video_path is not None and frames:
        write_video(video_path, frames, fps=env.unwrapped.cfg.control_hz)
    n = len(episodes)
    return {
        "success_rate": float(np.mean([e["success"] for e in episodes])) if n else 0.0,
        "n_episodes": n,
        "mean_steps": float(np.mean([e["steps"] for e in episodes])) if n else 0.0,
        "episodes": episodes,
        "frames_per_s": steps_total / wall if wall > 0 else 0.0,
        "wall_s": wall,
    }
