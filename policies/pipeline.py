"""The main job behind `train_policy.py`: demos (collected if missing) -> BC policy on the frozen
encoder -> held-out sim evaluation, with the oracle / proprioception-only baselines and the
scripted expert evaluated beside it on the same seeds -> a run directory a person can read.

Every stage resumes: collection tops the store up, training continues from its state, evaluation
skips seeds already evaluated for the same checkpoint. The demos used are the store's first
`demos.n_episodes` episodes, collected on fixed training seeds: same command, same data.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.collect import CollectConfig
from envs.config import CubePickConfig
from policies.config import AlgoConfig, BCConfig, EncoderConfig, ObsConfig, TrainConfig
from toto_robot.config import CONF_DIR, as_dataclass, to_dict

VALIDATION_OFFSET = 50_000  # validation seeds: eval_seeds(n, start=VALIDATION_OFFSET), disjoint from the test seeds


@dataclass
class DemosConfig:
    out: str = "data/cube_pick_demos.zarr"
    n_episodes: int = 100  # successful expert episodes used for training; collected if the store has fewer
    workers: int = 2
    expert_noise: float = 0.3  # std of the expert's action noise (normalized action units)
    label: str = "expert"  # envs.collect.CollectConfig.label: expert (DART: noise executed, clean action stored) | executed


@dataclass
class EvalConfig:
    n_episodes: int = 50  # held-out seeds envs.seeds.eval_seeds(n), disjoint from the demos' seeds
    workers: int = 2  # one env per process
    videos: int = 2  # mp4s of this many successes and this many failures
    expert: bool = True  # also evaluate the scripted expert (privileged) on the same seeds


@dataclass
class TrainPolicyConfig:
    env: CubePickConfig = field(default_factory=CubePickConfig)
    policy: AlgoConfig = field(default_factory=AlgoConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    obs: ObsConfig = field(default_factory=ObsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    demos: DemosConfig = field(default_factory=DemosConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    baselines: list[str] = field(default_factory=lambda: ["oracle", "none"])  # conf/encoder/<name>.yaml, same algo and demos
    parallel_baselines: bool = True  # baselines in a second process beside the main policy (whose training uses one core)
    run_name: str = "run"
    out_dir: str = "outputs/train_policy/run"
    device: str = "auto"
    progress: bool = True

    @property
    def bc(self) -> BCConfig:
        return BCConfig(self.policy, self.encoder, self.obs)


def encoder_group(name: str) -> EncoderConfig:
    """The policy-side encoder config of conf/encoder/<name>.yaml."""
    from omegaconf import OmegaConf

    path = CONF_DIR / "encoder" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in (CONF_DIR / "encoder").glob("*.yaml"))
        raise ValueError(f"unknown encoder {name!r} in baselines; known: {known}")
    return as_dataclass(EncoderConfig, OmegaConf.load(path))


def ensure_demos(cfg: TrainPolicyConfig) -> dict[str, Any] | None:
    """Collect expert demos into `cfg.demos.out` until it holds `n_episodes`; None if already there."""
    from envs.collect import collect_demos
    from toto_robot.episode_store import EpisodeStore

    path = Path(cfg.demos.out)
    if path.exists() and EpisodeStore.open(path).n_episodes >= cfg.demos.n_episodes:
        return None
    collect_cfg = CollectConfig(env=cfg.env, n_episodes=cfg.demos.n_episodes, out=cfg.demos.out,
                                workers=cfg.demos.workers, expert_noise=cfg.demos.expert_noise, label=cfg.demos.label,
                                progress=cfg.progress)
    return collect_demos(collect_cfg)


def env_contract(env_cfg: CubePickConfig) -> tuple[Any, Any]:
    """(observation spec, action convention) of the env `env_cfg` describes."""
    from envs.cube_pick import cube_pick_shape_meta

    return cube_pick_shape_meta(list(env_cfg.cameras), env_cfg.render_size), env_cfg.action


def check_store(store: Any, spec: Any, convention: Any) -> None:
    """The demo store must have been recorded by this env: same observation spec and convention."""
    from toto_robot.action import ATTR_KEY, check_convention
    from toto_robot.checkpoint import check_provides
    from toto_robot.spec import SpecError

    try:
        check_provides(store.shape_meta, spec, "the env of this job", f"demo store {store.path}")
        check_convention(store.attrs.get(ATTR_KEY), convention, f"demo store {store.path}")
    except SpecError as e:
        raise type(e)(f"{e}\n  (collect demos of this env into another store with demos.out=PATH)") from None


def check_collector(store: Any, demos: Any) -> None:
    """The store's demos must come from the expert settings (`demos.expert_noise`, `demos.label`) the
    command asks for: same command, same data."""
    # a store without these attributes was collected with the collector's defaults
    made = {"expert_noise": CollectConfig.expert_noise, "label": CollectConfig.label, **(store.attrs.get("collector") or {})}
    diff = [f"{k} {made[k]!r} (asked: {getattr(demos, k)!r})" for k in ("expert_noise", "label") if made[k] != getattr(demos, k)]
    if diff:
        raise ValueError(f"demo store {store.path} was collected with {', '.join(diff)}; "
                         "collect into another store with demos.out=PATH (or delete it to recollect)")


def run(cfg: TrainPolicyConfig) -> dict[str, Any]:
    """The whole job; writes metrics.json, report.md, curves and videos under cfg.out_dir."""
    from envs.seeds import eval_seeds
    from policies.report import summary_table
    from toto_robot.atomic import write_json, write_text
    from toto_robot.episode_store import EpisodeStore

    started = time.perf_counter()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec, convention = env_contract(cfg.env)
    collection = ensure_demos(cfg)
    stages = {"collect": time.perf_counter() - started}
    store = EpisodeStore.open(cfg.demos.out)
    check_store(store, spec, convention)
    check_collector(store, cfg.demos)
    store.verify(progress=cfg.progress)  # a damaged store is refused before anything learns from it
    stages["verify"] = time.perf_counter() - started - stages["collect"]
    if store.n_episodes < cfg.demos.n_episodes:
        raise RuntimeError(f"{store.path} holds {store.n_episodes} episodes, {cfg.demos.n_episodes} asked; "
                           "collection stopped early (see its summary above)")
    episodes = list(range(cfg.demos.n_episodes))
    test_seeds = eval_seeds(cfg.eval.n_episodes)
    val_seeds = eval_seeds(cfg.train.eval_episodes, start=VALIDATION_OFFSET)

    main = [("main", cfg.encoder, out)]
    side = [(n, encoder_group(n), out / "baselines" / n) for n in cfg.baselines]
    beside = bool(side or cfg.eval.expert) and cfg.parallel_baselines
    if beside and cfg.bc.camera_keys and cfg.encoder.cached:
        # The main policy's frozen features first, on every core (its training then reads the cache).
        from policies.train import prepare

        t = time.perf_counter()
        with torch_threads(os.cpu_count() or 1):
            prepare(cfg.bc, store, episodes, cfg.device, cfg.progress)
        stages["features"] = time.perf_counter() - t
    # Then the baselines and the scripted expert train and evaluate in a second process while the
    # main policy does (its training uses one thread: the other core would idle).
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) if beside else nullcontext() as executor:
        future = executor.submit(_run_entries, side, cfg, episodes, test_seeds, val_seeds, True, cfg.eval.expert) if beside else None
        rows = _run_entries(main if beside else main + side, cfg, episodes, test_seeds, val_seeds, False,
                            cfg.eval.expert and not beside)
        if future is not None:
            rows += future.result()

    metrics = {
        "rows": rows,
        "demos": {"path": str(store.path), "n_episodes": len(episodes), "n_steps": int(sum(store.episode_lengths()[episodes])),
                  "collected_now": collection},
        "eval_seeds": {"first": test_seeds[0], "n": len(test_seeds), "validation_first": val_seeds[0] if val_seeds else None},
        "job_wall_s": time.perf_counter() - started,
        "stages_s": {**stages, **{r["name"]: r["wall_s"] for r in rows}},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg": os.getloadavg()},
        "config": to_dict(cfg),
    }
    write_json(out / "metrics.json", metrics)
    table = summary_table(rows)
    metrics["table"] = f"{table}\n\n{time_breakdown(metrics)}"
    write_text(out / "report.md", f"# train_policy: {cfg.run_name}\n\n{metrics['table']}\n")
    return metrics


def _run_entries(entries: list[tuple[str, EncoderConfig, Path]], cfg: TrainPolicyConfig, episodes: list[int],
                 test_seeds: list[int], val_seeds: list[int], beside: bool, expert: bool) -> list[dict[str, Any]]:
    """Train and evaluate each (name, encoder, run_dir) entry in turn, then the scripted expert if
    asked; one row each. beside: this runs in the second process next to the main policy (no
    progress bars: a log line per finished row instead; rows marked as overlapping the main one)."""
    from policies.evaluation import EXPERT, RolloutPool
    from toto_robot.episode_store import EpisodeStore

    store = EpisodeStore.open(cfg.demos.out)
    if beside:
        cfg = replace(cfg, progress=False)
    rows = []
    # Blind policies (no rendering) and the expert share one pool: its workers start once, on first use.
    with RolloutPool({**to_dict(cfg.env), "cameras": []}, cfg.eval.workers) as blind:
        for name, encoder, run_dir in entries:
            bc = BCConfig(cfg.policy, encoder, cfg.obs)
            with RolloutPool(cfg.env, cfg.eval.workers) if bc.camera_keys else nullcontext(blind) as pool:
                rows.append(_train_and_evaluate(name, bc, cfg, store, episodes, run_dir, pool, test_seeds, val_seeds))
        if expert:
            t = time.perf_counter()
            ev = blind.evaluate(EXPERT, test_seeds, results_path=Path(cfg.out_dir) / "baselines" / "expert_eval.jsonl",
                                progress=cfg.progress, desc="evaluate expert")
            rows.append({"name": "scripted expert", "encoder": "privileged", "demos": "-", "eval": ev.summary(),
                         "per_seed": ev.episodes, "wall_s": time.perf_counter() - t})
    if beside:
        for row in rows:
            row["beside_main"] = True
            print(f"[beside the main policy] {row['name']}: success {row['eval']['successes']}/{row['eval']['n_episodes']} "
                  f"({row['wall_s']:.0f} s)", flush=True)
    return rows


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to n inside the block."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_and_evaluate(name: str, bc: BCConfig, cfg: TrainPolicyConfig, store: Any, episodes: list[int], run_dir: Path,
                        pool: Any, test_seeds: list[int], val_seeds: list[int]) -> dict[str, Any]:
    from policies.latency import measure_latency, store_observations
    from policies.report import plot_curves
    from toto_robot.atomic import write_json
    from policies.train import train
    from toto_robot.policy import load_policy

    label = f"{name} ({bc.encoder.kind})"

    def rollout(checkpoint: Path) -> Callable[[], float]:  # the rollout workers run while training goes on
        wait = pool.submit(str(checkpoint), val_seeds, progress=False)
        return lambda: wait().summary()["success_rate"]

    started = time.perf_counter()
    result = train(bc, cfg.train, store, episodes, run_dir, rollout if cfg.train.eval_every else None, cfg.device, cfg.progress)
    train_stage_s = time.perf_counter() - started
    trained_now_s = sum(result.curves.epoch_s[result.resumed_from:])  # epochs of this call (a resumed run trained the rest)
    curves = result.curves.__dict__
    plot_curves(curves, run_dir / "curves.png", f"{label}: {cfg.policy.name}, {len(episodes)} demos")
    ev = pool.evaluate(str(result.checkpoint), test_seeds, video_dir=run_dir / "videos", n_videos=cfg.eval.videos,
                       results_path=run_dir / "eval.jsonl", progress=cfg.progress, desc=f"evaluate {name}")
    policy = load_policy(result.checkpoint, device=cfg.device)
    latency = measure_latency(policy, store_observations(store, list(policy.shape_meta.obs), 20))
    row = {
        "name": name, "encoder": bc.encoder.kind, "algo": cfg.policy.name, "demos": len(episodes),
        "checkpoint": str(result.checkpoint), "eval": ev.summary(), "per_seed": ev.episodes, "videos": ev.videos,
        "latency": latency,
        "train": {"train_s": result.train_s, "prepare_s": result.prepare_s, "epochs": len(result.curves.epoch),
                  "epoch_s_median": sorted(result.curves.epoch_s)[len(result.curves.epoch_s) // 2] if result.curves.epoch_s else None,
                  "best_epoch": result.best_epoch, "best_validation_success": result.best_success,
                  "resumed_from_epoch": result.resumed_from, "n_steps": result.n_steps, "curves": curves,
                  "train_s_this_call": trained_now_s,
                  "validation_s": max(0.0, train_stage_s - trained_now_s - result.prepare_s)},
        "wall_s": time.perf_counter() - started,
    }
    write_json(run_dir / "policy_metrics.json", row)
    return row


def time_breakdown(metrics: dict[str, Any]) -> str:
    """Where the job's wall time went (this call; resumed stages take ~0 s), with the machine's load."""
    st, m = metrics["stages_s"], metrics["machine"]
    parts = [f"collect {st['collect']:.0f} s", f"verify {st['verify']:.0f} s"]
    if "features" in st:
        parts.append(f"main policy's features on every core {st['features']:.0f} s")
    for r in metrics["rows"]:
        tr = r.get("train")
        detail = (f" (features {tr['prepare_s']:.0f}, train {tr['train_s_this_call']:.0f}, validation rollouts {tr['validation_s']:.0f}, "
                  f"evaluation {r['eval']['wall_s']:.0f})") if tr else ""
        parts.append(f"{r['name']} {r['wall_s']:.0f} s{' beside main' if r.get('beside_main') else ''}{detail}")
    return (f"Job wall time {metrics['job_wall_s']:.0f} s on {m['cpus']} CPUs (load average {m['load_avg'][0]:.1f} at the end): "
            + ", ".join(parts) + ".")
