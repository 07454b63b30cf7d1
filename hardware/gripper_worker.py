"""One thread that runs every gripper command, one at a time, so the control loop never waits.

libfranka's gripper serves one command at a time, and franky's `grasp_async` / `move_async`
issued while another gripper command is still running blocked the whole process (inside the
call, holding the GIL: no signal handler or watchdog thread could run). Destroying a gripper
future while its command ran crashed the process. Here:

- `submit` only stores the command and returns (microseconds); a command submitted while another
  is waiting is *coalesced*: only the newest waiting command runs, the older one is dropped;
- the worker thread issues a command only after the previous one has finished, and waits on it
  with `timeout_s` (a timed-out command is reported, and the worker keeps waiting for it before
  issuing anything else, rather than overlap it);
- `close(timeout_s)` drops waiting commands and waits a bounded time for the running one; a
  command still running after that keeps its future referenced by the (daemon) worker thread,
  so it is never destroyed mid-flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class GripperTicket:
    """One submitted command. `done` is set when it finished, failed, timed out or was dropped.

    kind: "open" | "grasp"; ok: the command's own result (franky's bool); error: why it did not
    run or failed ("" when it ran); t_submit / t_done: time.monotonic() [s].
    """

    kind: str
    start: Callable[[], Any] = field(repr=False)  # issues the franky call, returns its future
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    ok: bool = False
    error: str = ""
    t_submit: float = field(default_factory=time.monotonic)
    t_done: float | None = None

    def finish(self, ok: bool, error: str = "") -> None:
        self.ok, self.error, self.t_done = ok, error, time.monotonic()
        self.done.set()

    def wait(self, timeout_s: float) -> bool:
        """True when the command ended (in any way) within `timeout_s` [s]."""
        return self.done.wait(timeout_s)


class GripperWorker:
    """Runs gripper commands on a daemon thread: never two at once, never blocking the caller.

    timeout_s [s]: longest a command may run before it is reported as timed out (it is still
    waited for, never overlapped).
    """

    def __init__(self, timeout_s: float, name: str = "gripper") -> None:
        if timeout_s <= 0:
            raise ValueError(f"gripper timeout_s must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self._cv = threading.Condition()
        self._pending: GripperTicket | None = None
        self._running: GripperTicket | None = None
        self._closed = False
        self._failed: list[GripperTicket] = []  # failures not yet reported to the control thread
        self.counts = {"submitted": 0, "run": 0, "coalesced": 0, "timeouts": 0, "failed": 0}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        with self._cv:
            return self._running is not None or self._pending is not None

    @property
    def running_kind(self) -> str | None:
        """Kind of the command in flight, or of the one about to run."""
        with self._cv:
            t = self._running or self._pending
            return None if t is None else t.kind

    def submit(self, kind: str, start: Callable[[], Any]) -> GripperTicket:
        """Queue a command (`start()` issues it and returns franky's future); returns at once."""
        ticket = GripperTicket(kind, start)
        with self._cv:
            if self._closed:
                ticket.finish(False, "gripper worker is closed")
                return ticket
            if self._pending is not None:
                self._pending.finish(False, "superseded by a newer gripper command")
                self.counts["coalesced"] += 1
            self._pending = ticket
            self.counts["submitted"] += 1
            self._cv.notify()
        return ticket

    def pop_error(self) -> str | None:
        """The oldest unreported failure (timeout, gripper exception), or None."""
        with self._cv:
            return self._failed.pop(0).error if self._failed else None

    def acknowledge(self, ticket: GripperTicket) -> None:
        """The caller reported `ticket`'s failure itself: `pop_error` will not return it."""
        with self._cv:
            if ticket in self._failed:
                self._failed.remove(ticket)

    def close(self, timeout_s: float) -> bool:
        """Drop waiting commands, wait up to `timeout_s` [s] for the running one; True if idle."""
        with self._cv:
            self._closed = True
            if self._pending is not None:
                self._pending.finish(False, "gripper worker closed")
                self._pending = None
            self._cv.notify()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("a gripper command is still running after %.1f s; left to finish on its own", timeout_s)
            return False
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._pending is None:  # closed and nothing left
                    return
                ticket, self._pending = self._pending, None
                self._running = ticket
            try:
                self._run(ticket)
            finally:
                with self._cv:
                    self._running = None

    def _run(self, ticket: GripperTicket) -> None:
        self.counts["run"] += 1
        try:
            future = ticket.start()
        except Exception as e:  # GripperException, lost connection: report, keep serving
            self._fail(ticket, f"gripper {ticket.kind} failed to start: {type(e).__name__}: {e}")
            return
        t0 = time.monotonic()
        reported = False
        # Wait in slices: wait() releases the GIL; the future stays referenced here until it ends.
        while not future.wait(timeout=0.05):
            if not reported and time.monotonic() - t0 > self.timeout_s:
                self.counts["timeouts"] += 1
                self._fail(ticket, f"gripper {ticket.kind} did not finish within {self.timeout_s} s")
                reported = True
        if reported:
            return
        try:
            ticket.finish(bool(future.get()))
        except Exception as e:
            self._fail(ticket, f"gripper {ticket.kind} failed: {type(e).__name__}: {e}")

    def _fail(self, ticket: GripperTicket, message: str) -> None:
        log.error(message)
        self.counts["failed"] += 1
        ticket.finish(False, message)
        with self._cv:
            self._failed.append(ticket)
