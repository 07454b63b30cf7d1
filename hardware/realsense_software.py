"""A pyrealsense2 software device: a RealSense the host feeds with its own images.

Used to run the real RealSense code path without a camera: frames rendered by a simulator or
synthesised are pushed into the SDK and come out through `RealSenseCamera` exactly as a USB
camera's would (same frame objects, timestamps, formats, options). `record()` writes an SDK
recording (`.db3`) that `RealSenseCamera` plays back through `rs.pipeline`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pyrealsense2 as rs

from hardware.realsense import RealSenseConfig, RealSenseCamera, SoftwareDeviceSource


class SoftwareRealSense:
    """Colour-only software RealSense with writable exposure / white-balance options."""

    def __init__(self, width: int = 640, height: int = 480, fps: int = 30, serial: str = "SW000001",
                 fx: float = 600.0, fy: float = 600.0) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        self.device.register_info(rs.camera_info.firmware_version, "0.0.0.0")
        self.sensor = self.device.add_sensor("RGB Camera")
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = rs.stream.color, 0, 0
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = width, height, fps, 3, rs.format.rgb8
        k = rs.intrinsics()
        k.width, k.height, k.fx, k.fy, k.ppx, k.ppy = width, height, fx, fy, width / 2, height / 2
        k.model, k.coeffs = rs.distortion.none, [0.0] * 5
        vs.intrinsics = k
        self.profile = self.sensor.add_video_stream(vs)
        for opt, lo, hi, default in ((rs.option.enable_auto_exposure, 0, 1, 1), (rs.option.exposure, 1, 10000, 156),
                                     (rs.option.gain, 0, 128, 64), (rs.option.enable_auto_white_balance, 0, 1, 1),
                                     (rs.option.white_balance, 2800, 6500, 4600)):
            # Fields set by name: option_range's positional binding swaps step and default in 2.59.
            r = rs.option_range()
            r.min, r.max, r.step, r.default = lo, hi, 1, default
            self.sensor.add_option(opt, r, True)
        self._n = 0

    def push(self, image: np.ndarray, t_device_s: float | None = None) -> None:
        """Deliver one HxWx3 uint8 RGB frame; `t_device_s` defaults to frame_number / fps."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(f"expected ({self.height}, {self.width}, 3) uint8, got {image.shape} {image.dtype}")
        f = rs.software_video_frame()
        f.pixels = np.ascontiguousarray(image)
        f.bpp, f.stride = 3, self.width * 3
        f.timestamp = (self._n / self.fps if t_device_s is None else t_device_s) * 1e3
        f.domain = rs.timestamp_domain.hardware_clock
        f.frame_number = self._n
        f.profile = self.profile.as_video_stream_profile()
        self.sensor.on_video_frame(f)
        self._n += 1

    def camera(self, config: RealSenseConfig | None = None, name: str = "camera") -> RealSenseCamera:
        """The project's camera class reading this device."""
        cfg = config or RealSenseConfig(width=self.width, height=self.height, fps=self.fps)
        return RealSenseCamera(cfg, name=name, source=SoftwareDeviceSource(self.device, self.sensor, self.profile))

    def record(self, path: str | os.PathLike, images: Iterable[np.ndarray], pace: bool = True) -> Path:
        """Write `images` to an SDK recording at `path` (.db3); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        recorder = rs.recorder(str(path), self.device)
        sensor = recorder.query_sensors()[0]
        received: list[int] = []
        sensor.open(sensor.get_stream_profiles()[0])
        sensor.start(lambda fr: received.append(fr.get_frame_number()))
        sent = 0
        for image in images:
            self.push(image)
            sent += 1
            if pace:  # the recorder writes on its own thread; do not outrun it
                time.sleep(0.5 / self.fps)
        _wait_until(lambda: len(received) >= sent, 5.0)
        sensor.stop()
        sensor.close()
        del sensor, recorder  # the file is finalised when the recorder is destroyed
        return path


def _wait_until(cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
