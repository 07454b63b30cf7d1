"""Intel RealSense cameras through pyrealsense2: colour (+ optional depth) in a capture thread.

Exposure and white balance are set explicitly with the auto modes off by default (auto modes
drift between episodes and make frames from two days incomparable); the values actually read
back from the device are in `metadata()`, which is stored with every dataset and rollout.

Frames come from a `FrameSource`: a `PipelineSource` (a camera by serial number, or a recording
played back with `enable_device_from_file`) or a `SoftwareDeviceSource` (an `rs.software_device`
fed by the caller; `rs.pipeline` cannot open those, so they are read through an `rs.syncer`).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyrealsense2 as rs

from hardware.camera import CameraConfig, CameraError, CameraFrame, ThreadedCamera

log = logging.getLogger(__name__)


@dataclass
class RealSenseConfig(CameraConfig):
    """One RealSense. `serial` empty = the only connected camera; `playback_file` replays a recording."""

    type: str = "realsense"
    serial: str = ""
    playback_file: str = ""
    depth: bool = False
    auto_exposure: bool = False
    exposure_us: float = 156.0  # colour sensor exposure [us]; ignored when auto_exposure
    gain: float = 64.0
    auto_white_balance: bool = False
    white_balance_k: float = 4600.0  # [K]; ignored when auto_white_balance


def list_devices() -> list[dict[str, str]]:
    """Connected RealSense cameras: name, serial, firmware, USB type (empty list if none)."""
    out = []
    for dev in rs.context().query_devices():
        info = {}
        for key, field in (("name", rs.camera_info.name), ("serial", rs.camera_info.serial_number),
                           ("firmware", rs.camera_info.firmware_version), ("usb", rs.camera_info.usb_type_descriptor)):
            info[key] = dev.get_info(field) if dev.supports(field) else ""
        out.append(info)
    return out


class FrameSource(ABC):
    """Where a RealSenseCamera's frames come from."""

    @abstractmethod
    def start(self, cfg: RealSenseConfig) -> None: ...

    @abstractmethod
    def wait(self, timeout_s: float) -> rs.composite_frame | None:
        """Next frameset, or None on timeout."""

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def device(self) -> rs.device: ...

    @abstractmethod
    def color_profile(self) -> rs.video_stream_profile: ...

    def depth_profile(self) -> rs.video_stream_profile | None:
        return None


class PipelineSource(FrameSource):
    """A physical camera (by serial) or a `.db3` recording played back, via `rs.pipeline`."""

    def __init__(self) -> None:
        self._pipe: rs.pipeline | None = None
        self._profile: rs.pipeline_profile | None = None

    def start(self, cfg: RealSenseConfig) -> None:
        rc = rs.config()
        if cfg.playback_file:
            rc.enable_device_from_file(cfg.playback_file, repeat_playback=False)
        else:
            if cfg.serial:
                rc.enable_device(cfg.serial)
            rc.enable_stream(rs.stream.color, cfg.width, cfg.height, rs.format.rgb8, cfg.fps)
            if cfg.depth:
                rc.enable_stream(rs.stream.depth, cfg.width, cfg.height, rs.format.z16, cfg.fps)
        self._pipe = rs.pipeline()
        try:
            self._profile = self._pipe.start(rc)
        except RuntimeError as e:
            what = f"recording {cfg.playback_file}" if cfg.playback_file else f"camera serial {cfg.serial or '(any)'}"
            raise CameraError(f"cannot start RealSense {what} at {cfg.width}x{cfg.height}@{cfg.fps}: {e}") from None
        if cfg.playback_file:
            # Not real time: every recorded frame is delivered, paced by the reader.
            self._profile.get_device().as_playback().set_real_time(False)

    def wait(self, timeout_s: float) -> rs.composite_frame | None:
        assert self._pipe is not None
        ok, frames = self._pipe.try_wait_for_frames(max(1, int(timeout_s * 1e3)))
        return frames if ok else None

    def stop(self) -> None:
        if self._pipe is not None:
            self._pipe.stop()
            self._pipe = None

    def device(self) -> rs.device:
        assert self._profile is not None
        return self._profile.get_device()

    def color_profile(self) -> rs.video_stream_profile:
        assert self._profile is not None
        return self._profile.get_stream(rs.stream.color).as_video_stream_profile()

    def depth_profile(self) -> rs.video_stream_profile | None:
        assert self._profile is not None
        try:
            return self._profile.get_stream(rs.stream.depth).as_video_stream_profile()
        except RuntimeError:
            return None


class SoftwareDeviceSource(FrameSource):
    """An `rs.software_device` whose sensor the caller feeds with `on_video_frame`, read via a syncer."""

    def __init__(self, device: rs.software_device, sensor: rs.software_sensor, color: rs.stream_profile) -> None:
        self._device, self._sensor, self._color = device, sensor, color
        self._sync: rs.syncer | None = None

    def start(self, cfg: RealSenseConfig) -> None:
        self._sync = rs.syncer()
        self._sensor.open(self._color)
        self._sensor.start(self._sync)

    def wait(self, timeout_s: float) -> rs.composite_frame | None:
        assert self._sync is not None
        ok, frames = self._sync.try_wait_for_frames(max(1, int(timeout_s * 1e3)))
        return frames if ok else None

    def stop(self) -> None:
        if self._sync is not None:
            self._sensor.stop()
            self._sensor.close()
            self._sync = None

    def device(self) -> rs.device:
        return self._device

    def color_profile(self) -> rs.video_stream_profile:
        return self._color.as_video_stream_profile()


class RealSenseCamera(ThreadedCamera):
    """RealSense colour (+ depth) at `fps` with explicit exposure/white balance. Frames are RGB uint8."""

    Config = RealSenseConfig

    def __init__(self, config: RealSenseConfig, name: str = "camera", source: FrameSource | None = None) -> None:
        super().__init__(config, name)
        self.config: RealSenseConfig = config
        self._source = source or PipelineSource()
        self._meta: dict[str, Any] = {}

    def _open(self) -> None:
        self._source.start(self.config)
        try:
            self._meta = self._configure_and_describe()
        except BaseException:
            self._source.stop()
            raise

    def _grab(self, timeout_s: float) -> CameraFrame | None:
        frames = self._source.wait(timeout_s)
        if frames is None:
            return None
        t_host = time.monotonic()
        color = frames.get_color_frame()
        if not color:
            return None
        image = np.asanyarray(color.get_data())
        fmt = color.get_profile().format()
        if fmt == rs.format.bgr8:
            image = image[..., ::-1]
        elif fmt != rs.format.rgb8:
            raise CameraError(f"camera {self.name!r}: colour format {fmt} unsupported (need rgb8 or bgr8)")
        depth = None
        if self.config.depth:
            d = frames.get_depth_frame()
            depth = np.array(d.get_data(), dtype=np.uint16, copy=True) if d else None
        # Copy: the SDK reuses its buffers once the frame object is released.
        return CameraFrame(
            color=np.array(image, dtype=np.uint8, copy=True),
            t_device=color.get_timestamp() * 1e-3,
            t_host=t_host,
            frame_number=int(color.get_frame_number()),
            depth=depth,
        )

    def _release(self) -> None:
        self._source.stop()

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), **self._meta, "frames_discarded_at_start": self.frames_discarded}

    # -- settings ------------------------------------------------------------------------
    def _configure_and_describe(self) -> dict[str, Any]:
        cfg, dev = self.config, self._source.device()
        sensor = dev.first_color_sensor() if not isinstance(dev, rs.software_device) else dev.query_sensors()[0]
        wanted = [
            (rs.option.enable_auto_exposure, float(cfg.auto_exposure)),
            (rs.option.enable_auto_white_balance, float(cfg.auto_white_balance)),
        ]
        if not cfg.auto_exposure:
            wanted += [(rs.option.exposure, cfg.exposure_us), (rs.option.gain, cfg.gain)]
        if not cfg.auto_white_balance:
            wanted.append((rs.option.white_balance, cfg.white_balance_k))
        playback = dev.is_playback()
        for opt, value in wanted:
            if not sensor.supports(opt):
                continue
            if playback or sensor.is_option_read_only(opt):
                continue  # a recording keeps the values it was recorded with (read back below)
            try:
                sensor.set_option(opt, value)
            except RuntimeError as e:
                raise CameraError(f"camera {self.name!r}: cannot set {opt} = {value}: {e}") from None
        settings = {opt.name: float(sensor.get_option(opt)) for opt, _ in wanted if sensor.supports(opt)}

        def info(field: rs.camera_info) -> str:
            return dev.get_info(field) if dev.supports(field) else ""

        color = self._source.color_profile()
        meta: dict[str, Any] = {
            "serial": info(rs.camera_info.serial_number),
            "model": info(rs.camera_info.name),
            "firmware": info(rs.camera_info.firmware_version),
            "playback_file": cfg.playback_file,
            "color": _profile_dict(color),
            "sensor_settings": settings,
        }
        depth = self._source.depth_profile()
        if depth is not None:
            meta["depth"] = _profile_dict(depth)
            meta["depth_to_color_extrinsics"] = _extrinsics_dict(depth.get_extrinsics_to(color))
            try:
                meta["depth_scale_m"] = dev.first_depth_sensor().get_depth_scale()  # m per z16 unit
            except RuntimeError:  # recordings without a depth sensor
                meta["depth_scale_m"] = None
        return meta


def _profile_dict(p: rs.video_stream_profile) -> dict[str, Any]:
    k = p.get_intrinsics()
    return {
        "width": k.width,
        "height": k.height,
        "fps": p.fps(),
        "format": str(p.format()).split(".")[-1],
        "intrinsics": {"fx": k.fx, "fy": k.fy, "ppx": k.ppx, "ppy": k.ppy, "model": str(k.model).split(".")[-1], "coeffs": list(k.coeffs)},
    }


def _extrinsics_dict(e: rs.extrinsics) -> dict[str, list[float]]:
    return {"rotation": list(e.rotation), "translation": list(e.translation)}
