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

COLUMNS = ("encoder", "layer", "pool", "metric", "score", "val_loss", "rmse", "pos_err_mm", "yaw_err_deg")
ERRORS = {"pos_err_mm": "median position error [mm]", "yaw_err_deg": "median yaw error mod 90 [deg]"}


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


def _cell(r: ProbeResult) -> str:
    if r.pos_err_mm is not None:
        return f"{r.pos_err_mm:.1f} mm" + (f" / {r.yaw_err_deg:.1f} deg" if r.yaw_err_deg is not None else "") + f" (R2 {r.score:.3f})"
    return f"{r.score:.4f}" + (f" (rmse {r.rmse:.4f})" if r.rmse is not None else "")


def markdown_table(results: Sequence[ProbeResult], title: str) -> str:
    """One row per layer, one column per (encoder, pool); the best score per column in bold.
    Cube-pose probes show the median position / yaw errors with R^2 beside them."""
    columns = list(dict.fromkeys((r.encoder, r.pool) for r in results))
    several = len({e for e, _ in columns}) > 1
    layers = sorted({r.layer for r in results})
    metric = results[0].metric if results else "score"
    best = {c: max(r.score for r in results if (r.encoder, r.pool) == c) for c in columns}
    by_key = {(r.layer, r.encoder, r.pool): r for r in results}
    pose = bool(results) and results[0].pos_err_mm is not None
    unit = "position / yaw error" if pose and results[0].yaw_err_deg is not None else ("position error" if pose else metric)
    names = [f"{e + ' ' if several else ''}{p} {unit}" for e, p in columns]
    lines = [f"### {title}", "", "| layer | " + " | ".join(names) + " |", "|---|" + "---|" * len(columns)]
    for layer in layers:
        cells = []
        for c in columns:
            r = by_key.get((layer, *c))
            cells.append("" if r is None else (f"**{_cell(r)}**" if r.score == best[c] else _cell(r)))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(results: Sequence[ProbeResult], path: Path, title: str) -> None:
    keys = [k for k in ERRORS if results and getattr(results[0], k) is not None] or ["score"]
    fig, axes = plt.subplots(1, len(keys), figsize=(6 * len(keys), 4), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        for encoder, pool in dict.fromkeys((r.encoder, r.pool) for r in results):
            pts = sorted((r.layer, getattr(r, key)) for r in results if (r.encoder, r.pool) == (encoder, pool))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{encoder} {pool} pool",
                    linestyle="--" if encoder == "random_init" else "-")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel(ERRORS.get(key, results[0].metric if results else "score"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
