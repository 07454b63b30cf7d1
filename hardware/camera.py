"""Camera interface: a background capture thread writing a latest-frame ring buffer.

The control loop never waits on a camera: `read_latest(max_age_ms)` returns the newest frame
at once or raises `StaleFrameError` when the newest one is too old, which the runner's watchdog
turns into a safe stop. Every frame carries two monotonic timestamps: `t_device` (the camera's
own clock) and `t_host` (`time.monotonic()` when the host received it).

Backends subclass `ThreadedCamera` and implement `_open`, `_grab`, `_release`; each has its own
config dataclass and is registered by name in `CAMERAS` (imported lazily, so the runner does not
need pyrealsense2 unless a RealSense is configured).
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from toto_robot.config import as_dataclass
from toto_robot.preprocess import prepare_image
from toto_robot.registry import Registry

log = logging.getLogger(__name__)

CAMERAS = Registry("camera")
CAMERAS.register("realsense", "hardware.realsense:RealSenseCamera")
CAMERAS.register("synthetic", "hardware.camera:SyntheticCamera")
CAMERAS.register("franky_sim", "hardware.sim_camera:SimRenderCamera")


class CameraError(RuntimeError):
    """A camera could not be opened, stopped delivering, or was misconfigured."""


class StaleFrameError(CameraError):
    """The newest frame is older than the caller allows (or there is none yet)."""


@dataclass(frozen=True)
class CameraFrame:
    """One captured frame. `color`: HxWx3 uint8 RGB; `depth`: HxW uint16 (units in metadata) or None.

    t_device [s]: the camera's own capture clock (not comparable across devices);
    t_host [s]: `time.monotonic()` when the host received the frame.
    """

    color: np.ndarray
    t_device: float
    t_host: float
    frame_number: int
    depth: np.ndarray | None = None

    def age_ms(self, now: float | None = None) -> float:
        return ((time.monotonic() if now is None else now) - self.t_host) * 1e3


@dataclass
class CameraConfig:
    """Fields every camera backend has. `type` names the backend in `CAMERAS`."""

    type: str = "synthetic"
    width: int = 640
    height: int = 480
    fps: int = 30
    buffer_size: int = 8  # frames kept in the ring buffer
    warmup_frames: int = 15  # frames always discarded after start
    warmup_max_s: float = 3.0  # give up waiting for a stable stream after this long
    stable_tol: float = 2.0  # mean-intensity change (0-255) between frames counted as settled
    connect_timeout_s: float = 5.0


class Camera(ABC):
    """One camera. Use as a context manager or call `connect()` / `close()`."""

    def __init__(self, config: CameraConfig, name: str = "camera") -> None:
        self.config = config
        self.name = name

    @abstractmethod
    def connect(self) -> None:
        """Open the device, start capture, discard frames until the stream is stable."""

    @abstractmethod
    def read(self, timeout_s: float = 1.0, newer_than: float | None = None) -> CameraFrame:
        """Block until a frame not yet returned by `read` (and received after host time
        `newer_than` [s, monotonic], if given) arrives; StaleFrameError after `timeout_s`."""

    @abstractmethod
    def read_latest(self, max_age_ms: float) -> CameraFrame:
        """Newest frame without waiting; StaleFrameError if older than `max_age_ms` or none yet."""

    @abstractmethod
    def close(self) -> None:
        """Stop capture and release the device; safe to call twice."""

    def metadata(self) -> dict[str, Any]:
        """What a dataset must remember about this camera (serial, intrinsics, exposure...)."""
        return {"name": self.name, "type": self.config.type}

    def __enter__(self) -> Camera:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedCamera(Camera):
    """Capture thread + ring buffer shared by all backends."""

    def __init__(self, config: CameraConfig, name: str = "camera") -> None:
        super().__init__(config, name)
        self._buffer: deque[CameraFrame] = deque(maxlen=max(1, config.buffer_size))
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._last_read = -1
        self.frames_received = 0
        self.frames_discarded = 0

    # -- backend hooks -------------------------------------------------------------------
    @abstractmethod
    def _open(self) -> None:
        """Open the device and start streaming (called on the caller's thread)."""

    @abstractmethod
    def _grab(self, timeout_s: float) -> CameraFrame | None:
        """Next frame from the device (called on the capture thread); None on timeout."""

    @abstractmethod
    def _release(self) -> None:
        """Stop streaming and free the device."""

    # -- public API ----------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def connect(self) -> None:
        if self.is_running:
            return
        self._stop.clear()
        self._error = None
        self._ready = threading.Event()
        self._open()
        # Warm-up runs on the capture thread too: some backends (GL rendering) must stay on one thread.
        self._thread = threading.Thread(target=self._capture_loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        cfg = self.config
        self._ready.wait(max(cfg.warmup_max_s, cfg.connect_timeout_s) + 2.0)
        if self._error is not None or not self._ready.is_set():
            error = self._error
            self.close()
            if isinstance(error, CameraError):
                raise error
            raise CameraError(f"camera {self.name!r} did not start: {error or 'warm-up timed out'}") from error

    def read(self, timeout_s: float = 1.0, newer_than: float | None = None) -> CameraFrame:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while (
                not self._buffer
                or self._buffer[-1].frame_number == self._last_read
                or (newer_than is not None and self._buffer[-1].t_host <= newer_than)
            ):
                self._raise_if_failed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StaleFrameError(f"camera {self.name!r}: no new frame within {timeout_s:.2f} s")
                self._cond.wait(left)
            frame = self._buffer[-1]
            self._last_read = frame.frame_number
            return frame

    def read_latest(self, max_age_ms: float) -> CameraFrame:
        with self._cond:
            self._raise_if_failed()
            if not self._buffer:
                raise StaleFrameError(f"camera {self.name!r}: no frame received yet")
            frame = self._buffer[-1]
        age = frame.age_ms()
        if age > max_age_ms:
            raise StaleFrameError(f"camera {self.name!r}: newest frame is {age:.0f} ms old (limit {max_age_ms:.0f} ms)")
        return frame

    def frames(self) -> list[CameraFrame]:
        """Copy of the ring buffer, oldest first (for aligning observations by timestamp)."""
        with self._cond:
            return list(self._buffer)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            if self._thread.is_alive():
                log.warning("camera %s: capture thread did not stop within 2 s", self.name)
            self._thread = None
            self._release()

    # -- internals -----------------------------------------------------------------------
    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise CameraError(f"camera {self.name!r} capture failed: {self._error}") from self._error

    def _warm_up(self) -> None:
        """Discard `warmup_frames`, then frames until mean intensity settles (exposure converged)."""
        cfg = self.config
        deadline = time.monotonic() + max(cfg.warmup_max_s, cfg.connect_timeout_s)
        discarded, prev = 0, None
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                if discarded == 0:
                    raise CameraError(f"camera {self.name!r}: no frame within {cfg.connect_timeout_s:.1f} s of start")
                log.warning("camera %s: stream not stable after %d frames; using it anyway", self.name, discarded)
                break
            frame = self._grab(min(left, 1.0))
            if frame is None:
                continue
            mean = float(frame.color.mean())
            if discarded >= cfg.warmup_frames and prev is not None and abs(mean - prev) <= cfg.stable_tol:
                self._push(frame)
                break
            prev = mean
            discarded += 1
        self.frames_discarded = discarded

    def _push(self, frame: CameraFrame) -> None:
        with self._cond:
            self._buffer.append(frame)
            self.frames_received += 1
            self._cond.notify_all()

    def _capture_loop(self) -> None:
        try:
            self._warm_up()
            self._ready.set()
            while not self._stop.is_set():
                frame = self._grab(0.1)
                if frame is not None:
                    self._push(frame)
        except BaseException as e:  # surfaced to the reader; the thread must not die silently
            log.error("camera %s: capture thread failed: %s", self.name, e)
            with self._cond:
                self._error = e
                self._cond.notify_all()
        finally:
            self._thread_exit()

    def _thread_exit(self) -> None:
        """Called last on the capture thread: free what must be freed on the thread that made it."""


@dataclass
class SyntheticCameraConfig(CameraConfig):
    """Frames drawn on the host: a moving gradient, for dry runs, benches and tests."""

    type: str = "synthetic"
    seed: int = 0
    stop_after_s: float = 0.0  # > 0: stop delivering after this long (simulates a dead camera)


class SyntheticCamera(ThreadedCamera):
    """Camera without hardware: paced at `fps`, deterministic images from `frame_number`."""

    Config = SyntheticCameraConfig

    def __init__(self, config: SyntheticCameraConfig, name: str = "camera") -> None:
        super().__init__(config, name)
        self.config: SyntheticCameraConfig = config
        self._n = 0
        self._t0 = 0.0
        self._base = np.random.default_rng(config.seed).integers(0, 256, (config.height, config.width, 3), dtype=np.uint8)

    def _open(self) -> None:
        self._n = 0
        self._t0 = time.monotonic()

    def _grab(self, timeout_s: float) -> CameraFrame | None:
        cfg = self.config
        t_due = self._t0 + self._n / cfg.fps
        if cfg.stop_after_s > 0 and t_due - self._t0 > cfg.stop_after_s:
            time.sleep(timeout_s)
            return None
        wait = t_due - time.monotonic()
        if wait > timeout_s:
            time.sleep(timeout_s)
            return None
        if wait > 0:
            time.sleep(wait)
        color = self.render(self._n)
        frame = CameraFrame(color=color, t_device=t_due - self._t0, t_host=time.monotonic(), frame_number=self._n)
        self._n += 1
        return frame

    def render(self, n: int) -> np.ndarray:
        """Frame `n`: the fixed noise image rolled by n pixels (so consecutive frames differ)."""
        return np.roll(self._base, n, axis=1)

    def _release(self) -> None:
        pass

    def metadata(self) -> dict[str, Any]:
        cfg = self.config
        return {**super().metadata(), "width": cfg.width, "height": cfg.height, "fps": cfg.fps, "seed": cfg.seed}


def build_camera(name: str, cfg: Mapping[str, Any] | Any, **resources: Any) -> Camera:
    """Camera `name` from a config node whose `type` selects the backend in `CAMERAS`.

    `resources` (e.g. `sim=` a running franky-sim server) go to backends that declare them in `NEEDS`.
    """
    kind = cfg.get("type") if hasattr(cfg, "get") else None
    if not kind:
        raise CameraError(f"camera {name!r}: config needs a 'type', one of {CAMERAS.names()}")
    cls = CAMERAS.get(kind)
    needs = {k: resources.get(k) for k in getattr(cls, "NEEDS", ())}
    missing = [k for k, v in needs.items() if v is None]
    if missing:
        raise CameraError(f"camera {name!r} of type {kind!r} needs {missing} (e.g. run with sim=true)")
    return cls(as_dataclass(cls.Config, cfg), name=name, **needs)


def build_cameras(rig: Mapping[str, Any], **resources: Any) -> dict[str, Camera]:
    """obs key (e.g. "agentview_image") -> camera, from the `camera` config group."""
    return {str(key): build_camera(str(key), node, **resources) for key, node in rig.items()}


def to_observation(frame: CameraFrame, size: int) -> np.ndarray:
    """Camera frame -> policy image (size x size x 3 uint8), the same function sim observations use."""
    return prepare_image(frame.color, size)
