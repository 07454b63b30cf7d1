"""`study_sample_efficiency.py`: success vs number of demos, per encoder, over training seeds.

A cell is (encoder, n_demos, seed): a policy trained on the store's first n_demos episodes with
training seed `seed`, evaluated on the same held-out seeds as every other cell. Cells run in
`parallel` processes (each with its own rollout workers); a finished cell is a row of
`results.csv` and is skipped on a rerun, an unfinished one resumes its training state. The plot
shows, per encoder, the mean success over seeds with the 95% Wilson band of the pooled episodes,
and each seed's result as a dot.
"""

from __future__ import annotations

import csv
import io
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.config import CubePickConfig
from policies.config import AlgoConfig, BCConfig, ObsConfig, TrainConfig
from policies.pipeline import DemosConfig
from toto_robot.atomic import save_figure, write_json, write_text
from toto_robot.config import to_dict

COLUMNS = ["encoder", "n_demos", "seed", "success_rate", "successes", "n_episodes", "ci_low", "ci_high",
           "mean_length", "train_s", "epochs", "checkpoint"]


@dataclass
class StudyConfig:
    demos: list[int] = field(default_factory=lambda: [10, 25, 50, 100, 200])
    encoders: list[str] = field(default_factory=lambda: ["toto", "toto_random", "resnet18", "oracle", "none"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    encoder_artifact: str | None = None  # toto / toto_random: artifact (null = the packaged default)
    store: str = "data/cube_pick_demos_study.zarr"  # collected up to max(demos) if short
    collect_workers: int = 2
    expert_noise: float = DemosConfig.expert_noise  # the demos as the main job collects them
    label: str = DemosConfig.label
    env: CubePickConfig = field(default_factory=CubePickConfig)
    policy: AlgoConfig = field(default_factory=AlgoConfig)
    obs: ObsConfig = field(default_factory=ObsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval_episodes: int = 50
    eval_workers: int = 2  # rollout processes per cell
    parallel: int = 1  # cells at once
    device: str = "auto"
    out_dir: str = "outputs/study_sample_efficiency"
    progress: bool = True


def cells(cfg: StudyConfig) -> list[tuple[str, int, int]]:
    return [(e, n, s) for e in cfg.encoders for n in sorted(cfg.demos) for s in cfg.seeds]


def read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run(cfg: StudyConfig) -> dict[str, Any]:
    from envs.collect import CollectConfig, collect_demos
    from policies.pipeline import check_collector, check_store, encoder_group, env_contract
    from toto_robot.episode_store import EpisodeStore

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    unknown = [e for e in cfg.encoders if not (Path(__file__).parents[1] / "conf" / "encoder" / f"{e}.yaml").exists()]
    if unknown:
        raise ValueError(f"unknown encoders {unknown}: each must be a conf/encoder/<name>.yaml")
    need = max(cfg.demos)
    spec, convention = env_contract(cfg.env)
    store_path = Path(cfg.store)
    if not store_path.exists() or EpisodeStore.open(store_path).n_episodes < need:
        collect_demos(CollectConfig(env=cfg.env, n_episodes=need, out=cfg.store, workers=cfg.collect_workers,
                                    expert_noise=cfg.expert_noise, label=cfg.label, progress=cfg.progress))
    store = EpisodeStore.open(store_path)
    check_store(store, spec, convention)
    check_collector(store, cfg)
    csv_path = out / "results.csv"
    done = {(r["encoder"], int(r["n_demos"]), int(r["seed"])) for r in read_results(csv_path)}
    todo = [c for c in cells(cfg) if c not in done]
    print(f"{len(cells(cfg)) - len(todo)} of {len(cells(cfg))} cells done; running {len(todo)} "
          f"({cfg.parallel} at a time)")
    _warm_caches(cfg, store, [e for e in cfg.encoders if encoder_group(e).frozen])
    start = time.perf_counter()
    if cfg.parallel <= 1:
        for cell in todo:
            _append(csv_path, run_cell(cfg, cell))
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(cfg.parallel, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(run_cell, replace(cfg, progress=False), cell) for cell in todo]
            for fut in as_completed(futures):
                row = fut.result()
                _append(csv_path, row)
                print(f"cell {row['encoder']} x {row['n_demos']} demos x seed {row['seed']}: "
                      f"{float(row['success_rate']):.0%}")
    rows = read_results(csv_path)
    plot = plot_study(rows, out / "success_vs_demos.png", cfg.eval_episodes)
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
            "wall_s_this_run": time.perf_counter() - start, "config": to_dict(cfg)}
    write_json(out / "study.json", meta)
    return {"csv": str(csv_path), "plot": str(plot), "rows": rows, **meta}


def _warm_caches(cfg: StudyConfig, store: Any, encoders: list[str]) -> None:
    """Encode the store once per frozen encoder before cells run in parallel (one writer per entry)."""
    from policies.pipeline import encoder_group
    from policies.train import prepare

    for name in encoders:
        enc = replace(encoder_group(name), artifact=cfg.encoder_artifact)
        prepare(BCConfig(cfg.policy, enc, cfg.obs), store, [0], cfg.device, cfg.progress)


def run_cell(cfg: StudyConfig, cell: tuple[str, int, int]) -> dict[str, Any]:
    """Train and evaluate one cell in out_dir/cells/<encoder>-<n>demos-seed<s>; its CSV row."""
    from envs.seeds import eval_seeds
    from policies.evaluation import RolloutPool
    from policies.pipeline import encoder_group
    from policies.train import train
    from toto_robot.episode_store import EpisodeStore

    name, n, seed = cell
    enc = encoder_group(name)
    if enc.frozen:
        enc = replace(enc, artifact=cfg.encoder_artifact)
    bc = BCConfig(cfg.policy, enc, cfg.obs)
    run_dir = Path(cfg.out_dir) / "cells" / f"{name}-{n}demos-seed{seed}"
    store = EpisodeStore.open(cfg.store)
    result = train(bc, replace(cfg.train, seed=seed, eval_every=0), store, list(range(n)), run_dir, None, cfg.device,
                   cfg.progress)
    env = to_dict(cfg.env) if bc.camera_keys else {**to_dict(cfg.env), "cameras": []}
    with RolloutPool(env, cfg.eval_workers) as pool:
        ev = pool.evaluate(str(result.checkpoint), eval_seeds(cfg.eval_episodes), results_path=run_dir / "eval.jsonl",
                           progress=cfg.progress, desc=f"evaluate {name} x {n} x {seed}").summary()
    return {"encoder": name, "n_demos": n, "seed": seed, "success_rate": ev["success_rate"], "successes": ev["successes"],
            "n_episodes": ev["n_episodes"], "ci_low": ev["success_ci95"][0], "ci_high": ev["success_ci95"][1],
            "mean_length": ev["mean_episode_length"], "train_s": result.train_s, "epochs": len(result.curves.epoch),
            "checkpoint": str(result.checkpoint)}


def _append(path: Path, row: dict[str, Any]) -> None:
    """Rewrite the CSV with the new row (temp file + rename: never half a row)."""
    rows = [*read_results(path), {k: row[k] for k in COLUMNS}]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def plot_study(rows: list[dict[str, Any]], path: Path, n_eval: int) -> Path:
    """Success vs demos (log x) per encoder: mean over seeds, pooled 95% Wilson band, seeds as dots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from policies.evaluation import wilson_interval

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, enc in enumerate(dict.fromkeys(r["encoder"] for r in rows)):
        mine = [r for r in rows if r["encoder"] == enc]
        ns = sorted({int(r["n_demos"]) for r in mine})
        mean, lo, hi = [], [], []
        color = f"C{i}"
        for n in ns:
            at = [r for r in mine if int(r["n_demos"]) == n]
            k, total = sum(int(r["successes"]) for r in at), sum(int(r["n_episodes"]) for r in at)
            a, b = wilson_interval(k, total)
            mean.append(100 * float(np.mean([float(r["success_rate"]) for r in at])))
            lo.append(100 * a)
            hi.append(100 * b)
            ax.scatter([n] * len(at), [100 * float(r["success_rate"]) for r in at], color=color, s=10, alpha=0.5)
        ax.plot(ns, mean, "o-", color=color, label=enc)
        ax.fill_between(ns, lo, hi, color=color, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("demonstrations")
    ax.set_ylabel(f"success on {n_eval} held-out seeds [%]")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
