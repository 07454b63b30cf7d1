"""Run any Policy in the cube_pick sim: one episode (`run_episode`), or a list of seeds in this
process (`evaluate`); write mp4s.

`policies.evaluation` runs `run_episode` in one worker per core for BC evaluation. Evaluation
should use `envs.seeds.eval_seeds(n)` (disjoint from the seeds demonstrations were collected on).
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
PRIVILEGED = ("cube_pos", "cube_quat")  # store extras (envs.collect.EXTRAS) a sim policy may read: the oracle


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


def run_episode(env: gym.Env, policy: Policy, seed: int, privileged: Iterable[str] = (), record: bool = False
                ) -> tuple[dict[str, Any], list[np.ndarray] | None]:
    """One episode from `env.reset(seed)`; success = `is_success` at any step.

    privileged: store extras the policy reads besides the env's observation (`cube_pos`,
    `cube_quat`: the oracle), filled from the simulator's cube pose each step. record: also return
    the frames (cameras side by side, or the agentview render without cameras).
    Returns ({seed, success, steps, return, wall_s}, frames or None).
    """
    base = env.unwrapped
    rgb_keys = base.shape_meta.rgb_keys
    extra = list(privileged)
    unknown = [k for k in extra if k not in PRIVILEGED]
    if unknown:
        raise ValueError(f"no simulator source for {unknown}; privileged keys: {PRIVILEGED}")
    obs, info = env.reset(seed=int(seed))
    policy.reset()
    frames: list[np.ndarray] | None = [] if record else None
    done, success, steps, ret = False, False, 0, 0.0
    t0 = time.perf_counter()
    while not done:
        if frames is not None:
            frames.append(side_by_side(obs, rgb_keys) if rgb_keys else base.render())
        if extra:
            pos, quat, _ = base.cube_pose()
            obs = {**obs, "cube_pos": pos.astype(np.float32), "cube_quat": quat.astype(np.float32)}
        obs, reward, terminated, truncated, info = env.step(policy.select_action(obs))
        steps, ret, done = steps + 1, ret + float(reward), terminated or truncated
        success = success or bool(info["is_success"])
    if frames is not None:
        frames.append(side_by_side(obs, rgb_keys) if rgb_keys else base.render())
    return {"seed": int(seed), "success": success, "steps": steps, "return": ret, "wall_s": time.perf_counter() - t0}, frames


def evaluate(
    policy: PolicyOrFactory,
    env_cfg_or_env: gym.Env | CubePickConfig | dict | Any,
    seeds: Iterable[int],
    video_path: str | Path | None = None,
    progress: bool = True,
    video_episodes: int = 3,
) -> dict[str, Any]:
    """Roll out `policy` once per seed in this process (`policies.evaluation.RolloutPool` runs
    seeds on one env per core).

    `policy` is a Policy or a factory `env -> Policy` (e.g. `lambda env: ScriptedExpert(env)`
    for policies that read privileged state). Returns success_rate, n_episodes, mean_steps,
    episodes (per-episode seed/success/steps/return), frames_per_s (control steps/s incl.
    rendering and policy time) and wall_s.
    """
    env, owned = make_env(env_cfg_or_env)
    if not isinstance(policy, Policy):
        policy = policy(env)
    episodes, frames = [], []
    start = time.perf_counter()
    try:
        for i, seed in enumerate(tqdm(list(seeds), desc="evaluate", disable=not progress)):
            episode, video = run_episode(env, policy, seed, record=video_path is not None and i < video_episodes)
            episodes.append({k: episode[k] for k in ("seed", "success", "steps", "return")})
            frames.extend(video or [])
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
        "frames_per_s": sum(e["steps"] for e in episodes) / wall if wall > 0 else 0.0,
        "wall_s": wall,
    }
