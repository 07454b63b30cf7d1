"""What a training job leaves for a person: curves as PNG and a summary table."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from toto_robot.atomic import save_figure


def plot_curves(curves: Mapping[str, Any], path: str | os.PathLike, title: str = "") -> Path:
    """Training loss per epoch (log scale) and, when evaluated, rollout success per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_success = bool(curves.get("success"))
    fig, axes = plt.subplots(1, 2 if with_success else 1, figsize=(10 if with_success else 5, 3.5), squeeze=False)
    ax = axes[0, 0]
    ax.plot(curves["epoch"], curves["loss"], color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    if with_success:
        ax = axes[0, 1]
        ax.plot(curves["eval_epoch"], [100 * s for s in curves["success"]], "o-", color="tab:green")
        ax.set_ylim(-5, 105)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation success [%]")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def summary_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table: one row per policy with success [95% CI], episode length, times, latency."""
    lines = ["| policy | encoder | demos | success | 95% CI | mean length | train [s] | latency p50 [ms] |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ev = r["eval"]
        lo, hi = ev["success_ci95"]
        p50 = (r.get("latency") or {}).get("p50_ms")
        train_s = r.get("train", {}).get("train_s")
        lines.append(
            f"| {r['name']} | {r.get('encoder', '-')} | {r.get('demos', '-')} | {100 * ev['success_rate']:.0f}% "
            f"({ev['successes']}/{ev['n_episodes']}) | {100 * lo:.0f}-{100 * hi:.0f}% | {ev['mean_episode_length']:.1f} | "
            f"{'-' if train_s is None else f'{train_s:.0f}'} | {'-' if p50 is None else f'{p50:.1f}'} |"
        )
    return "\n".join(lines)
