"""franky-sim on a loopback address: a MuJoCo FR3 that speaks the real libfranka protocol.

Used by the tests, the benches and `sim=true` rehearsals so the franky backend is exercised end
to end without a robot. Its world is the cube_pick world (`toto_robot.scene`: table, cube,
cameras, light, contact settings, the decimated robot meshes) so a rehearsal renders the views
and runs the contacts a policy was trained on; franky-sim keeps its own 1 kHz torque control of
the arm. Two ways to run it:

- `SimServer(...)` in this process (`start()` / `stop()`, or a context manager): fast to start
  (~1 s), gives access to the MuJoCo model/data (cube pose, rendering);
- `SimServerProcess(...)` in a child process (`python -m hardware.franky_sim_server`): can be
  killed mid-motion to test a lost connection.

The simulator binds fixed ports (libfranka's 1337 + the gripper's) on its address, so two
simulators need two addresses: `free_loopback_host()` finds an unused 127.0.0.x. Only loopback
addresses are accepted: the simulator enforces no safety and must never be reachable from outside.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

LIBFRANKA_PORT = 1337
ROBOT_PREFIX = "robot0_"  # franky-sim prefixes the names of its first robot's bodies and joints


def check_loopback(host: str) -> str:
    """`host` if it is a loopback IP address, else ValueError."""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"franky-sim must bind a loopback address (127.x.y.z), got {host!r}")


def _port_free(host: str, port: int = LIBFRANKA_PORT) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As the simulator does: TIME_WAIT leftovers of earlier clients must not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_loopback_host(first: int = 1, last: int = 64) -> str:
    """First 127.0.0.x (x in [first, last]) whose libfranka port is free."""
    for x in range(first, last + 1):
        host = f"127.0.0.{x}"
        if _port_free(host):
            return host
    raise RuntimeError(f"no free loopback address in 127.0.0.{first}-{last} (port {LIBFRANKA_PORT} taken)")


def _use_world(sim: Any, cube: bool, cameras: bool) -> None:
    """Replace franky-sim's scene around its robot (ground, lights) by the cube_pick world.

    franky-sim compiles its MJCF tree (`sim.scene`) when the server starts; the tree is edited
    through `mujoco.MjSpec` with the same `add_world` the env uses and written back in place.
    """
    import mujoco

    from toto_robot.scene import MESH_DIR, add_world

    spec = mujoco.MjSpec.from_string(ET.tostring(sim.scene, encoding="unicode"))
    for item in [*spec.worldbody.geoms, *spec.worldbody.lights]:  # franky-sim's ground plane and lights
        spec.delete(item)
    spec.meshdir = str(MESH_DIR)  # the decimated visual meshes the env renders (same file names)
    add_world(spec, prefix=ROBOT_PREFIX, cube=cube, cameras=cameras)
    root = ET.fromstring(spec.to_xml())
    sim.scene.clear()
    sim.scene.attrib.update(root.attrib)
    sim.scene.extend(list(root))


class SimServer:
    """franky-sim (MuJoCo) serving one FR3 + hand in the cube_pick world on a loopback address, in this process.

    realtime: True runs the 1 kHz loop at wall-clock speed (needed for timing measurements);
    False runs as fast as the CPU allows (~3x, fine for functional tests). cube / camera: add the
    cube / the scene's cameras ("agentview", "wrist") to the world (the table is always there).
    """

    def __init__(self, host: str | None = "127.0.0.1", realtime: bool = True, cube: bool = False, camera: bool = False,
                 initial_q: tuple[float, ...] | None = None) -> None:
        self.host = check_loopback(host) if host else free_loopback_host()
        self._any_host = not host  # another process may take self.host first: then bind the next free one
        self.realtime = realtime
        self._cube, self._camera = cube, camera
        self._initial_q = initial_q
        self._sim: Any = None
        self._server: Any = None
        self._renderer: Any = None
        self._pending: list[Any] = []  # edits (callables) run between two physics steps

    def start(self) -> SimServer:
        from franky_sim import SimulationServer
        from franky_sim.mujoco_simulator import MujocoSimulator

        if not self._any_host and not _port_free(self.host):
            raise RuntimeError(f"{self.host}:{LIBFRANKA_PORT} is in use (another franky-sim?); use host=None for a free one")
        first = int(self.host.rsplit(".", 1)[1])
        candidates = [f"127.0.0.{x}" for x in range(first, 65)] if self._any_host else [self.host]
        self._sim = MujocoSimulator()
        kwargs = {"initial_q": self._initial_q} if self._initial_q is not None else {}
        self._sim.add_robot(**kwargs)
        _use_world(self._sim, self._cube, self._camera)
        self._sim.init()
        self._sim.register_pre_step_callback(self._apply_pending)
        self._server = SimulationServer(self._sim, hostname_candidates=candidates)
        self._server.init()  # binds the first candidate it can
        self.host = self._server.robot_servers[0].hostname
        self._server.run_async(realtime=self.realtime)
        log.info("franky-sim serving on %s (realtime=%s)", self.host, self.realtime)
        return self

    def stop(self) -> None:
        """Stop the loop and close the sockets (clients see the connection drop)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._sim is not None and self._sim.is_initialized and not self._sim.is_cleaned_up:
            self._sim.cleanup()
        self._sim = None

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    @property
    def model(self) -> Any:
        return self._sim.model

    @property
    def data(self) -> Any:
        return self._sim.data

    def cube_pos(self) -> np.ndarray:
        """(3,) m, world = robot base frame."""
        return np.array(self.data.xpos[self._cube_body()])

    @property
    def has_cube(self) -> bool:
        return self._cube

    def cube_lift(self) -> float:
        """Height [m] of the cube's bottom above the table (0 when it rests on the table)."""
        return float(self.cube_pos()[2] - 0.5 * self.cube_size())

    def reset_cube(self) -> None:
        """The cube back at rest in its nominal place (`toto_robot.scene`)."""
        from toto_robot.scene import CUBE_CENTER, CUBE_HALF

        self.place_cube([*CUBE_CENTER, CUBE_HALF], [1.0, 0.0, 0.0, 0.0], 2 * CUBE_HALF)

    def cube_size(self) -> float:
        """Edge length [m] of the cube."""
        return 2.0 * float(self.model.geom_size[self.model.geom("cube").id][0])

    def place_cube(self, pos: np.ndarray, quat: np.ndarray, size: float, timeout_s: float = 5.0) -> None:
        """Put the cube (edge `size` [m]) at rest at pos (3,) [m], quat (4,) w-x-y-z, between two
        physics steps of the server thread (e.g. where a recorded episode had it)."""
        from toto_robot.scene import place_cube

        self._cube_body()
        pos, quat, half = np.asarray(pos, float).copy(), np.asarray(quat, float).copy(), 0.5 * float(size)
        self._edit(lambda: place_cube(self.model, self.data, pos, quat, half), timeout_s)

    def _cube_body(self) -> int:
        import mujoco

        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "cube")
        if bid < 0:
            raise RuntimeError("this simulator was started without a cube (cube=True)")
        return bid

    def _edit(self, fn: Any, timeout_s: float) -> None:
        """Run `fn` on the server thread before its next physics step; wait for it (its error is raised here)."""
        done, errors = threading.Event(), []

        def run() -> None:
            try:
                fn()
            except Exception as e:  # raised in the caller's thread, never in the simulation loop
                errors.append(e)
            done.set()

        self._pending.append(run)
        if not done.wait(timeout_s):
            raise RuntimeError(f"franky-sim did not step within {timeout_s} s (is it running?)")
        if errors:
            raise errors[0]

    def _apply_pending(self, sim: Any) -> None:
        while self._pending:
            self._pending.pop(0)()

    def render(self, camera: str = "agentview", height: int = 128, width: int = 128) -> np.ndarray:
        """HxWx3 uint8 from a scene camera (needs MUJOCO_GL=egl or osmesa headless).

        Reads the live MjData while the server thread steps it: a frame may mix two 1 ms steps.
        """
        import mujoco

        if self._renderer is None or (self._renderer.height, self._renderer.width) != (height, width):
            self._renderer = mujoco.Renderer(self.model, height, width)
        self._renderer.update_scene(self.data, camera=camera)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # 4096^2 shadow map costs ~30 ms
        return self._renderer.render()

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class SimServerProcess:
    """franky-sim in a child process; `kill()` simulates a controller that dies mid-motion."""

    def __init__(self, host: str | None = "127.0.0.1", realtime: bool = True, cube: bool = False, timeout_s: float = 30.0) -> None:
        self.host = check_loopback(host) if host else "auto"  # the child binds a free one and reports it
        self.realtime, self.cube, self.timeout_s = realtime, cube, timeout_s
        self.proc: subprocess.Popen | None = None

    def start(self) -> SimServerProcess:
        cmd = [sys.executable, "-m", "hardware.franky_sim_server", "--host", self.host]
        cmd += ["--realtime"] if self.realtime else []
        cmd += ["--cube"] if self.cube else []
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
        deadline = time.monotonic() + self.timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                self.host = line.split()[1]
                return self
            if not line and self.proc.poll() is not None:
                break
        self.kill()
        raise RuntimeError(f"franky-sim subprocess on {self.host} did not start within {self.timeout_s} s")

    def kill(self) -> None:
        """SIGKILL: no goodbye on the sockets, like a controller losing power."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> SimServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m hardware.franky_sim_server --host 127.0.0.1 [--realtime] [--cube] [--camera]`."""
    p = argparse.ArgumentParser(description="franky-sim (MuJoCo FR3 + hand in the cube_pick world) on a loopback address")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.x.y.z); 'auto' for a free one")
    p.add_argument("--realtime", action="store_true", help="run the 1 kHz loop at wall-clock speed")
    p.add_argument("--cube", action="store_true", help="add the 5 cm cube in front of the robot")
    p.add_argument("--camera", action="store_true", help="add the scene cameras ('agentview', 'wrist')")
    args = p.parse_args(argv)
    server = SimServer(None if args.host == "auto" else args.host, realtime=args.realtime, cube=args.cube, camera=args.camera)
    server.start()
    print(f"READY {server.host}", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
