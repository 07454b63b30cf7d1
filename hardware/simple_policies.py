"""Small policies the runner is tested and benchmarked with, independent of any training code.

All implement `toto_robot.policy.Policy`, so the runner never knows which one it drives:

- `TinyTorchPolicy`: a small conv + MLP net (random or from a policy checkpoint), with an
  optional latency floor that emulates a heavier encoder (the bench uses ~25 ms);
- `ScriptedPickPolicy`: closed-loop pick of a cube at a known position (franky-sim scene);
- `ReplayPolicy`: plays back recorded actions (replay_episode.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toto_robot.action import ActionConvention
from toto_robot.checkpoint import PolicyCheckpoint
from toto_robot.config import to_dict
from toto_robot.scene import CUBE_CENTER, CUBE_HALF
from toto_robot.spec import ShapeMeta


@dataclass
class TinyTorchConfig:
    type: str = "tiny_torch"
    seed: int = 0
    width: int = 64
    action_scale: float = 0.3  # |translation action| <= this (a random net moves gently)
    rotation_scale: float = 0.3  # |rotation action| <= this
    min_latency_ms: float = 0.0  # pad each select_action to this long (emulates a heavier encoder)
    fixed_gripper: float = 0.0  # != 0: output this gripper command (e.g. -1 = keep open) instead of the net's


class _TinyNet(nn.Module):
    """Per camera: strided conv + global pool (8 features); low-dim concat; MLP -> tanh (A,)."""

    def __init__(self, shape_meta: ShapeMeta, width: int) -> None:
        super().__init__()
        self.rgb_keys, self.low_keys = shape_meta.rgb_keys, shape_meta.low_dim_keys
        self.convs = nn.ModuleDict({k: nn.Conv2d(3, 8, kernel_size=8, stride=8) for k in self.rgb_keys})
        n_low = sum(int(np.prod(shape_meta.obs[k].shape)) for k in self.low_keys)
        self.mlp = nn.Sequential(nn.Linear(8 * len(self.rgb_keys) + n_low, width), nn.ReLU(), nn.Linear(width, shape_meta.action.shape[0]))

    def forward(self, obs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = [torch.relu(self.convs[k](obs[k].permute(0, 3, 1, 2).float() / 255.0)).mean(dim=(2, 3)) for k in self.rgb_keys]
        feats += [obs[k].reshape(obs[k].shape[0], -1).float() for k in self.low_keys]
        return torch.tanh(self.mlp(torch.cat(feats, dim=1)))


class TinyTorchPolicy:
    """obs dict (unbatched) -> (A,) float32 in [-1, 1]; CPU, a few ms per call."""

    Config = TinyTorchConfig
    done = False  # runs until the step limit

    def __init__(self, config: TinyTorchConfig, shape_meta: ShapeMeta) -> None:
        self.config, self.shape_meta = config, shape_meta
        torch.manual_seed(config.seed)
        self.net = _TinyNet(shape_meta, config.width).eval()

    def reset(self) -> None:
        pass  # stateless

    @torch.inference_mode()
    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        t0 = time.monotonic()
        batch = {k: torch.from_numpy(np.array(obs[k]))[None] for k in self.shape_meta.obs}  # copy: obs may be read-only
        a = self.net(batch)[0].numpy().astype(np.float32)
        a[:3] *= self.config.action_scale
        a[3:6] *= self.config.rotation_scale
        if self.config.fixed_gripper:
            a[6] = self.config.fixed_gripper
        wait = self.config.min_latency_ms * 1e-3 - (time.monotonic() - t0)
        if wait > 0:
            time.sleep(wait)  # torch releases the GIL while computing; so does this stand-in
        return a

    def to_checkpoint(self) -> PolicyCheckpoint:
        """Weights + config + shape meta; no normalizers or encoder (it has neither)."""
        config = {k: v for k, v in to_dict(self.config).items() if k not in ("checkpoint", *self.RUNTIME_KEYS)}
        return PolicyCheckpoint("tiny_torch", config, self.shape_meta, tensors=dict(self.net.state_dict()))

    def save(self, path: str | os.PathLike) -> Path:
        return self.to_checkpoint().save(path)

    RUNTIME_KEYS = ("min_latency_ms", "action_scale", "rotation_scale", "fixed_gripper")  # may differ from the saved config; the rest may not

    @classmethod
    def from_checkpoint(cls, ckpt: PolicyCheckpoint, **runtime: Any) -> TinyTorchPolicy:
        unknown = sorted(set(runtime) - set(cls.RUNTIME_KEYS))
        if unknown:
            raise ValueError(f"tiny_torch: {unknown} are fixed by the checkpoint; only {list(cls.RUNTIME_KEYS)} may be set")
        policy = cls(TinyTorchConfig(**{**ckpt.config, **runtime}), ckpt.shape_meta)
        policy.net.load_state_dict(ckpt.tensors)
        return policy


@dataclass
class ScriptedPickConfig:
    type: str = "scripted"
    cube_pos: list[float] = field(default_factory=lambda: [*CUBE_CENTER, CUBE_HALF])  # m, robot base frame
    hover: float = 0.10  # m above the cube before descending
    lift: float = 0.12  # m to lift after the grasp
    grasp_depth: float = 0.0  # m: TCP height relative to the cube centre when closing
    tolerance: float = 0.008  # m: a waypoint counts as reached within this
    grasp_steps: int = 4  # steps the gripper closes at least before lifting; then until its width settles
    gain: float = 0.7  # fraction of the remaining error asked for per step (at most one full-scale step)
    action: ActionConvention = field(default_factory=ActionConvention)  # the robot's (deploy_app passes it)


class ScriptedPickPolicy:
    """Waypoints above, at and above the cube from eef_pos; sets `done` after the lift.

    Each action asks the target to move by `gain` x the remaining error (capped at one full-scale
    step of the action convention): the arm brings its TCP onto each target within the step.
    """

    Config = ScriptedPickConfig

    def __init__(self, config: ScriptedPickConfig, shape_meta: ShapeMeta) -> None:
        if "eef_pos" not in shape_meta.obs:
            raise ValueError("the scripted pick needs eef_pos in the observation")
        self.config, self.shape_meta = config, shape_meta
        self.reset()

    def reset(self) -> None:
        self.phase, self.count, self.done = 0, 0, False
        self._width = -1.0  # gripper width at the previous closing step [m]

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        cfg = self.config
        cube = np.asarray(cfg.cube_pos, dtype=np.float64)
        waypoints = [cube + [0, 0, cfg.hover], cube + [0, 0, cfg.grasp_depth], None, cube + [0, 0, cfg.lift]]
        eef = np.asarray(obs["eef_pos"], dtype=np.float64)
        grip = 1.0 if self.phase >= 2 else -1.0
        target = waypoints[self.phase]
        if target is None:  # closing: hold still until the fingers stop moving (the hand's speed is finite)
            self.count += 1
            width = float(obs["gripper_width"][0]) if "gripper_width" in obs else 0.0
            if self.count >= cfg.grasp_steps and abs(width - self._width) < 0.001:
                self.phase += 1
            self._width = width
            return np.array([0, 0, 0, 0, 0, 0, grip], dtype=np.float32)
        err = target - eef
        if np.linalg.norm(err) < cfg.tolerance:
            if self.phase == len(waypoints) - 1:
                self.done = True
            else:
                self.phase += 1
        return cfg.action.to_action(cfg.gain * err, np.zeros(3), grip)


class ReplayPolicy:
    """Serves recorded actions (T, A) in order; `done` after the last one."""

    def __init__(self, actions: np.ndarray, shape_meta: ShapeMeta) -> None:
        self.actions = np.asarray(actions, dtype=np.float32)
        self.shape_meta = shape_meta
        self.reset()

    def reset(self) -> None:
        self.i, self.done = 0, False

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        a = self.actions[min(self.i, len(self.actions) - 1)]
        self.i += 1
        self.done = self.i >= len(self.actions)
        return a
