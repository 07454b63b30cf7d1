"""Fault injection behind the real franky backend, for the error paths franky-sim cannot produce.

franky-sim enforces no safety and never raises reflexes, so `FaultInjectingRobot` is the real
`FrankyRobot` talking to a real (simulated) controller, except that at chosen command steps it
raises the exception franky itself raises (`ControlException`, `NetworkException`) and makes the
controller look the way a real one does after that fault. Faults, keyed by the index of the
motion issued (from 0; one per `send_action` / `send_target`, except a call that only repeats a
target the arm already holds, which issues none):

- "reflex": the move raises ControlException naming `cartesian_reflex`, the arm is stopped, and
  the state reads mode "Reflex" with that error until `recover()` (the controller's automatic
  error recovery is still called on the simulator);
- "silent_reflex": as "reflex", but the state reads mode "Idle" with no current error, as a
  latched reflex can: only the backend's own latch stops the next command;
- "async_reflex": the move is accepted, and the running motion dies afterwards: the exception
  surfaces from `poll_motion` at the next command;
- "planner": the move is accepted, and the planner fails afterwards (franky's
  `Motion planner failed with error code -100`, a RuntimeError, from `poll_motion`);
- "network": the move raises NetworkException (UDP timeout), as when the controller vanishes;
- "recover_fails": the next `recover()` returns False (e.g. the user stop is still pressed).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from franky import ControlException, NetworkException
from franky import Robot as _FrankyRobot

from hardware.franky_robot import FrankyConfig, FrankyRobot
from hardware.robot import RobotState
from hardware.safety import SafetyConfig

log = logging.getLogger(__name__)

FAULTS = ("reflex", "silent_reflex", "async_reflex", "planner", "network", "recover_fails")
PLANNER_MESSAGE = "Motion planner failed with error code -100"
REFLEX_MESSAGE = 'libfranka: Move command aborted: motion aborted by reflex! ["cartesian_reflex"]'


@dataclass
class FaultConfig(FrankyConfig):
    """Robot backend "franky_faults" (conf: `backend: franky_faults`, `faults: {3: reflex}`)."""

    faults: dict[int, str] = field(default_factory=dict)


class FaultInjectingRobot(FrankyRobot):
    """`FrankyRobot` that injects `faults` ({command index: fault name}) at chosen steps;
    `faults` defaults to `config.faults` when the config is a `FaultConfig`."""

    def __init__(self, config: FrankyConfig, safety: SafetyConfig | None = None, faults: Mapping[int, str] | None = None) -> None:
        super().__init__(config, safety)
        if faults is None:
            faults = getattr(config, "faults", {})
        faults = dict(faults)
        unknown = sorted({f for f in faults.values() if f not in FAULTS})
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.faults = faults
        self.step = 0  # motion commands issued so far
        self.injected: list[tuple[int, str]] = []
        self._fake_mode: tuple[str, tuple[str, ...]] | None = None  # controller state after a fault
        self._pending_async: str | None = None  # "async_reflex" | "planner": raised at the next poll
        self._fail_recoveries = 0

    # Motions are counted here, as they are issued.
    def _issue(self, robot: _FrankyRobot, motion: object) -> None:
        step, self.step = self.step, self.step + 1
        fault = self.faults.get(step)
        if fault is None:
            super()._issue(robot, motion)
            return
        self.injected.append((step, fault))
        log.warning("injecting fault %r at command %d", fault, step)
        if fault == "recover_fails":
            self._fail_recoveries += 1
            super()._issue(robot, motion)
        elif fault in ("async_reflex", "planner"):
            super()._issue(robot, motion)
            self._pending_async = fault
        elif fault == "network":
            raise NetworkException("libfranka: UDP receive: Timeout")
        else:
            robot.stop()  # a reflex stops the arm
            self._fake_mode = ("Reflex", ("cartesian_reflex",)) if fault == "reflex" else ("Idle", ())
            raise ControlException(REFLEX_MESSAGE)

    def _poll_motion(self, robot: _FrankyRobot) -> None:
        pending, self._pending_async = self._pending_async, None
        if pending is not None:
            robot.stop()
            self._drain(robot)
            if pending == "planner":
                raise RuntimeError(PLANNER_MESSAGE)
            self._fake_mode = ("Reflex", ("cartesian_reflex",))
            raise ControlException(REFLEX_MESSAGE)
        super()._poll_motion(robot)

    def _reflex_names(self, exc: BaseException) -> tuple[str, ...]:
        # The simulator's last_motion_errors stay empty: name the injected reflex from its message.
        return ("cartesian_reflex",) if "cartesian_reflex" in str(exc) else super()._reflex_names(exc)

    def _recover_controller(self, robot: _FrankyRobot) -> bool:
        ok = super()._recover_controller(robot)
        if self._fail_recoveries:
            self._fail_recoveries -= 1
            return False
        self._fake_mode = None
        return ok

    def get_state(self) -> RobotState:
        state = super().get_state()
        if self._fake_mode is None:
            return state
        mode, errors = self._fake_mode
        return dataclasses.replace(state, mode=mode, errors=errors)
