"""Sim/robot parity, short: full-scale actions in the env and on FrankyRobot + franky-sim move the
hand the same distance per step (bench/sim_robot_parity.py --quick, paced on the controller clock)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_full_scale_actions_move_sim_and_robot_alike():
    pytest.importorskip("franky")
    proc = subprocess.run([sys.executable, "bench/sim_robot_parity.py", "--quick", "--steps", "6", "--tail", "4",
                           "--band", "0.8", "1.25"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.endswith(" ok")]
    assert len(rows) == 8, proc.stdout  # translations x/y/z, diagonal, rotations x/y/z, gripper toggles
    assert "8/8 sequences within 0.8-1.25" in proc.stdout  # the defect this guards was 2x; 0.9-1.1 is the bench target
