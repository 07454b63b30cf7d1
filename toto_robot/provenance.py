"""Which code made a file: recorded in episode stores and policy checkpoints."""

from __future__ import annotations

import subprocess
from pathlib import Path


def code_version() -> dict[str, str]:
    """toto_robot version and the git commit of this checkout (if it is one)."""
    import toto_robot

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"toto_robot": toto_robot.__version__, "git_commit": commit or "unknown"}
