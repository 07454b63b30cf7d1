"""One training loop for every BC policy: robomimic's `run_epoch` over zarr-store batches.

Resumable: `<run_dir>/train_state.pt` (network and optimizer state dicts, epoch, curves, RNG;
written atomically every `checkpoint_every` epochs) is picked up by a rerun of the same job, and a
run dir holding another configuration is refused rather than silently mixed. With a rollout
evaluator, the policy is rolled out every `eval_every` epochs on validation seeds and
`policy.safetensors` is the checkpoint with the best success (the last one without evaluator).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from policies.algos import window
from policies.bc_policy import RobomimicPolicy, policy_shape_meta
from policies.config import BCConfig, TrainConfig
from policies.dataset import DemoData, WindowBatches, load_demos
from policies.encoders import TotoCore
from policies.feature_cache import cached_features, dataset_fingerprint
from policies.normalize import Normalizers
from toto_robot.action import ATTR_KEY
from toto_robot.config import to_dict
from toto_robot.episode_store import EpisodeStore

STATE_FILE = "train_state.pt"
POLICY_FILE = "policy.safetensors"
LAST_FILE = "last.safetensors"


class RunDirError(RuntimeError):
    """The run directory holds a run of another configuration or dataset."""


@dataclass
class Curves:
    """Per-epoch training loss and wall time; rollout success at evaluated epochs."""

    epoch: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)
    eval_epoch: list[int] = field(default_factory=list)
    success: list[float] = field(default_factory=list)


@dataclass
class TrainResult:
    checkpoint: Path  # the policy to use (best by rollout success, else the last epoch)
    curves: Curves
    best_epoch: int
    best_success: float | None
    train_s: float  # wall time of all epochs (resumed runs included)
    prepare_s: float  # loading data and encoding / reading cached features (this call)
    n_steps: int  # training samples (steps of the chosen episodes)
    resumed_from: int  # epochs found done at start


def toto_cores(policy: RobomimicPolicy) -> dict[str, TotoCore]:
    """Camera key -> the Toto core encoding it, in the policy's network."""
    from robomimic.models.obs_nets import ObservationEncoder

    cores = {}
    for m in policy.algo.nets.modules():
        if isinstance(m, ObservationEncoder):
            cores.update({k: net for k, net in m.obs_nets.items() if isinstance(net, TotoCore)})
    return cores


def prepare(cfg: BCConfig, store: EpisodeStore, episodes: Sequence[int], device: str = "auto",
            progress: bool = True, fingerprint: str | None = None) -> tuple[RobomimicPolicy, DemoData]:
    """A fresh policy for `cfg` with normalizers fitted on `episodes`, and their training data
    (camera features from the cache when the encoder is frozen and no augmentation is on)."""
    spec = policy_shape_meta(cfg, store.data_spec, store.shape_meta.action)
    low = load_demos(store, episodes, cfg.low_dim_keys, [])
    convention = store.attrs.get(ATTR_KEY)
    training = {"dataset": str(store.path), "episodes": len(episodes), "steps": low.n_steps,
                "env_config": store.attrs.get("env_config"), "start_joints": start_joints(store, episodes)}
    policy = RobomimicPolicy(cfg, spec, Normalizers.fit(low.low_dim, low.actions), convention, device, training)
    rows = {}
    if cfg.encoder.cached:
        fingerprint = fingerprint or dataset_fingerprint(store)
        rows = {k: cached_features(store, k, core, progress, fingerprint) for k, core in toto_cores(policy).items()}
    return policy, load_demos(store, episodes, cfg.low_dim_keys, cfg.camera_keys, rows)


def start_joints(store: EpisodeStore, episodes: Sequence[int]) -> list[float] | None:
    """Median arm joints [rad] at the first step of `episodes` (None if the store has no joint_pos):
    where the demonstrations started, so a robot rehearsal can start there too."""
    if "joint_pos" not in store.data_spec:
        return None
    first = [store.episode_slice(e).start for e in episodes]
    return np.median(np.asarray(store.array("joint_pos")[: store.n_steps])[first], axis=0).astype(float).round(5).tolist()


def run_id(cfg: BCConfig, train: TrainConfig, fingerprint: str, episodes: Sequence[int]) -> dict[str, Any]:
    """What a resumable training state must match: configs, episodes and the store's content.
    Not the epoch count (a rerun with more epochs trains on), nor how often it saves."""
    tcfg = {k: v for k, v in to_dict(train).items() if k not in ("epochs", "checkpoint_every", "num_threads")}
    return {"policy": to_dict(cfg), "train": tcfg, "episodes": list(map(int, episodes)), "dataset": fingerprint}


def train(cfg: BCConfig, train_cfg: TrainConfig, store: EpisodeStore, episodes: Sequence[int], run_dir: str | os.PathLike,
          rollout: Callable[[Path], float | Callable[[], float]] | None = None, device: str = "auto",
          progress: bool = True) -> TrainResult:
    """Train (or resume) a policy on `episodes` of `store` in `run_dir`. rollout(checkpoint) -> success
    rate on validation seeds, called every `train_cfg.eval_every` epochs and after the last one; or a
    function that waits for it: then training goes on while the rollouts run (in other processes),
    and the result is taken at the next evaluated epoch."""
    import robomimic.utils.log_utils as LogUtils
    import robomimic.utils.train_utils as TrainUtils

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if train_cfg.num_threads > 0:
        torch.set_num_threads(train_cfg.num_threads)
    torch.manual_seed(train_cfg.seed)
    t0 = time.perf_counter()
    fingerprint = dataset_fingerprint(store)
    ident = run_id(cfg, train_cfg, fingerprint, episodes)
    policy, data = prepare(cfg, store, episodes, device, progress, fingerprint)
    prepare_s = time.perf_counter() - t0
    before, after = window(cfg)
    history = dict.fromkeys(cfg.camera_keys, cfg.obs.history)
    live = {k: core.token_features for k, core in toto_cores(policy).items() if data.cameras[k].dtype == np.uint8}
    batches = WindowBatches(data, policy.normalizers, train_cfg.batch_size, before, after, history, seed=train_cfg.seed,
                            featurize=live, shift=cfg.encoder.shift if live else 0)

    curves, best_epoch, best, resume_eval = Curves(), 0, None, None
    state_path = run_dir / STATE_FILE
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        if state["ident"] != json.dumps(ident, sort_keys=True):
            raise RunDirError(_mismatch(run_dir, json.loads(state["ident"]), ident))
        policy.algo.deserialize(state["nets"])
        for k, opt in policy.algo.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        for k, sched in policy.algo.lr_schedulers.items():
            if sched is not None:
                sched.load_state_dict(state["schedulers"][k])
        torch.set_rng_state(state["rng"])
        curves = Curves(**state["curves"])
        best_epoch, best, resume_eval = state["best_epoch"], state["best_success"], state.get("pending_eval")
    start = curves.epoch[-1] if curves.epoch else 0
    pending: tuple[int, Path, Callable[[], float]] | None = None  # an evaluation running beside training

    def evaluate(epoch: int, candidate: Path) -> None:
        nonlocal pending
        result = rollout(candidate)
        pending = (epoch, candidate, result if callable(result) else lambda: float(result))

    def settle() -> None:
        """Take the pending evaluation's result; its checkpoint becomes the policy if it is the best."""
        nonlocal pending, best, best_epoch
        if pending is None:
            return
        epoch, candidate, result = pending
        success = float(result())
        pending = None
        curves.eval_epoch.append(epoch)
        curves.success.append(success)
        if best is None or success >= best:
            best, best_epoch = success, epoch
            os.replace(candidate, run_dir / POLICY_FILE)
        else:
            candidate.unlink(missing_ok=True)
        bar.set_postfix(loss=f"{curves.loss[-1]:.4f}", success=f"{success:.0%}@{epoch}", best=f"{best:.0%}@{best_epoch}")

    bar = tqdm(range(start + 1, train_cfg.epochs + 1), desc="train", initial=start, total=train_cfg.epochs, disable=not progress)
    if rollout is not None and resume_eval is not None and _candidate(run_dir, resume_eval).exists():
        evaluate(resume_eval, _candidate(run_dir, resume_eval))  # the run was stopped while it was evaluated
    for epoch in bar:
        t = time.perf_counter()
        batches.set_epoch(epoch)
        with LogUtils.silence_stdout():  # robomimic prints a progress bar per epoch
            step_log = TrainUtils.run_epoch(policy.algo, batches, epoch)
        policy.algo.on_epoch_end(epoch)
        curves.epoch.append(epoch)
        curves.loss.append(float(step_log["Loss"]))
        curves.epoch_s.append(time.perf_counter() - t)
        bar.set_postfix(loss=f"{curves.loss[-1]:.4f}")
        last = epoch == train_cfg.epochs
        if rollout is not None and (last or (train_cfg.eval_every and epoch % train_cfg.eval_every == 0)):
            settle()
            policy.training.update(epoch=epoch)
            evaluate(epoch, policy.save(_candidate(run_dir, epoch)))
            if last:
                settle()
        if last or epoch % max(1, train_cfg.checkpoint_every) == 0:
            policy.training.update(epoch=epoch)
            policy.save(run_dir / LAST_FILE)
            _save_state(state_path, policy, ident, curves, best_epoch, best, pending[0] if pending else None)
    if rollout is not None and pending is not None:  # nothing left to train (a resumed, finished run)
        settle()
        _save_state(state_path, policy, ident, curves, best_epoch, best, None)
    bar.close()
    if rollout is None and (run_dir / LAST_FILE).exists():
        shutil.copyfile(run_dir / LAST_FILE, run_dir / f".{POLICY_FILE}.tmp")
        os.replace(run_dir / f".{POLICY_FILE}.tmp", run_dir / POLICY_FILE)
        best_epoch = curves.epoch[-1] if curves.epoch else 0
    return TrainResult(run_dir / POLICY_FILE, curves, best_epoch, best, sum(curves.epoch_s), prepare_s, data.n_steps, start)


def _candidate(run_dir: Path, epoch: int) -> Path:
    """Checkpoint of `epoch` while its validation rollouts run."""
    return run_dir / f".candidate-{epoch}.safetensors"


def _save_state(path: Path, policy: RobomimicPolicy, ident: dict[str, Any], curves: Curves, best_epoch: int,
                best: float | None, pending_eval: int | None = None) -> None:
    state = {
        "ident": json.dumps(ident, sort_keys=True),
        "nets": policy.algo.serialize(),
        "optimizers": {k: opt.state_dict() for k, opt in policy.algo.optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in policy.algo.lr_schedulers.items() if s is not None},
        "rng": torch.get_rng_state(),
        "curves": curves.__dict__,
        "best_epoch": best_epoch,
        "best_success": best,
        "pending_eval": pending_eval,  # epoch whose validation rollouts were running (re-run on resume)
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _mismatch(run_dir: Path, old: dict[str, Any], new: dict[str, Any]) -> str:
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            return {k2: v2 for k, v in d.items() for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix.rstrip("."): d}

    a, b = flat(old), flat(new)
    diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    shown = "; ".join(d if len(d) < 120 else d[:117] + "..." for d in diff[:6])
    return (f"{run_dir} holds a training run of another configuration or dataset ({shown}); "
            f"choose another run directory (run_name=...) or delete {run_dir / STATE_FILE} to start over")
