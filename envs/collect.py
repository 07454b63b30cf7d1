"""Parallel demonstration / sim-video collection into one EpisodeStore.

Worker processes each own an env and run whole episodes for the seeds the main process hands
out; the main process is the single store writer. Expert collection stores successes until
`n_episodes` are stored (failures are counted, not stored). Sim videos for pre-training use
`motion: random` (or `mixed`) with `keep_failures: true`, which stores every episode.
An existing store is resumed (its spec must match); Ctrl-C leaves it valid.
"""

from __future__ import annotations

import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from envs.config import CubePickConfig
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS
from toto_robot.action import ATTR_KEY, check_convention
from toto_robot.config import to_dict
from toto_robot.provenance import code_version
from toto_robot.spec import ArraySpec

MOTIONS = ("expert", "random", "mixed")
SEED_SPLITS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}
SEED_KEY = "episode_seed"  # per-step extra array: the env seed of the episode (provenance, resume)
# Per-step extra arrays next to the observations: provenance and privileged state for probes.
# cube_quat (w-x-y-z) carries the cube's yaw for the oracle policy and the encoder probes;
# cube_size (edge length [m]) lets a replay on franky-sim place the same cube as the episode.
EXTRAS = {SEED_KEY: ArraySpec((1,), "int64", "meta"), "cube_pos": ArraySpec((3,), "float32", "low_dim"),
          "cube_quat": ArraySpec((4,), "float32", "low_dim"), "cube_size": ArraySpec((1,), "float32", "low_dim")}


@dataclass
class CollectConfig:
    """What `collect_demos.py` runs (hydra: conf/collect_demos.yaml + the env group)."""

    env: CubePickConfig = field(default_factory=CubePickConfig)
    n_episodes: int = 100  # episodes to have in the store when done
    out: str = "data/cube_pick_demos.zarr"
    workers: int = 2
    seed_offset: int = 0  # first seed used, counted from the start of the seed split
    seed_split: str = "train"  # "train" (envs.seeds.TRAIN_SEEDS) | "eval" (EVAL_SEEDS: held-out data for probes)
    expert_noise: float = 0.05  # std of the expert's action noise
    # Stored action of expert steps: "executed" = the noisy action sent to the env (a replay retraces
    # the episode) | "expert" = the expert's noise-free action at that state (DART: the noise widens
    # the states visited, the labels stay clean, so a policy learns to correct a drift).
    label: str = "executed"
    motion: str = "expert"  # "expert", "random" (smooth random actions) or "mixed" (alternating)
    keep_failures: bool = False  # store failed episodes too (sim videos for pre-training)
    max_attempts: int = 0  # stop after this many episodes run; 0 = 3 x n_episodes + 20
    video_path: str | None = None  # mp4 of the first stored episodes (all cameras side by side)
    video_episodes: int = 3
    progress: bool = True


class RandomMotion:
    """Smooth random actions (low-pass filtered noise) with occasional gripper toggles; a Policy."""

    done = False

    def __init__(self, env: Any, seed: int | None = None, smoothing: float = 0.8) -> None:
        self.shape_meta = env.unwrapped.shape_meta
        self.rng = np.random.default_rng(seed)
        self.smoothing = smoothing
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._action = np.zeros(7)
        self._gripper = -1.0

    def select_action(self, obs: Any) -> np.ndarray:
        self._action = self.smoothing * self._action + (1 - self.smoothing) * self.rng.normal(0, 1.0, 7)
        if self.rng.random() < 0.1:
            self._gripper = -self._gripper
        action = np.clip(self._action * 2.0, -1, 1)
        action[3:6] *= 0.5
        action[6] = self._gripper
        return action.astype(np.float32)


def _run_episode(env: Any, policy: Any, seed: int, label: str = "executed") -> tuple[dict[str, np.ndarray], bool, int]:
    """One episode: obs_t and the action taken at obs_t (label="expert": the policy's
    `clean_action` instead, see CollectConfig.label), for every step until done.

    Success = `is_success` at any step (it stays true while the cube is held).
    """
    obs, _ = env.reset(seed=seed)
    policy.reset(seed=seed)
    keys = list(env.shape_meta.obs)
    rows: dict[str, list[np.ndarray]] = {k: [] for k in [*keys, "action", "cube_pos", "cube_quat", "cube_size"]}
    done = success = False
    while not done:
        action = policy.select_action(obs)
        for k in keys:
            rows[k].append(obs[k])
        rows["action"].append(policy.clean_action if label == "expert" else action)
        cube_pos, cube_quat, half = env.cube_pose()
        rows["cube_pos"].append(cube_pos.astype(np.float32))
        rows["cube_quat"].append(cube_quat.astype(np.float32))
        rows["cube_size"].append(np.array([2.0 * half], dtype=np.float32))
        obs, _, terminated, truncated, info = env.step(action)
        done, success = terminated or truncated, success or bool(info["is_success"])
    episode = {k: np.stack(v) for k, v in rows.items()}
    n = len(episode["action"])
    episode[SEED_KEY] = np.full((n, 1), seed, dtype=np.int64)
    return episode, success, n


def _exit_with_parent() -> None:
    """End this worker as soon as the collecting process dies, even by kill -9 (a daemon process
    is only stopped by a parent that exits normally): a thread waits on the parent's sentinel."""
    parent = mp.parent_process()

    def watch() -> None:
        mp.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _worker(cfg: CollectConfig, tasks: mp.Queue, results: mp.Queue) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    _exit_with_parent()
    from envs.cube_pick import CubePickEnv
    from envs.expert import ScriptedExpert

    env = CubePickEnv(cfg.env)
    expert = ScriptedExpert(env, noise=cfg.expert_noise)
    random_motion = RandomMotion(env)
    while True:
        seed = tasks.get()
        use_random = cfg.motion == "random" or (cfg.motion == "mixed" and seed % 2 == 1)
        try:
            label = "executed" if use_random else cfg.label
            results.put((seed, *_run_episode(env, random_motion if use_random else expert, seed, label)))
        except Exception as e:  # report, do not hang the main process
            results.put((seed, e, False, 0))


def collect_demos(cfg: CollectConfig) -> dict[str, Any]:
    """Collect into `cfg.out` until it holds `cfg.n_episodes` episodes; returns a summary dict."""
    from envs.cube_pick import CubePickEnv, cube_pick_shape_meta
    from envs.rollout import side_by_side, write_video
    from toto_robot.episode_store import EpisodeStore

    if cfg.motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS}, got {cfg.motion!r}")
    if cfg.motion != "expert" and not cfg.keep_failures:
        raise ValueError(f"motion={cfg.motion!r} rarely succeeds: set keep_failures=true to store its episodes")
    if cfg.label not in ("executed", "expert"):
        raise ValueError(f"label must be 'executed' or 'expert', got {cfg.label!r}")
    if cfg.n_episodes < 1 or cfg.workers < 1:
        raise ValueError(f"need n_episodes >= 1 and workers >= 1, got {cfg.n_episodes}, {cfg.workers}")

    shape_meta = cube_pick_shape_meta(list(cfg.env.cameras), cfg.env.render_size)
    nominal = CubePickEnv({**to_dict(cfg.env), "randomization": {"enabled": False}})
    nominal.reset(seed=0)
    cameras = {c: {k: np.asarray(v).tolist() for k, v in p.items()} for c, p in nominal.camera_params().items()}
    nominal.close()
    attrs = {
        ATTR_KEY: cfg.env.action.to_dict(),  # what the actions mean; readers refuse another convention
        "control_hz": cfg.env.control_hz,
        "camera_params": cameras,  # nominal poses; each episode jitters them (see env_config.randomization)
        "env_id": "toto/CubePick-v0",
        "env_config": to_dict(cfg.env),
        "collector": {"motion": cfg.motion, "expert_noise": cfg.expert_noise, "label": cfg.label,
                      "keep_failures": cfg.keep_failures},
        "code_version": code_version(),
    }
    store = EpisodeStore.open_or_create(cfg.out, shape_meta, extras=EXTRAS, attrs=attrs)
    check_convention(store.attrs.get(ATTR_KEY), cfg.env.action, f"{cfg.out} (resuming it)")
    missing = [k for k in EXTRAS if store.data_spec.get(k) != EXTRAS[k]]
    if missing:
        raise ValueError(f"{cfg.out} lacks the collector's extra arrays {missing}: not written by collect_demos, cannot resume it")
    stored_before = store.n_episodes
    if cfg.seed_split not in SEED_SPLITS:
        raise ValueError(f"seed_split must be one of {sorted(SEED_SPLITS)}, got {cfg.seed_split!r}")
    seeds = SEED_SPLITS[cfg.seed_split]
    next_seed = seeds.start + cfg.seed_offset
    if store.n_steps:
        next_seed = max(next_seed, int(store.array(SEED_KEY)[: store.n_steps].max()) + 1)
    max_attempts = cfg.max_attempts or 3 * cfg.n_episodes + 20

    ctx = mp.get_context("spawn")  # no forked GL/zarr state in workers
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(cfg, tasks, results), daemon=True) for _ in range(cfg.workers)]
    for p in procs:
        p.start()
    attempts = successes = steps = in_flight = 0
    # Results are handled in seed order whatever order the workers finish in, so the same command
    # stores the same episodes; `pending` holds those that arrived before a lower seed's.
    pending: dict[int, tuple[Any, bool, int]] = {}
    next_result = next_seed
    video_frames: list[np.ndarray] = []
    interrupted = False
    start = time.perf_counter()
    bar = tqdm(total=cfg.n_episodes, initial=stored_before, desc="collect", disable=not cfg.progress)
    try:
        while store.n_episodes < cfg.n_episodes:
            # Keep each worker busy with one queued seed, but never run (or hold) more than needed.
            needed = cfg.n_episodes - store.n_episodes
            while (in_flight + len(pending) < min(cfg.workers * 2, needed + cfg.workers)
                   and attempts + in_flight + len(pending) < max_attempts):
                if next_seed >= seeds.stop:
                    raise RuntimeError(f"ran out of {cfg.seed_split} seeds")
                tasks.put(next_seed)
                next_seed, in_flight = next_seed + 1, in_flight + 1
            if in_flight == 0:
                break
            try:
                seed, *result = results.get(timeout=5.0)
            except queue.Empty:
                if not all(p.is_alive() for p in procs):
                    raise RuntimeError("a collection worker died") from None
                continue
            in_flight -= 1
            pending[seed] = tuple(result)
            while next_result in pending and store.n_episodes < cfg.n_episodes:
                seed, (episode, success, n) = next_result, pending.pop(next_result)
                next_result += 1
                if isinstance(episode, Exception):
                    raise RuntimeError(f"episode with seed {seed} failed in a worker: {episode!r}") from episode
                attempts, successes, steps = attempts + 1, successes + success, steps + n
                if success or cfg.keep_failures:
                    store.add_episode(episode)
                    bar.update(1)
                    if cfg.video_path and shape_meta.rgb_keys and len(video_frames) < cfg.video_episodes * cfg.env.episode_len:
                        video_frames.extend(side_by_side({k: episode[k][t] for k in shape_meta.rgb_keys}, shape_meta.rgb_keys)
                                            for t in range(n))
                bar.set_postfix(attempts=attempts, success=f"{successes / attempts:.0%}")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        wall = time.perf_counter() - start
        bar.close()
        # Workers may be mid-episode on seeds no longer needed: stop them rather than wait.
        for p in procs:
            p.terminate()
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    if cfg.video_path and video_frames:
        write_video(cfg.video_path, video_frames, fps=cfg.env.control_hz)
    summary = {
        "out": str(cfg.out),
        "n_episodes": store.n_episodes,
        "n_new": store.n_episodes - stored_before,
        "attempts": attempts,
        "successes": successes,
        "failures": attempts - successes,
        "success_rate": successes / attempts if attempts else 0.0,
        "env_steps": steps,
        "wall_s": wall,
        "frames_per_s": steps / wall if wall > 0 else 0.0,
        "interrupted": interrupted,
        "complete": store.n_episodes >= cfg.n_episodes,
    }
    return summary

