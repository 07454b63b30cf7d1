"""Replay a stored episode: its actions through the runner (online), or its observations
through a policy to compare predicted with recorded actions (offline).

The offline check is what to run before trusting a policy or a dataset on hardware: a policy
that cannot reproduce the actions of its own training episodes, or a store whose images or
state differ from what the policy expects, shows up here without moving anything. The online
replay starts the arm (and, on franky-sim, the cube) where the episode started, so its
end-effector path can be compared with the recorded one step by step (`path_error`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from toto_robot.action import ATTR_KEY, ActionConvention, check_convention
from toto_robot.atomic import save_figure
from toto_robot.episode_store import EpisodeStore
from toto_robot.policy import Policy
from toto_robot.spec import SpecError

ACTION_NAMES = ("dx", "dy", "dz", "rx", "ry", "rz", "gripper")


def open_replay_store(store_path: str | os.PathLike, convention: ActionConvention) -> EpisodeStore:
    """The store, if its actions mean what they mean to this robot (else ActionConventionError)."""
    store = EpisodeStore.open(store_path)
    check_convention(store.attrs.get(ATTR_KEY), convention, f"episode store {store_path}")
    return store


def path_error(recorded: np.ndarray, replayed: np.ndarray) -> dict[str, float]:
    """End-effector paths (T, 3) [m] compared relative to each one's start pose, step by step.

    Absolute positions would fold in where each run started; what a replay must reproduce is
    the motion. Returns mean and max distance [m] over the common steps, and that count.
    """
    n = min(len(recorded), len(replayed))
    if n == 0:
        return {"mean_m": float("nan"), "max_m": float("nan"), "steps": 0}
    rec = np.asarray(recorded[:n], np.float64)
    rep = np.asarray(replayed[:n], np.float64)
    err = np.linalg.norm((rep - rep[0]) - (rec - rec[0]), axis=1)
    return {"mean_m": float(err.mean()), "max_m": float(err.max()), "steps": n}


def compare_actions(policy: Policy, episode: dict[str, np.ndarray], progress: bool = True) -> dict[str, Any]:
    """Feed the episode's observations (T steps) to `policy` in order; errors of predicted vs recorded.

    Returns {"predicted": (T, A), "recorded": (T, A), "mae": per dim, "rmse": per dim, "mae_mean",
    "gripper_agreement": fraction of steps where the open/close decision matches}.
    """
    spec = policy.shape_meta
    missing = [k for k in spec.obs if k not in episode]
    if missing:
        raise SpecError(f"the episode lacks the policy's observation keys {missing}; it has {sorted(episode)}")
    for key, s in spec.obs.items():
        if episode[key].shape[1:] != s.shape:
            raise SpecError(f"{key!r}: episode has {episode[key].shape[1:]}, the policy expects {s.shape}")
    recorded = np.asarray(episode["action"], dtype=np.float32)
    policy.reset()
    steps = range(len(recorded))
    predicted = np.stack([
        np.asarray(policy.select_action({k: episode[k][t] for k in spec.obs}), dtype=np.float32)
        for t in tqdm(steps, desc="offline replay", disable=not progress)
    ])
    err = predicted - recorded
    return {
        "predicted": predicted,
        "recorded": recorded,
        "mae": np.abs(err).mean(axis=0).tolist(),
        "rmse": np.sqrt((err**2).mean(axis=0)).tolist(),
        "mae_mean": float(np.abs(err).mean()),
        "gripper_agreement": float(np.mean((predicted[:, -1] > 0) == (recorded[:, -1] > 0))),
        "steps": len(recorded),
    }


def plot_comparison(report: dict[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """One subplot per action dimension: recorded vs predicted over time; PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, rec = report["predicted"], report["recorded"]
    dims = rec.shape[1]
    fig, axes = plt.subplots(dims, 1, figsize=(8, 1.6 * dims), sharex=True)
    for d, ax in enumerate(np.atleast_1d(axes)):
        ax.plot(rec[:, d], label="recorded", color="k", lw=1.2)
        ax.plot(pred[:, d], label="predicted", color="tab:orange", lw=1.0)
        name = ACTION_NAMES[d] if d < len(ACTION_NAMES) else str(d)
        ax.set_ylabel(f"{name}\nMAE {report['mae'][d]:.3f}", fontsize=8)
        ax.set_ylim(-1.05, 1.05)
    np.atleast_1d(axes)[0].legend(loc="upper right", fontsize=8)
    np.atleast_1d(axes)[-1].set_xlabel("step")
    fig.suptitle(title or f"predicted vs recorded actions (mean MAE {report['mae_mean']:.3f})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)
