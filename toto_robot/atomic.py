"""Files written whole or not at all: a temp file beside the target, then one rename.

A reader (or a crash) never sees half a report, log, table or plot.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _tmp(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | os.PathLike, obj: Any, default: Callable[[Any], Any] = str) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=default))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Save a matplotlib figure (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = _tmp(path)
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path
