"""Soak test of the franky backend on franky-sim: a random, persistent action stream at 10 Hz.

    python bench/robot_soak.py [--seconds 60] [--seed 0] [--gripper-rate 0.1]

The stream is a clipped random walk over all 7 action dimensions (full-scale translations and
rotations that keep pushing into the faces and corners of the safety box), and the gripper
flips with probability `--gripper-rate` per step (every flip goes out: no debouncing), so grasp
and open commands overlap running ones. It checks the three ways such a stream used to go
wrong (issue 5): motion-planner errors on rotations, the arm leaving the workspace box, and an
overlapping gripper command blocking the process. Prints, with the machine:

- steps sent / refused, planner errors, reflexes, other robot errors;
- `send_action` call time p50 / p99 / max (a blocked gripper call shows here; calls that ended in
  a joint-limit stop, which waits for the arm to halt, are not counted);
- how far the *measured* end effector got outside the box, largest tilt from pointing-down, yaw
  and shoulder-to-wrist reach (against their limits), clamp counts;
- joint-limit stops (the backend stops the arm near a joint limit; the bench then homes it) and
  the closest any joint came to its limit;
- gripper commands submitted / coalesced / failed.

Targets never leave the box (the filter clips them); the *measured* hand can overshoot a face by
a little because franky-sim's joint servos lag their commands. Exit status 1 when anything goes
wrong: a robot error, a call > 50 ms, or the hand as far outside the box as the deploy runner's
stop margin. Joint-limit stops are the backend doing its job and are reported, not failures.
"""

from __future__ import annotations

import argparse
import collections
import logging
import platform
import time

import numpy as np

from hardware.franky_robot import FrankyConfig, FrankyRobot
from hardware.franky_sim_server import SimServerProcess
from hardware.robot import RobotError, RobotLimitError
from hardware.runner import RunnerConfig
from hardware.safety import SafetyConfig
from toto_robot.action import ActionConvention

CALL_LIMIT_MS = 50.0
OUTSIDE_LIMIT_M = RunnerConfig().workspace_stop_margin  # the deploy runner stops the arm this far outside


def random_walk(rng: np.random.Generator, a: np.ndarray, gripper_rate: float) -> np.ndarray:
    """Next action: arm part a clipped random walk (persists, so it presses into the box), gripper flips."""
    a[:6] = np.clip(a[:6] + rng.normal(0.0, 0.35, 6), -1.0, 1.0)
    if rng.random() < gripper_rate:
        a[6] = -a[6]
    return a


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0, help="length of the stream [s]")
    p.add_argument("--hz", type=float, default=10.0, help="control rate [Hz]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gripper-rate", type=float, default=0.1, help="probability of a gripper flip per step")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    safety = SafetyConfig(gripper_debounce_steps=1, gripper_min_interval_s=0.0)
    lo, hi = np.array(safety.workspace_min), np.array(safety.workspace_max)
    rng = np.random.default_rng(args.seed)
    period, steps = 1.0 / args.hz, int(args.seconds * args.hz)
    errors: collections.Counter[str] = collections.Counter()
    calls, outside, tilt, reach, joint_margin = [], [], [], [], []
    a = np.zeros(7)
    a[6] = -1.0
    print(f"machine: {platform.node()} ({platform.machine()}), {steps} steps at {args.hz} Hz, seed {args.seed}")
    with SimServerProcess(host=None, realtime=True) as sim:
        with FrankyRobot(FrankyConfig(host=sim.host, realtime_config="ignore", action=ActionConvention().at_rate(args.hz)), safety) as robot:
            robot.move_home()
            f = robot.safety
            sent = refused = limit_stops = 0
            q_lo, q_hi = np.array(robot.config.joint_lower), np.array(robot.config.joint_upper)
            t0 = time.monotonic()
            for k in range(steps):
                action = random_walk(rng, a, args.gripper_rate).astype(np.float32)
                t = time.monotonic()
                try:
                    cmd = robot.send_action(action)
                    calls.append((time.monotonic() - t) * 1e3)
                    sent += cmd.sent
                    refused += not cmd.sent
                except RobotLimitError as e:
                    limit_stops += 1
                    print(f"step {k}: {e}")
                    robot.move_home()  # what an operator does; the stream goes on from home
                except RobotError as e:
                    kind = "planner" if "planner" in str(e) else type(e).__name__
                    errors[kind] += 1
                    print(f"step {k}: {type(e).__name__}: {e}")
                    if robot.latched_reflex is not None and not robot.recover():
                        break
                s = robot.get_state()
                outside.append(float(np.max(np.maximum(lo - s.eef_pos, s.eef_pos - hi).clip(min=0.0))))
                tilt.append(f.orientation(s.eef_pos, s.eef_quat))
                reach.append(f.reach(s.eef_pos, s.eef_quat))
                joint_margin.append(float(np.min(np.minimum(s.joint_pos - q_lo, q_hi - s.joint_pos))))
                time.sleep(max(0.0, t0 + (k + 1) * period - time.monotonic()))
            elapsed = time.monotonic() - t0
            gripper = robot._gripper
            deadline = time.monotonic() + 5.0
            while gripper.busy and time.monotonic() < deadline:
                time.sleep(0.05)
            g_counts = dict(gripper.counts)
            g_failed = gripper.pop_error()
            clamps = dict(sorted(f.counts.items()))
            ok_end = robot.get_state().ok
    calls_a = np.array(calls)
    print(f"steps: {len(outside)} in {elapsed:.1f} s ({len(outside) / elapsed:.2f} Hz); sent {sent}, refused {refused}")
    print(f"errors: planner {errors['planner']}, reflexes {errors['RobotReflexError']}, "
          f"other {sum(errors.values()) - errors['planner'] - errors['RobotReflexError']}; controller ok at end: {ok_end}")
    print(f"send_action ms: p50 {np.percentile(calls_a, 50):.2f}  p99 {np.percentile(calls_a, 99):.2f}  max {calls_a.max():.2f}"
          f"  (limit {CALL_LIMIT_MS:.0f})")
    print(f"measured EE outside box: max {max(outside) * 100:.2f} cm at step {int(np.argmax(outside))} (limit {OUTSIDE_LIMIT_M * 100:.0f} cm); "
          f"tilt max {max(t for t, _ in tilt):.3f} rad (limit {safety.max_tilt}); |yaw| max {max(abs(y) for _, y in tilt):.3f} rad "
          f"(limit {safety.max_yaw}); reach max {max(reach):.3f} m (limit {safety.max_reach})")
    print(f"joint-limit stops (then homed): {limit_stops}; closest approach to a joint limit: {min(joint_margin):.3f} rad")
    print(f"clamps: {clamps}")
    print(f"gripper: {g_counts}; unreported failure: {g_failed}")
    bad = (sum(errors.values()) > 0 or calls_a.max() > CALL_LIMIT_MS or max(outside) > OUTSIDE_LIMIT_M
           or not ok_end or g_failed is not None)
    print("RESULT:", "FAIL" if bad else "PASS")
    return int(bad)


if __name__ == "__main__":
    raise SystemExit(main())
