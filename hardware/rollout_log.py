"""Per-rollout log: stage latencies, loop jitter, frame age, reflexes, recoveries, safety clamps,
backend incidents (planner re-plans, joint-limit stops).

One `RolloutLog` per episode. The runner adds one sample per stage per control step; `summary()`
gives p50/p99 per stage and the counters as a plain dict (printed, and written as JSON next to
the rollout so a high clamp rate or a slow stage is visible after the fact).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toto_robot import atomic

# Stages timed per control step, in loop order [ms].
STAGES = ("capture_wait", "state", "preprocess", "inference", "command", "capture_to_command", "oldest_frame_to_command",
          "frame_age", "period")


def percentiles(values: list[float] | np.ndarray) -> dict[str, float]:
    """{"p50", "p99", "max", "mean", "n"} of `values` (NaN entries skipped; zeros when empty)."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"p50": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "n": 0}
    return {
        "p50": float(np.percentile(a, 50)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
        "n": int(a.size),
    }


@dataclass
class RolloutLog:
    """Samples and counters of one rollout. Times in ms unless named otherwise."""

    control_hz: float
    samples: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    reflexes: Counter = field(default_factory=Counter)
    recoveries: int = 0
    overruns: int = 0  # inference not done by the command deadline
    missed_cycles: int = 0  # ticks skipped because the loop fell behind its schedule
    steps: int = 0
    commands_sent: int = 0
    safety_counts: dict[str, int] = field(default_factory=dict)
    robot_events: dict[str, int] = field(default_factory=dict)  # backend incidents this rollout (planner re-plans...)
    events: list[str] = field(default_factory=list)
    stop_reason: str = ""
    duration_s: float = 0.0

    def add(self, stage: str, value_ms: float) -> None:
        self.samples[stage].append(float(value_ms))

    def event(self, message: str) -> None:
        self.events.append(message)

    @property
    def achieved_hz(self) -> float:
        """1 / mean tick period (ticks lost to missed cycles lengthen the mean)."""
        periods = self.samples.get("period", [])
        return 1e3 / float(np.mean(periods)) if periods else 0.0

    def summary(self) -> dict[str, Any]:
        period_ms = 1e3 / self.control_hz
        periods = np.asarray(self.samples.get("period", []))
        jitter = percentiles(np.abs(periods - period_ms)) if periods.size else percentiles([])
        steps = max(1, self.safety_counts.get("steps", 0))
        return {
            "stop_reason": self.stop_reason,
            "steps": self.steps,
            "commands_sent": self.commands_sent,
            "duration_s": round(self.duration_s, 3),
            "control_hz": self.control_hz,
            "achieved_hz": round(self.achieved_hz, 3),
            "overruns": self.overruns,
            "missed_cycles": self.missed_cycles,
            "reflexes": dict(self.reflexes),
            "recoveries": self.recoveries,
            "robot_events": dict(self.robot_events),
            "safety": {**self.safety_counts, "clamp_rate": self.safety_counts.get("clamped", 0) / steps},
            "latency_ms": {s: percentiles(self.samples[s]) for s in STAGES if s in self.samples},
            "loop_jitter_ms": jitter,
            "events": list(self.events),
        }

    def format_table(self) -> str:
        """Human-readable latency table + counters (printed at the end of a rollout)."""
        s = self.summary()
        lines = [f"{'stage':<20}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"]
        for stage, p in s["latency_ms"].items():
            lines.append(f"{stage:<20}{p['p50']:>9.2f}{p['p99']:>9.2f}{p['max']:>9.2f}")
        safety = s["safety"]
        lines.append(
            f"rate {s['achieved_hz']:.2f}/{self.control_hz:g} Hz, steps {s['steps']}, sent {s['commands_sent']}, "
            f"overruns {s['overruns']}, missed cycles {s['missed_cycles']}, jitter p99 {s['loop_jitter_ms']['p99']:.2f} ms"
        )
        lines.append(
            f"safety: refused {safety.get('refused', 0)}, clamped {safety.get('clamped', 0)} "
            f"(rate {safety['clamp_rate']:.1%}); reflexes {s['reflexes'] or 'none'}, recoveries {s['recoveries']}"
        )
        if s["robot_events"]:
            lines.append(f"robot: {s['robot_events']}")
        lines.append(f"stop: {s['stop_reason']}")
        return "\n".join(lines)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as JSON through a temp file + rename (never a half-written log)."""
    return atomic.write_json(path, obj, default=_jsonable)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)
