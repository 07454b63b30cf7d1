"""Probe sweep outputs: a CSV and a markdown table of every (layer, pool) score, and a PNG plot."""

from __future__ import annotations

import csv
import io
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from pretrain.probe.sweep import ProbeResult  # noqa: E402

COLUMNS = ("layer", "pool", "metric", "score", "val_loss", "rmse")


def write_report(results: Sequence[ProbeResult], out_dir: Path, title: str) -> dict[str, Path]:
    """results.csv, results.md and score_vs_layer.png under out_dir; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    paths = {"csv": out_dir / "results.csv", "markdown": out_dir / "results.md", "plot": out_dir / "score_vs_layer.png"}
    _write_text(paths["csv"], buf.getvalue())
    _write_text(paths["markdown"], markdown_table(results, title))
    _plot(results, paths["plot"], title)
    return paths


def markdown_table(results: Sequence[ProbeResult], title: str) -> str:
    """One row per layer, one column per pool kind; the best score per pool in bold."""
    pools = list(dict.fromkeys(r.pool for r in results))
    layers = sorted({r.layer for r in results})
    metric = results[0].metric if results else "score"
    best = {p: max(r.score for r in results if r.pool == p) for p in pools}
    by_key = {(r.layer, r.pool): r for r in results}
    lines = [f"### {title}", "", f"| layer | " + " | ".join(f"{p} {metric}" for p in pools) + " |",
             "|---|" + "---|" * len(pools)]
    for layer in layers:
        cells = []
        for p in pools:
            r = by_key.get((layer, p))
            text = "" if r is None else f"{r.score:.4f}" + (f" (rmse {r.rmse:.4f})" if r.rmse is not None else "")
            cells.append(f"**{text}**" if r is not None and r.score == best[p] else text)
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: Sequence[ProbeResult], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for pool in dict.fromkeys(r.pool for r in results):
        pts = sorted((r.layer, r.score) for r in results if r.pool == pool)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{pool} pool")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(results[0].metric if results else "score")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
