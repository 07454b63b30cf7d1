"""Preflight checks before a session on the robot: one PASS / WARN / FAIL line per item.

Package versions, MuJoCo GL backend and render rate, torch device, connected RealSense cameras
(serials, firmware), and given a robot host: TCP reachability of the controller and a short
communication-quality test (state reads: latency and controller-clock progress).
"""

from __future__ import annotations

import importlib.metadata
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

PACKAGES = ("numpy", "torch", "torchvision", "mujoco", "gymnasium", "zarr", "numcodecs", "hydra-core", "safetensors")
HARDWARE_PACKAGES = ("franky-control", "franky-sim", "pyrealsense2", "pyspacemouse")
LIBFRANKA_PORT = 1337  # the controller's command port (libfranka)

_BOX_XML = """<mujoco><worldbody><light pos="0 0 3"/><geom type="plane" size="1 1 .1"/>
<body pos="0 0 .2"><freejoint/><geom type="box" size=".05 .05 .05" rgba=".8 .2 .2 1"/></body>
<camera name="cam" pos="0.6 0 0.4" xyaxes="0 1 0 -0.5 0 0.85"/></worldbody></mujoco>"""


@dataclass
class DoctorConfig:
    robot_host: str = ""  # "" = skip the robot checks
    realtime_config: str = "ignore"  # "enforce" on a real robot with a PREEMPT_RT kernel
    comm_samples: int = 100  # state reads in the communication test
    max_state_read_ms: float = 20.0  # FAIL when the p99 state read takes longer
    render_frames: int = 50
    render_size: int = 128
    require_cameras: int = 0  # FAIL when fewer RealSense cameras are connected


@dataclass
class Check:
    status: str  # PASS | WARN | FAIL
    item: str
    detail: str

    def line(self) -> str:
        return f"[{self.status}] {self.item}: {self.detail}"


def check_packages() -> Iterator[Check]:
    for name in PACKAGES + HARDWARE_PACKAGES:
        try:
            version = importlib.metadata.version(name)
            yield Check("PASS", f"package {name}", version)
        except importlib.metadata.PackageNotFoundError:
            status = "FAIL" if name in PACKAGES else "WARN"
            yield Check(status, f"package {name}", "not installed" + ("" if status == "FAIL" else " (hardware extra)"))


def check_mujoco(frames: int, size: int) -> Iterator[Check]:
    os.environ.setdefault("MUJOCO_GL", "egl" if not os.environ.get("DISPLAY") else "glfw")
    backend = os.environ["MUJOCO_GL"]
    try:
        import mujoco

        model = mujoco.MjModel.from_xml_string(_BOX_XML)
        data = mujoco.MjData(model)
        with mujoco.Renderer(model, size, size) as renderer:
            renderer.update_scene(data, camera="cam")
            renderer.render()  # first frame compiles shaders
            t0 = time.perf_counter()
            for _ in range(frames):
                mujoco.mj_step(model, data)
                renderer.update_scene(data, camera="cam")
                image = renderer.render()
            dt = time.perf_counter() - t0
        if image.mean() == 0:
            yield Check("FAIL", "mujoco render", f"MUJOCO_GL={backend}: black frames")
            return
        yield Check("PASS", "mujoco render", f"MUJOCO_GL={backend}, {frames / dt:.0f} frames/s at {size}px (simple scene)")
    except Exception as e:
        yield Check("FAIL", "mujoco render", f"MUJOCO_GL={backend}: {type(e).__name__}: {e}")


def check_torch() -> Iterator[Check]:
    import torch

    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    else:
        device = f"cpu ({torch.get_num_threads()} threads)"
    x = torch.randn(256, 256)
    t0 = time.perf_counter()
    for _ in range(10):
        x = torch.tanh(x @ x)
    ms = (time.perf_counter() - t0) * 100
    yield Check("PASS", "torch device", f"{device}; torch {torch.__version__}; 256x256 matmul {ms:.2f} ms")


def check_cameras(required: int) -> Iterator[Check]:
    try:
        from hardware.realsense import list_devices

        devices = list_devices()
    except Exception as e:  # pyrealsense2 missing or libusb absent
        yield Check("FAIL" if required else "WARN", "realsense", f"{type(e).__name__}: {e}")
        return
    for d in devices:
        yield Check("PASS", f"realsense {d['serial']}", f"{d['name']}, firmware {d['firmware']}, USB {d['usb'] or '?'}")
    if len(devices) < max(1, required):
        status = "FAIL" if len(devices) < required else "WARN"
        yield Check(status, "realsense", f"{len(devices)} camera(s) connected, {required} required")


def check_robot(cfg: DoctorConfig) -> Iterator[Check]:
    host = cfg.robot_host
    t0 = time.perf_counter()
    try:
        with socket.create_connection((host, LIBFRANKA_PORT), timeout=2.0):
            pass
    except OSError as e:
        yield Check("FAIL", f"robot {host} reachable", f"TCP {LIBFRANKA_PORT}: {e}")
        return
    yield Check("PASS", f"robot {host} reachable", f"TCP {LIBFRANKA_PORT} connect {(time.perf_counter() - t0) * 1e3:.1f} ms")
    yield from _comm_quality(cfg)


def _comm_quality(cfg: DoctorConfig) -> Iterator[Check]:
    from hardware.franky_robot import FrankyConfig, FrankyRobot

    robot = FrankyRobot(FrankyConfig(host=cfg.robot_host, realtime_config=cfg.realtime_config, use_gripper=False))
    try:
        t0 = time.perf_counter()
        robot.connect()
        connect_ms = (time.perf_counter() - t0) * 1e3
        lat, clock = [], []
        for _ in range(cfg.comm_samples):
            t = time.perf_counter()
            state = robot.get_state()
            lat.append((time.perf_counter() - t) * 1e3)
            clock.append(state.t_device if state.t_device is not None else np.nan)
        p50, p99 = np.percentile(lat, [50, 99])
        advancing = bool(np.all(np.diff(np.asarray(clock)) > 0)) if len(clock) > 1 else False
        ok = state.ok and advancing and p99 < cfg.max_state_read_ms
        detail = (f"connect {connect_ms:.0f} ms, {cfg.comm_samples} state reads p50 {p50:.2f} ms p99 {p99:.2f} ms "
                  f"(limit {cfg.max_state_read_ms:g}), "
                  f"controller clock {'advancing' if advancing else 'NOT advancing'}, mode {state.mode}, errors {list(state.errors) or 'none'}")
        yield Check("PASS" if ok else "FAIL", f"robot {cfg.robot_host} communication", detail)
    except Exception as e:
        yield Check("FAIL", f"robot {cfg.robot_host} communication", f"{type(e).__name__}: {e}")
    finally:
        robot.close()


def run_checks(cfg: DoctorConfig, emit: Callable[[Check], None] = lambda c: print(c.line(), flush=True)) -> list[Check]:
    """All checks in order, each emitted as it completes; returns them."""
    groups = [check_packages(), check_mujoco(cfg.render_frames, cfg.render_size), check_torch(), check_cameras(cfg.require_cameras)]
    if cfg.robot_host:
        groups.append(check_robot(cfg))
    results = []
    for group in groups:
        for check in group:
            emit(check)
            results.append(check)
    return results
