"""Scripted expert and contact physics: success, slips and a long hold on held-out seeds.

    python bench/expert_quality.py [--episodes 200] [--hold-episodes 30] [--hold-s 7]

Runs `envs.expert.ScriptedExpert` (noise 0.05, as collection uses) on `--episodes` evaluation
seeds (disjoint from the training seeds) without cameras (physics only) and prints:
- success rate (target >= 98%) and steps per success;
- slip episodes (target <= 2%): after the grasp has settled (the expert lifts), the cube leaves
  the fingers: a finger loses contact on two steps in a row, the cube moves more than 5 mm
  relative to the TCP, or the expert has to grasp again;
- the first `--hold-episodes` successes are then held still (zero motion, gripper closed) for
  `--hold-s` seconds: cubes still held (target all) and creep of the cube relative to the TCP.
Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from envs.cube_pick import CubePickEnv  # noqa: E402
from envs.expert import ScriptedExpert  # noqa: E402
from envs.seeds import eval_seeds  # noqa: E402

SLIP_SHIFT = 0.005  # m of cube motion relative to the TCP that counts as a slip


def run_episode(env: CubePickEnv, expert: ScriptedExpert, seed: int, hold_steps: int) -> dict[str, float]:
    """One expert episode; after success, `hold_steps` steps of holding still."""
    obs, _ = env.reset(seed=seed)
    expert.reset(seed=seed)
    slip, lost, grasp_rel, success_at = False, 0, None, None
    hold = np.array([0, 0, 0, 0, 0, 0, 1.0], np.float32)
    creep = held = float("nan")
    for k in range(env.cfg.episode_len):
        phase_before = expert.phase
        action = hold if success_at is not None else expert.select_action(obs)
        obs, _, _, _, info = env.step(action)
        rel = env.cube_pose()[0] - obs["eef_pos"]
        if phase_before == "lift" and expert.phase == "approach":
            slip = True  # the expert lost the cube and goes back for it
        if expert.phase == "lift" or success_at is not None:
            if grasp_rel is None:
                grasp_rel = rel
            lost = 0 if info["grasped"] else lost + 1
            slip |= lost >= 2 or np.linalg.norm(rel - grasp_rel) > SLIP_SHIFT
        if success_at is None and info["is_success"]:
            success_at, hold_rel = k + 1, rel
            if hold_steps == 0:
                break
        if success_at is not None and k + 1 - success_at >= hold_steps:
            creep = float(np.linalg.norm(rel - hold_rel))
            held = float(info["grasped"] and info["cube_height"] >= env.cfg.success.lift_height)
            break
    return {"success": success_at is not None, "steps": success_at or env.cfg.episode_len, "slip": slip,
            "creep": creep, "held": held}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--hold-episodes", type=int, default=30)
    p.add_argument("--hold-s", type=float, default=7.0)
    p.add_argument("--noise", type=float, default=0.05)
    args = p.parse_args()
    probe = CubePickEnv(cameras=[])
    hold_steps = int(round(args.hold_s * probe.cfg.control_hz))
    print(f"machine: {platform.node()} ({platform.machine()}, {os.cpu_count()} cpus), load {os.getloadavg()[0]:.1f}; "
          f"sim_dt {probe.cfg.sim_dt * 1e3:g} ms, {probe.cfg.substeps} substeps, action {probe.action_convention.to_dict()}")
    probe.close()
    # Episodes are long enough for the hold; success no longer ends them (the hold is timed after it).
    env = CubePickEnv(cameras=[], terminate_on_success=False, episode_len=100 + hold_steps)
    expert = ScriptedExpert(env, noise=args.noise)
    rows, t0 = [], time.perf_counter()
    for i, seed in enumerate(tqdm(eval_seeds(args.episodes), desc="expert")):
        rows.append(run_episode(env, expert, seed, hold_steps if i < args.hold_episodes else 0))
    wall = time.perf_counter() - t0
    n = len(rows)
    wins = [r for r in rows if r["success"]]
    slips = sum(r["slip"] for r in rows)
    held = [r for r in rows[: args.hold_episodes] if r["success"]]
    held_ok = sum(r["held"] == 1.0 for r in held)
    creep = np.array([r["creep"] for r in held]) * 1e3
    ok = len(wins) / n >= 0.98 and slips / n <= 0.02 and held_ok == len(held) == args.hold_episodes
    print(f"success {len(wins)}/{n} = {len(wins) / n:.1%} (target >= 98%), mean {np.mean([r['steps'] for r in wins]):.1f} "
          f"steps to success; slip episodes {slips}/{n} = {slips / n:.1%} (target <= 2%)")
    print(f"held still for {args.hold_s:g} s after success: {held_ok}/{len(held)} cubes still held and lifted "
          f"(target {args.hold_episodes}/{args.hold_episodes}); creep relative to the TCP median {np.median(creep):.2f} mm, "
          f"max {creep.max():.2f} mm; {wall:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
