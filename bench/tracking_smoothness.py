"""Smoothness of 10 Hz target tracking on franky-sim: smooth (waypoints with velocity) vs naive
(back-to-back asynchronous point-to-point motions).

    python bench/tracking_smoothness.py [--duration 2] [--speeds 0.1 0.2] [--rdfs 0.2 0.6]

Streams constant-velocity targets along base +y and back for each setting and prints, per mode:
stops between consecutive targets, lowest speed / stream speed, speed variation, max
acceleration and jerk of the end effector, tracking error, and naive/smooth ratios. franky-sim
runs in its own process at real time; on a loaded machine it runs slower than the wall clock,
so all figures use its clock (the realtime factor is printed).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform

import numpy as np

from hardware.franky_robot import FrankyConfig, FrankyRobot
from hardware.franky_sim_server import SimServerProcess
from hardware.tracking import TrackingConfig, stream_line
from toto_robot.action import ActionConvention

COLUMNS = ("stops", "min_speed_ratio", "speed_cv", "max_accel", "max_jerk", "tracking_error_rms", "realtime_factor")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=2.0, help="stream length per run [s] (at most 0.3 m of travel)")
    p.add_argument("--speeds", type=float, nargs="+", default=[0.1, 0.2], help="stream speeds [m/s]")
    p.add_argument("--rdfs", type=float, nargs="+", default=[0.2, 0.6], help="relative dynamics factors")
    p.add_argument("--hz", type=float, default=10.0, help="control rate [Hz]")
    args = p.parse_args()
    print(f"machine: {platform.node()} ({platform.processor() or platform.machine()}), control {args.hz} Hz")
    print(f"{'rdf':>4} {'v m/s':>6} {'mode':>7} " + " ".join(f"{c:>18}" for c in COLUMNS))
    with SimServerProcess(host=None, realtime=True) as sim:
        for rdf in args.rdfs:
            for speed in args.speeds:
                reports = {}
                for mode in ("naive", "smooth"):
                    cfg = FrankyConfig(host=sim.host, realtime_config="ignore", use_gripper=False,
                                       action=ActionConvention().at_rate(args.hz),
                                       tracking=TrackingConfig(mode=mode, relative_dynamics_factor=rdf))
                    with FrankyRobot(cfg) as robot:
                        robot.move_home()
                        # Along +y from the ready pose: stays inside the default workspace box.
                        rep = stream_line(robot, [0, 1, 0], speed, min(args.duration, 0.3 / speed))
                    reports[mode] = dataclasses.asdict(rep)
                    row = " ".join(f"{reports[mode][c]:>18.4g}" for c in COLUMNS)
                    print(f"{rdf:>4} {speed:>6} {mode:>7} {row}", flush=True)
                n, s = reports["naive"], reports["smooth"]
                ratios = {c: n[c] / s[c] if s[c] else float("inf") for c in ("speed_cv", "max_accel", "max_jerk")}
                print(f"{'':>19} naive/smooth: " + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items())
                      + f"; stops {n['stops']} vs {s['stops']} of {n['n_targets'] - 2} intervals")
    print(f"(numpy {np.__version__}; figures from the simulator's clock)")


if __name__ == "__main__":
    main()
