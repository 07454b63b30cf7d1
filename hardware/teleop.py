"""Teleoperation: a 3D SpaceMouse (pyspacemouse) or the keyboard, as a `Policy` for the runner.

The operator's device becomes a policy (`TeleopPolicy`), so teleoperated demonstrations run
through the same fixed-rate runner, safety filter and episode store as policy rollouts: same
keys, same spec attributes, same timestamps. Between episodes the arm returns home; after each
one the operator keeps, discards or redoes it (`collect_teleop`).

Keyboard (terminal, no window needed): w/s +x/-x, a/d +y/-y, r/f up/down, u/o roll, i/k pitch,
j/l yaw, space toggles the gripper, Enter ends the episode; then y keeps it, n discards it,
e redoes it. SpaceMouse: push/tilt the cap;
left button toggles the gripper, right button ends the episode.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from toto_robot.spec import ShapeMeta

log = logging.getLogger(__name__)

# key -> (action index, sign)
KEYMAP: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "u": (3, 1.0), "o": (3, -1.0), "i": (4, 1.0), "k": (4, -1.0), "j": (5, 1.0), "l": (5, -1.0),
}


@dataclass
class TeleopConfig:
    device: str = "auto"  # auto (SpaceMouse if one is connected, else keyboard) | spacemouse | keyboard
    translation_scale: float = 1.0  # action per unit input (1.0 = a full-scale step: 0.2 m/s at conf/action's defaults)
    rotation_scale: float = 1.0  # (1.0 = 0.4 rad/s)
    key_hold_s: float = 0.15  # a key press drives its axis this long (terminals repeat held keys ~30 Hz)
    deadzone: float = 0.05  # SpaceMouse inputs below this are zero
    key_stream: str = ""  # keyboard: read keys from this file / FIFO instead of the terminal (scripted sessions)


class TeleopDevice(ABC):
    """Operator input: a 6-D motion command in [-1, 1], a gripper toggle and an end-of-episode signal."""

    def __init__(self, config: TeleopConfig) -> None:
        self.config = config
        self.gripper_closed = False
        self.end_requested = False

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @abstractmethod
    def motion(self) -> np.ndarray:
        """(6,) [translation xyz, rotation xyz] in [-1, 1], base frame."""

    def action(self) -> np.ndarray:
        """(7,) float32 action per the shared convention (gripper > 0 = close)."""
        m = np.clip(self.motion(), -1.0, 1.0)
        m[:3] *= self.config.translation_scale
        m[3:] *= self.config.rotation_scale
        return np.array([*m, 1.0 if self.gripper_closed else -1.0], dtype=np.float32)

    def new_episode(self) -> None:
        self.end_requested = False

    def choose(self, prompt: str, choices: str) -> str:
        """Ask the operator for one of the single-letter `choices` (keep/discard/redo...)."""
        while True:
            answer = input(prompt).strip().lower()[:1]
            if answer in choices:
                return answer

    def __enter__(self) -> TeleopDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class KeyboardTeleop(TeleopDevice):
    """Reads single key presses from `stream` (the terminal, in cbreak mode) on a thread."""

    def __init__(self, config: TeleopConfig, stream: IO[str] | None = None) -> None:
        super().__init__(config)
        self.stream = stream or sys.stdin
        self._until = np.zeros(6)  # per axis: time (monotonic) until which it is driven
        self._sign = np.zeros(6)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._saved_tty: Any = None
        self._keys: queue.Queue[str] = queue.Queue()  # every key, for `choose`

    def start(self) -> None:
        if self.stream.isatty():
            import termios
            import tty

            self._saved_tty = termios.tcgetattr(self.stream.fileno())
            tty.setcbreak(self.stream.fileno())
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_keys, name="teleop-keyboard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._saved_tty is not None:
            import termios

            termios.tcsetattr(self.stream.fileno(), termios.TCSADRAIN, self._saved_tty)
            self._saved_tty = None

    def choose(self, prompt: str, choices: str) -> str:
        """Keys are already captured by the reader thread: take the answer from it, not input().

        Motion keys typed while driving are skipped, so `choices` must not be motion keys.
        """
        print(prompt, end="", flush=True)
        while True:
            key = self._keys.get()
            if key in choices:
                print(key)
                return key

    def press(self, key: str) -> None:
        """Handle one key (also how tests and scripted sessions drive it)."""
        self._keys.put(key)
        now = time.monotonic()
        with self._lock:
            if key in KEYMAP:
                axis, sign = KEYMAP[key]
                self._sign[axis] = sign
                self._until[axis] = now + self.config.key_hold_s
            elif key == " ":
                self.gripper_closed = not self.gripper_closed
            elif key in ("\n", "\r"):
                self.end_requested = True

    def motion(self) -> np.ndarray:
        with self._lock:
            return np.where(self._until > time.monotonic(), self._sign, 0.0)

    def _read_keys(self) -> None:
        fd = self.stream.fileno()
        while not self._stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            chunk = os.read(fd, 64).decode(errors="ignore")
            if not chunk:  # end of input
                return
            for key in chunk:
                self.press(key.lower())


class SpaceMouseTeleop(TeleopDevice):
    """3Dconnexion SpaceMouse through pyspacemouse (HID, Z-up right-handed axes)."""

    def __init__(self, config: TeleopConfig) -> None:
        super().__init__(config)
        self._device: Any = None
        self._buttons: list[int] = []

    def start(self) -> None:
        try:
            import pyspacemouse
        except ImportError as e:
            raise RuntimeError("SpaceMouse teleop needs `pip install pyspacemouse` (and libhidapi)") from e
        self._device = pyspacemouse.open(axis_convention=pyspacemouse.AxisConvention.HID_Z_UP)

    def stop(self) -> None:
        if self._device is not None:
            self._device.close()
            self._device = None

    def motion(self) -> np.ndarray:
        s = self._device.read()
        m = np.array([s.x, s.y, s.z, s.roll, s.pitch, s.yaw], dtype=np.float64)
        m[np.abs(m) < self.config.deadzone] = 0.0
        buttons = list(s.buttons)
        pressed = [b and not (self._buttons[i] if i < len(self._buttons) else 0) for i, b in enumerate(buttons)]
        self._buttons = buttons
        if len(pressed) > 0 and pressed[0]:
            self.gripper_closed = not self.gripper_closed
        if len(pressed) > 1 and pressed[1]:
            self.end_requested = True
        return m


def open_device(config: TeleopConfig) -> TeleopDevice:
    """The configured device; "auto" picks a connected SpaceMouse, else the keyboard."""
    if config.device == "keyboard" or config.key_stream:
        return KeyboardTeleop(config, open(config.key_stream) if config.key_stream else None)
    if config.device == "spacemouse":
        return SpaceMouseTeleop(config)
    if config.device != "auto":
        raise ValueError(f"teleop.device must be auto, spacemouse or keyboard, got {config.device!r}")
    with contextlib.suppress(Exception):
        import pyspacemouse

        if pyspacemouse.get_connected_devices():
            return SpaceMouseTeleop(config)
    log.info("no SpaceMouse found: keyboard teleop (%s)", __doc__.split("Keyboard")[1].split(".")[0])
    return KeyboardTeleop(config)


class TeleopPolicy:
    """The operator as a `Policy`: select_action returns the device's action; `done` on Enter."""

    def __init__(self, device: TeleopDevice, shape_meta: ShapeMeta) -> None:
        self.device, self.shape_meta = device, shape_meta

    @property
    def done(self) -> bool:
        return self.device.end_requested

    def reset(self) -> None:
        pass  # the device's state (gripper) carries over; new_episode() clears the end signal

    def select_action(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.device.action()


@contextlib.contextmanager
def teleop_policy(config: TeleopConfig, shape_meta: ShapeMeta) -> Iterator[TeleopPolicy]:
    with open_device(config) as device:
        yield TeleopPolicy(device, shape_meta)
