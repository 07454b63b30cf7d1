"""cube_pick throughput: env steps/s per core, bare MuJoCo for comparison, collection time.

    python bench/sim_throughput.py [--steps 300] [--demos 100] [--workers 2] [--baseline DIR]

Prints, for one 128x128 camera and the env's physics substeps per control step: control steps/s
of the env in "realistic" and "fast" render modes (one process = one core), the same scene
stepped and rendered with bare MuJoCo calls, their ratio (env-layer overhead), and the wall time
to collect `--demos` expert demonstrations of 100 steps with two cameras using `--workers`
processes. Targets (2-core CPU box): overhead <= 1.3x, 100 demos <= 120 s; absolute rates
depend on the CPU and its load. `--baseline DIR` also times the env of another checkout of this
project (e.g. the commit before a change) in the same run, alternating with this one, and prints
the ratio: the way to compare speed across changes on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from envs.collect import CollectConfig, collect_demos  # noqa: E402
from envs.config import CubePickConfig  # noqa: E402
from envs.controller import ServoTrajectory  # noqa: E402
from envs.cube_pick import CubePickEnv  # noqa: E402
from envs.expert import ScriptedExpert  # noqa: E402
from toto_robot.config import as_dataclass  # noqa: E402

# Steps/s of the env measured alone: realistic and fast render modes, one 128x128 camera.
ENV_RATE = """
import os, sys, time
os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, os.getcwd())
from envs.cube_pick import CubePickEnv
from envs.expert import ScriptedExpert
env = CubePickEnv(render_mode=sys.argv[1], cameras=["agentview"], render_size=128)
expert = ScriptedExpert(env, noise=0.05)
obs, _ = env.reset(seed=0)
env.step(expert.select_action(obs))
cpu, seed, n = 0.0, 1, int(sys.argv[2])
for _ in range(n):
    a = expert.select_action(obs)
    c = time.process_time()
    obs, _, term, trunc, _ = env.step(a)
    cpu += time.process_time() - c
    if term or trunc:
        obs, _ = env.reset(seed=seed)
        expert.reset()
        seed += 1
print(n / cpu)
"""


def measure(mode: str, steps: int, rounds: int = 8) -> dict[str, float]:
    """Env steps/s and bare-MuJoCo steps/s on the same motion, interleaved in `rounds` blocks.

    The env is driven by the scripted expert (only `env.step` is timed). The bare baseline then
    replays each recorded step from the same state with plain MuJoCo calls: the env's joint
    set-points of each physics substep written to `data.ctrl`, `mj_step`, `update_scene`,
    `render`; so both do the same physics (contacts included) and draw the same scene. Rates use
    this process's CPU time (all threads, llvmpipe's included), so other jobs on a shared machine
    count less; wall-clock rates are reported too.
    """
    env = CubePickEnv(render_mode=mode, cameras=["agentview"], render_size=128)
    expert = ScriptedExpert(env, noise=0.05)
    model, data = env.model, env.data
    cam = model.camera("agentview").id
    arm = slice(0, 7)  # arm actuators are ctrl[0:7], the hand ctrl[7]
    servo = ServoTrajectory(env.servo.lag, env.servo.period, env.cfg.substeps)
    obs, _ = env.reset(seed=0)
    env.step(expert.select_action(obs))  # warm-up: GL context
    renderer = env._renderer
    t = {"env_cpu": 0.0, "env_wall": 0.0, "bare_cpu": 0.0, "bare_wall": 0.0}
    seed, done = 1, False
    per_round = max(1, steps // rounds)
    for _ in range(rounds):
        record = []
        for _ in range(per_round):
            if done:
                obs, _ = env.reset(seed=seed)
                expert.reset()
                seed += 1
            action = expert.select_action(obs)
            state = env.get_state()
            c, w = time.process_time(), time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            t["env_cpu"] += time.process_time() - c
            t["env_wall"] += time.perf_counter() - w
            servo.reset(state["servo_q"], state["servo_v"])
            record.append((state, servo.plan(env.servo.q), data.ctrl[7]))  # the set-points the env used
            done = terminated or truncated
        end_state = env.get_state()
        for state, setpoints, hand in record:
            env.reset_to(state)
            data.ctrl[7] = hand
            c, w = time.process_time(), time.perf_counter()
            for q in setpoints:
                data.ctrl[arm] = q
                mujoco.mj_step(model, data)
            renderer.update_scene(data, camera=cam)
            renderer.render()
            t["bare_cpu"] += time.process_time() - c
            t["bare_wall"] += time.perf_counter() - w
        obs = env.reset_to(end_state)
    n = per_round * rounds
    tris = int(sum(model.mesh_facenum))
    env.close()
    return {k.replace("_", "_rate_"): n / v for k, v in t.items()} | {"triangles": tris}


def compare_baseline(baseline: str, mode: str, steps: int, rounds: int = 4) -> tuple[float, float]:
    """Median env steps per CPU-second of this checkout and of `baseline`, alternating runs."""
    here, there = [], []
    for _ in range(rounds):
        for cwd, out in ((os.getcwd(), here), (baseline, there)):
            proc = subprocess.run([sys.executable, "-c", ENV_RATE, mode, str(steps)], cwd=cwd, capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": cwd}, check=True)
            out.append(float(proc.stdout.strip().splitlines()[-1]))
    return float(sorted(here)[len(here) // 2]), float(sorted(there)[len(there) // 2])


def collection_time(n_demos: int, workers: int) -> dict:
    out = tempfile.mkdtemp(prefix="bench_collect_")
    try:
        cfg = as_dataclass(CollectConfig, {
            "n_episodes": n_demos, "workers": workers, "out": os.path.join(out, "demos.zarr"), "progress": True,
            # Full-length episodes: keep holding the cube after success, as the budget assumes.
            "env": {"terminate_on_success": False, "episode_len": 100, "render_size": 128,
                    "cameras": ["agentview", "wrist"], "render_mode": "realistic"},
        })
        start = time.perf_counter()
        summary = collect_demos(cfg)
        summary["total_s"] = time.perf_counter() - start
        return summary
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=300, help="control steps timed per mode")
    p.add_argument("--demos", type=int, default=100, help="demonstrations collected (0 skips)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--baseline", default="", help="another checkout of this project to time in the same run")
    args = p.parse_args()
    cfg = CubePickConfig()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}, MUJOCO_GL={os.environ['MUJOCO_GL']}, mujoco {mujoco.__version__}")
    print(f"config: one 128x128 camera, {cfg.substeps} substeps, sim_dt {cfg.sim_dt * 1e3:g} ms")
    for mode in ("realistic", "fast"):
        r = measure(mode, args.steps)
        rate, bare = r["env_rate_cpu"], r["bare_rate_cpu"]
        print(f"{mode:9s}: env {rate:6.0f} steps/s per CPU-second (wall {r['env_rate_wall']:.0f}/s) | "
              f"bare MuJoCo physics+render {bare:6.0f}/s (wall {r['bare_rate_wall']:.0f}/s) | "
              f"overhead {bare / rate:.2f}x (target <= 1.3: {'ok' if bare / rate <= 1.3 else 'MISSED'}) | "
              f"{r['triangles']} mesh triangles")
        if args.baseline:
            here, there = compare_baseline(args.baseline, mode, args.steps)
            print(f"{'':9s}  this checkout {here:.0f} vs {args.baseline} {there:.0f} steps/s per CPU-second "
                  f"(alternating runs, medians): {here / there:.2f}x")
    if args.demos:
        s = collection_time(args.demos, args.workers)
        scaled = s["total_s"] * 100 / args.demos
        print(f"collection: {s['n_episodes']} demos x 100 steps x 2 cameras (128px, realistic), {args.workers} workers: "
              f"{s['total_s']:.1f} s incl. worker start ({s['frames_per_s']:.0f} frames/s, success {s['success_rate']:.0%}); "
              f"100 demos ~ {scaled:.0f} s (target <= 120: {'ok' if scaled <= 120 else 'MISSED'})")


if __name__ == "__main__":
    main()
