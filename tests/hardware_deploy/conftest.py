"""Fixtures for the deploy tests: software RealSense feeders, franky-sim servers, small stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from hardware.realsense_software import SoftwareRealSense


def indexed_frame(i: int, height: int, width: int) -> np.ndarray:
    """Frame whose pixels encode `i` (R = i % 256, G = i // 256) over a fixed gradient in B."""
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = i % 256
    img[..., 1] = i // 256
    img[..., 2] = (np.arange(width)[None, :] * 255 // max(1, width - 1)).astype(np.uint8)
    return img


class Feeder:
    """Pushes `indexed_frame(n)` into a software RealSense at its fps on a thread until stopped."""

    def __init__(self, sw: SoftwareRealSense, make: Callable[[int], np.ndarray] | None = None) -> None:
        self.sw = sw
        self.make = make or (lambda i: indexed_frame(i, sw.height, sw.width))
        self.pushed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.monotonic()
        while not self._stop.is_set():
            self.sw.push(self.make(self.pushed))
            self.pushed += 1
            delay = t0 + self.pushed / self.sw.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def start(self) -> Feeder:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)


@pytest.fixture(name="indexed_frame")
def indexed_frame_fixture() -> Callable[[int, int, int], np.ndarray]:
    return indexed_frame


@pytest.fixture
def software_camera() -> Iterator[tuple[SoftwareRealSense, Feeder]]:
    sw = SoftwareRealSense(width=160, height=120, fps=30, serial="SW123456")
    feeder = Feeder(sw).start()
    yield sw, feeder
    feeder.stop()
