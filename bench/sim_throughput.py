"""cube_pick throughput: env steps/s per core, bare MuJoCo for comparison, collection time.

    python bench/sim_throughput.py [--steps 300] [--demos 100] [--workers 2]

Prints, for one 128x128 camera and 10 physics substeps per control step: control steps/s of
the env in "realistic" and "fast" render modes (one process = one core), the same scene stepped
and rendered with bare MuJoCo calls, their ratio (env-layer overhead), and the wall time to
collect `--demos` expert demonstrations of 100 steps with two cameras using `--workers`
processes. Targets (2-core CPU box): realistic >= 120/s, fast >= 350/s, overhead <= 1.3x,
100 demos <= 120 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from envs.collect import CollectConfig, collect_demos  # noqa: E402
from envs.config import CubePickConfig  # noqa: E402
from envs.cube_pick import CubePickEnv  # noqa: E402
from envs.expert import ScriptedExpert  # noqa: E402
from toto_robot.config import as_dataclass  # noqa: E402

TARGETS = {"realistic": 120.0, "fast": 350.0}


def measure(mode: str, steps: int, rounds: int = 8) -> dict[str, float]:
    """Env steps/s and bare-MuJoCo steps/s on the same motion, interleaved in `rounds` blocks.

    The env is driven by the scripted expert (only `env.step` is timed). The bare baseline then
    replays each recorded step from the same state with plain MuJoCo calls: the same joint
    set-point ramp written to `data.ctrl` at each of the 10 substeps, `mj_step`, `update_scene`,
    `render`; so both do the same physics (contacts included) and draw the same scene. Rates use
    this process's CPU time (all threads, llvmpipe's included), so other jobs on a shared machine
    count less; wall-clock rates are reported too.
    """
    env = CubePickEnv(render_mode=mode, cameras=["agentview"], render_size=128, substeps=10)
    expert = ScriptedExpert(env, noise=0.05)
    model, data = env.model, env.data
    cam = model.camera("agentview").id
    arm = slice(0, 7)  # arm actuators are ctrl[0:7], the hand ctrl[7]
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
            state, q_prev = env.get_state(), data.ctrl[arm].copy()
            c, w = time.process_time(), time.perf_counter()
            obs, _, terminated, truncated, _ = env.step(action)
            t["env_cpu"] += time.process_time() - c
            t["env_wall"] += time.perf_counter() - w
            record.append((state, q_prev, data.ctrl.copy()))
            done = terminated or truncated
        end_state = env.get_state()
        for state, q_prev, ctrl in record:
            env.reset_to(state)
            ramp = [q_prev + (i + 1) / 10 * (ctrl[arm] - q_prev) for i in range(10)]
            data.ctrl[7] = ctrl[7]
            c, w = time.process_time(), time.perf_counter()
            for q in ramp:
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
    args = p.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.1f}, MUJOCO_GL={os.environ['MUJOCO_GL']}, mujoco {mujoco.__version__}")
    print(f"config: one 128x128 camera, {CubePickConfig().substeps} substeps, sim_dt {CubePickConfig().sim_dt * 1e3:.0f} ms")
    for mode in ("realistic", "fast"):
        r = measure(mode, args.steps)
        rate, bare = r["env_rate_cpu"], r["bare_rate_cpu"]
        print(f"{mode:9s}: env {rate:6.0f} steps/s per CPU-second (target >= {TARGETS[mode]:.0f}: "
              f"{'ok' if rate >= TARGETS[mode] else 'MISSED'}; wall {r['env_rate_wall']:.0f}/s) | "
              f"bare MuJoCo physics+render {bare:6.0f}/s (wall {r['bare_rate_wall']:.0f}/s) | "
              f"overhead {bare / rate:.2f}x (target <= 1.3: {'ok' if bare / rate <= 1.3 else 'MISSED'}) | "
              f"{r['triangles']} mesh triangles")
    if args.demos:
        s = collection_time(args.demos, args.workers)
        scaled = s["total_s"] * 100 / args.demos
        print(f"collection: {s['n_episodes']} demos x 100 steps x 2 cameras (128px, realistic), {args.workers} workers: "
              f"{s['total_s']:.1f} s incl. worker start ({s['frames_per_s']:.0f} frames/s, success {s['success_rate']:.0%}); "
              f"100 demos ~ {scaled:.0f} s (target <= 120: {'ok' if scaled <= 120 else 'MISSED'})")


if __name__ == "__main__":
    main()
