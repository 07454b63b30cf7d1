"""The main job behind `train_policy.py`: demos (collected if missing) -> policy -> sim evaluation -> report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from envs.collect import CollectConfig
from envs.config import CubePickConfig


@dataclass
class DemosConfig:
    out: str = "data/cube_pick_demos.zarr"
    n_episodes: int = 100  # successful expert episodes the store must hold; collected if missing
    workers: int = 2
    expert_noise: float = 0.05


@dataclass
class EvalConfig:
    n_episodes: int = 50  # on envs.seeds.EVAL_SEEDS, disjoint from the demos' seeds
    video_episodes: int = 3


@dataclass
class TrainPolicyConfig:
    env: CubePickConfig = field(default_factory=CubePickConfig)
    policy: dict[str, Any] = field(default_factory=lambda: {"name": "scripted_expert"})
    demos: DemosConfig = field(default_factory=DemosConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    out_dir: str = "outputs/train_policy"
    progress: bool = True


def ensure_demos(cfg: TrainPolicyConfig) -> dict[str, Any] | None:
    """Collect expert demos into `cfg.demos.out` until it holds `n_episodes`; None if already there."""
    from envs.collect import collect_demos
    from toto_robot.episode_store import EpisodeStore

    path = Path(cfg.demos.out)
    if path.exists() and EpisodeStore.open(path).n_episodes >= cfg.demos.n_episodes:
        return None
    collect_cfg = CollectConfig(
        env=cfg.env,
        n_episodes=cfg.demos.n_episodes,
        out=cfg.demos.out,
        workers=cfg.demos.workers,
        expert_noise=cfg.demos.expert_noise,
        progress=cfg.progress,
    )
    return collect_demos(collect_cfg)


def run(cfg: TrainPolicyConfig) -> dict[str, Any]:
    """Run the whole job; writes report.json and report.md (and eval.mp4) to `cfg.out_dir`."""
    from envs.rollout import evaluate
    from envs.seeds import eval_seeds
    from policies.registry import POLICIES
    from toto_robot.action import ATTR_KEY, check_convention
    from toto_robot.config import to_dict
    from toto_robot.episode_store import EpisodeStore

    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    collection = ensure_demos(cfg)
    demos = EpisodeStore.open(cfg.demos.out, shape_meta=None)
    check_convention(demos.attrs.get(ATTR_KEY), cfg.env.action, f"demos {cfg.demos.out}")  # actions must mean what the env does
    demos.verify(progress=cfg.progress)  # a damaged store is refused before anything learns from it
    name = cfg.policy.get("name")
    policy = POLICIES.build(name, cfg.policy, demos, out_dir)
    video = out_dir / "eval.mp4" if cfg.eval.video_episodes > 0 else None
    result = evaluate(
        policy,
        cfg.env,
        eval_seeds(cfg.eval.n_episodes),
        video_path=video,
        progress=cfg.progress,
        video_episodes=cfg.eval.video_episodes,
    )
    report = {
        "policy": dict(cfg.policy),
        "demos": {"path": cfg.demos.out, "n_episodes": demos.n_episodes, "n_steps": demos.n_steps,
                  "collected_now": collection},
        "eval": {k: v for k, v in result.items() if k != "episodes"},
        "eval_episodes": result["episodes"],
        "video": str(video) if video else None,
        "config": to_dict(cfg),
    }
    _write_text(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    _write_text(out_dir / "report.md", _markdown(report))
    return report


def _markdown(report: dict[str, Any]) -> str:
    ev = report["eval"]
    return (
        f"# train_policy report\n\n"
        f"| policy | demos | eval episodes | success rate | mean steps | control steps/s |\n"
        f"|---|---|---|---|---|---|\n"
        f"| {report['policy'].get('name')} | {report['demos']['n_episodes']} | {ev['n_episodes']} "
        f"| {ev['success_rate']:.1%} | {ev['mean_steps']:.1f} | {ev['frames_per_s']:.0f} |\n\n"
        f"Video: {report['video']}\n"
    )


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
