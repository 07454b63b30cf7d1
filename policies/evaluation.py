"""Roll policies out in the cube_pick sim: one env per worker process (one per core), any checkpoint
or the scripted expert, deterministic given the seeds.

Each episode depends only on its seed: the env is reset with it, the policy is reset, torch runs
single-threaded in every worker, so which worker runs a seed does not change its outcome.
Workers keep their env and the last policy they loaded between calls, so the periodic rollouts
of a training run do not pay process start-up each time. Results can be appended to a JSON-lines
file as they arrive; a rerun skips the seeds already there (for the same checkpoint content).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import queue
import signal
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from toto_robot.config import to_dict

EXPERT = "expert"  # the policy reference of the scripted expert (privileged cube pose)


class RolloutError(RuntimeError):
    """An episode failed in a worker (the policy or env raised), or a worker died."""


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate (sound at 0% and 100%, unlike p +- z*se)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EvalResult:
    """Per-seed outcomes (sorted by seed) and their summary."""

    episodes: list[dict[str, Any]]
    wall_s: float
    videos: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.episodes)

    @property
    def successes(self) -> int:
        return sum(bool(e["success"]) for e in self.episodes)

    def summary(self) -> dict[str, Any]:
        lo, hi = wilson_interval(self.successes, self.n)
        steps = [e["steps"] for e in self.episodes]
        return {
            "n_episodes": self.n,
            "successes": self.successes,
            "success_rate": self.successes / self.n if self.n else 0.0,
            "success_ci95": [lo, hi],
            "mean_episode_length": float(np.mean(steps)) if steps else 0.0,
            "mean_success_length": float(np.mean([e["steps"] for e in self.episodes if e["success"]] or [0])),
            "control_steps_per_s": sum(steps) / self.wall_s if self.wall_s > 0 else 0.0,
            "wall_s": self.wall_s,
        }


def checkpoint_digest(ref: str) -> str:
    """Identity of what a reference runs: sha256 of the checkpoint file, or the expert's name."""
    if ref == EXPERT:
        return EXPERT
    return hashlib.sha256(Path(ref).read_bytes()).hexdigest()


class RolloutPool:
    """`workers` processes, each with its own env built from `env_cfg` (a CubePickConfig or dict)."""

    def __init__(self, env_cfg: Any, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"need at least one rollout worker, got {workers}")
        self.env_cfg = to_dict(env_cfg) if not isinstance(env_cfg, dict) else dict(env_cfg)
        self.workers = workers
        self._procs: list[Any] = []  # started on the first episode to run (a resumed job may need none)
        self._pending = False  # a submitted evaluation not yet collected

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # no forked GL / torch thread state in workers
        self._tasks, self._results = ctx.Queue(), ctx.Queue()
        self._procs = [ctx.Process(target=_worker, args=(self.env_cfg, self._tasks, self._results), daemon=True)
                       for _ in range(self.workers)]
        for p in self._procs:
            p.start()

    def close(self) -> None:
        for _ in self._procs:
            self._tasks.put(None)
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()

    def __enter__(self) -> RolloutPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def evaluate(self, ref: str, seeds: Iterable[int], video_dir: str | Path | None = None, n_videos: int = 2,
                 results_path: str | Path | None = None, progress: bool = True, desc: str = "evaluate") -> EvalResult:
        """Run `ref` (a checkpoint path or EXPERT) once per seed. With video_dir: mp4s of up to
        n_videos successes and n_videos failures (lowest seeds). With results_path: per-seed lines
        appended as they finish, and seeds already there for the same checkpoint content skipped."""
        return self.submit(ref, seeds, video_dir, n_videos, results_path, progress, desc)()

    def submit(self, ref: str, seeds: Iterable[int], video_dir: str | Path | None = None, n_videos: int = 2,
               results_path: str | Path | None = None, progress: bool = True,
               desc: str = "evaluate") -> Callable[[], EvalResult]:
        """`evaluate` without waiting: the workers start on the episodes now, and the returned
        function waits for them and gives the EvalResult (call it before the next submit)."""
        if self._pending:
            raise RuntimeError("RolloutPool: wait for the submitted evaluation before submitting another")
        seeds = [int(s) for s in seeds]
        digest = checkpoint_digest(ref)
        done = _read_results(results_path, digest) if results_path else {}
        todo = [s for s in seeds if s not in done]
        record = video_dir is not None and n_videos > 0 and bool(todo)
        start = time.perf_counter()
        run_id = f"{digest[:16]}-{time.monotonic_ns()}"  # workers reset their video quota per run
        if todo and not self._procs:
            self._start()
        for seed in todo:
            self._tasks.put((ref, digest, seed, record, n_videos, run_id))
        self._pending = bool(todo)
        return lambda: self._collect(seeds, todo, done, digest, start, record, video_dir, n_videos, results_path, progress, desc)

    def _collect(self, seeds: list[int], todo: list[int], done: dict[int, dict[str, Any]], digest: str, start: float,
                 record: bool, video_dir: str | Path | None, n_videos: int, results_path: str | Path | None,
                 progress: bool, desc: str) -> EvalResult:
        frames: dict[int, tuple[bool, list[np.ndarray]]] = {}
        bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=desc, disable=not progress)
        pending = set(todo)
        try:
            while pending:
                try:
                    msg = self._results.get(timeout=5.0)
                except queue.Empty:
                    if not all(p.is_alive() for p in self._procs):
                        raise RolloutError("a rollout worker died") from None
                    continue
                if msg[0] == "error":
                    raise RolloutError(f"episode with seed {msg[1]} failed in a worker:\n{msg[2]}")
                _, episode, video = msg
                pending.discard(episode["seed"])
                done[episode["seed"]] = episode
                if video is not None:
                    frames[episode["seed"]] = (episode["success"], video)
                if results_path:
                    with open(results_path, "a") as f:
                        f.write(json.dumps({**episode, "checkpoint": digest}) + "\n")
                bar.update(1)
                bar.set_postfix(success=f"{np.mean([done[s]['success'] for s in done if s in seeds]):.0%}")
        except BaseException:
            self._drain(pending)
            raise
        finally:
            self._pending = False
            bar.close()
        wall = time.perf_counter() - start
        videos = _write_videos(frames, Path(video_dir), n_videos, self.env_cfg.get("control_hz", 10.0)) if record else []
        return EvalResult([done[s] for s in sorted(seeds)], wall, videos)

    def _drain(self, pending: set[int]) -> None:
        """After an error: drop queued tasks and wait (briefly) for running ones, so the pool is reusable."""
        try:
            while True:
                self._tasks.get_nowait()
        except queue.Empty:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self._results.get(timeout=0.5)
            except queue.Empty:
                break


def _read_results(path: str | Path, digest: str) -> dict[int, dict[str, Any]]:
    p = Path(path)
    if not p.exists():
        return {}
    out = {}
    for line in p.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a crash
        if rec.get("checkpoint") == digest:
            out[int(rec["seed"])] = {k: v for k, v in rec.items() if k != "checkpoint"}
    return out


def _write_videos(frames: dict[int, tuple[bool, list[np.ndarray]]], out: Path, n: int, fps: float) -> list[str]:
    from envs.rollout import write_video

    paths = []
    for want, name in ((True, "success"), (False, "failure")):
        for seed in sorted(s for s, (ok, _) in frames.items() if ok == want)[:n]:
            path = out / f"{name}_seed{seed}.mp4"
            write_video(path, frames[seed][1], fps=fps)
            paths.append(str(path))
    return paths


def _worker(env_cfg: dict[str, Any], tasks: Any, results: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    import torch

    torch.set_num_threads(1)  # one core per worker; also makes every episode's numbers identical run to run
    from envs.cube_pick import CubePickEnv
    from envs.rollout import run_episode

    env = CubePickEnv(env_cfg)
    loaded: tuple[str, Any, list[str]] | None = None
    quota: dict[str, dict[bool, int]] = {}
    parent = mp.parent_process()
    while True:
        try:
            task = tasks.get(timeout=2.0)
        except queue.Empty:
            task = ...
        if task is None or (parent is not None and not parent.is_alive()):
            break  # closed, or the main process was killed: do not linger on its queued seeds
        if task is ...:
            continue
        ref, digest, seed, record, n_videos, run_id = task
        try:
            if loaded is None or loaded[0] != digest:
                loaded = (digest, *_load(ref, env))
            _, policy, privileged = loaded
            used = quota.setdefault(run_id, {True: 0, False: 0})
            episode, frames = run_episode(env, policy, seed, privileged, record)
            keep = record and used[episode["success"]] < n_videos
            used[episode["success"]] += keep
            results.put(("ok", episode, frames if keep else None))
        except Exception:
            results.put(("error", seed, traceback.format_exc()))


def _load(ref: str, env: Any) -> tuple[Any, list[str]]:
    """(policy, privileged keys it reads) for this env; a checkpoint that does not fit is refused."""
    if ref == EXPERT:
        from envs.expert import ScriptedExpert

        return ScriptedExpert(env, noise=0.0, seed=0), []
    from envs.collect import EXTRAS
    from envs.rollout import PRIVILEGED
    from toto_robot.policy import load_policy
    from toto_robot.spec import ShapeMeta

    base = env.unwrapped.shape_meta
    provided = ShapeMeta(obs={**base.obs, **{k: EXTRAS[k] for k in PRIVILEGED}}, action=base.action)
    policy = load_policy(ref, provided=provided, convention=env.unwrapped.action_convention,
                         what=f"the cube_pick env (cameras {base.rgb_keys}, {env.unwrapped.cfg.render_size} px)",
                         device="cpu")
    return policy, [k for k in PRIVILEGED if k in policy.shape_meta.obs]
