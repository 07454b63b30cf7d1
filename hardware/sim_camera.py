"""A camera rendering a franky-sim scene camera: the `sim=true` path of deploy/teleop/replay.

Frames come from the MuJoCo scene the simulator steps (the cube_pick world's "agentview" and
"wrist" cameras, `toto_robot.scene`), rendered on a capture thread like any other camera, so the
runner's watchdogs, timestamps and preprocessing are exercised as on the real robot. Frames are
due on the *simulator's* clock (t_device = simulated time), at twice the 10 Hz control rate by
default: a step triggered by this camera always finds a frame newer than its tick within half a
period, and a simulator that falls behind real time on a loaded CPU is not starved further by
renders of scenes that have not moved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from hardware.camera import CameraConfig, CameraFrame, ThreadedCamera


@dataclass
class SimRenderConfig(CameraConfig):
    type: str = "franky_sim"
    scene_camera: str = "agentview"
    width: int = 128
    height: int = 128
    fps: int = 20  # >= 2x the control rate; the decimated meshes render in ~7 ms a frame on one core
    warmup_frames: int = 1


class SimRenderCamera(ThreadedCamera):
    """Renders `scene_camera` of a running `SimServer` at `fps` (t_device = simulator time)."""

    Config = SimRenderConfig
    NEEDS = ("sim",)

    def __init__(self, config: SimRenderConfig, name: str = "camera", sim: Any = None) -> None:
        super().__init__(config, name)
        self.config: SimRenderConfig = config
        self.sim = sim
        self._n = 0
        self._next = 0.0
        self._renderer: Any = None  # made and closed on the capture thread (its GL context lives there)

    def _open(self) -> None:
        self._n, self._next = 0, float(self.sim.data.time)

    def _grab(self, timeout_s: float) -> CameraFrame | None:
        deadline = time.monotonic() + timeout_s
        while float(self.sim.data.time) < self._next:  # the next frame is due on the simulator's clock
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.002)
        t_sim = float(self.sim.data.time)
        image = self._render()
        frame = CameraFrame(color=image, t_device=t_sim, t_host=time.monotonic(), frame_number=self._n)
        self._n += 1
        self._next = max(self._next + 1.0 / self.config.fps, t_sim)  # behind: skip, never burst
        return frame

    def _render(self) -> Any:
        import mujoco

        cfg = self.config
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.sim.model, cfg.height, cfg.width)
        self._renderer.update_scene(self.sim.data, camera=cfg.scene_camera)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False  # the default shadow map costs ~30 ms
        return self._renderer.render()

    def _thread_exit(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _release(self) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().metadata(), "scene_camera": cfg.scene_camera, "width": cfg.width, "height": cfg.height, "fps": cfg.fps}
