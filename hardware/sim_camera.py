"""A camera rendering a franky-sim scene camera: the `sim=true` path of deploy/teleop/replay.

Frames come from the MuJoCo scene the simulator steps (the cube_pick world's "agentview" and
"wrist" cameras, `toto_robot.scene`, the views the env renders). The render is triggered by the
control step: `read` and `read_latest` render the scene as it is at that moment, in the caller's
thread (t_device = simulated time, t_host = when it was rendered). So every step gets a frame
of its own tick, never a stale one, and a simulator that falls behind real time on a loaded CPU
is not starved further by renders of scenes that have not moved; the runner's watchdogs,
timestamps and preprocessing still run as with a real camera.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from hardware.camera import Camera, CameraConfig, CameraError, CameraFrame


@dataclass
class SimRenderConfig(CameraConfig):
    type: str = "franky_sim"
    scene_camera: str = "agentview"
    width: int = 128
    height: int = 128


class SimRenderCamera(Camera):
    """Renders `scene_camera` of a running `SimServer` whenever a frame is read."""

    Config = SimRenderConfig
    NEEDS = ("sim",)

    def __init__(self, config: SimRenderConfig, name: str = "camera", sim: Any = None) -> None:
        super().__init__(config, name)
        self.config: SimRenderConfig = config
        self.sim = sim
        self._n = 0
        self._renderer: Any = None  # made, used and closed in one thread: its GL context lives there
        self._thread: int | None = None

    def connect(self) -> None:
        import mujoco

        if mujoco.mj_name2id(self.sim.model, mujoco.mjtObj.mjOBJ_CAMERA, self.config.scene_camera) < 0:
            raise CameraError(f"camera {self.name!r}: franky-sim has no scene camera {self.config.scene_camera!r} "
                              "(start it with camera=True)")
        self._n = 0

    def read(self, timeout_s: float = 1.0, newer_than: float | None = None) -> CameraFrame:
        return self._frame()

    def read_latest(self, max_age_ms: float) -> CameraFrame:
        return self._frame()

    def close(self) -> None:
        if self._renderer is not None and self._thread == threading.get_ident():
            self._renderer.close()
        self._renderer = None

    def _frame(self) -> CameraFrame:
        import mujoco

        cfg = self.config
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.sim.model, cfg.height, cfg.width)
            self._thread = threading.get_ident()
        elif self._thread != threading.get_ident():
            raise CameraError(f"camera {self.name!r}: read from another thread than the one that rendered first")
        t_sim = float(self.sim.data.time)
        self._renderer.update_scene(self.sim.data, camera=cfg.scene_camera)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # the default shadow map costs ~30 ms
        frame = CameraFrame(color=self._renderer.render(), t_device=t_sim, t_host=time.monotonic(), frame_number=self._n)
        self._n += 1
        return frame

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().metadata(), "scene_camera": cfg.scene_camera, "width": cfg.width, "height": cfg.height,
                "rendered": "at each control step"}
