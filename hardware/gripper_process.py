"""The Franka Hand in its own process, so that no gripper call can stall the control loop.

libfranka's gripper serves one command at a time. franky's `grasp_async` / `move_async` issued
while another gripper command ran blocked the whole process inside the call *holding the GIL*
(no watchdog thread or signal handler could run), and destroying a gripper future mid-grasp
crashed the process. A worker thread does not help: a thread cannot be interrupted out of a
GIL-holding call, and in tests the in-process franky-sim server then deadlocked too. So, as
diffusion_policy does for its devices, the gripper lives in a child process
(`python -m hardware.gripper_process`) that talks JSON lines over its stdin/stdout:

- `GripperProcess.submit` writes one line and returns (tens of microseconds); the child runs
  commands strictly one at a time and *coalesces*: of the commands waiting behind a running one
  only the newest runs, the older ones end as "superseded";
- the child reports the finger width every `state_period_s` (also while a command runs), so
  `width` is a cached read that never touches the network; the report doubles as a heartbeat;
- a command running longer than `timeout_s` is reported (and still waited for, never overlapped);
- `close` drops waiting commands, lets the running one finish for a bounded time, then kills the
  child: whatever franky does in there cannot hang or crash the caller;
- a child that dies or stops reporting turns the next command into a `RobotConnectionError`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hardware.robot import RobotConnectionError

log = logging.getLogger(__name__)

COMMANDS = ("open", "grasp")


@dataclass
class GripperTicket:
    """One submitted command. `done` is set when it finished, failed, timed out or was dropped.

    kind: "open" | "grasp"; ok: franky's result (grasp: an object is held); width: finger width
    [m] read when it ended; error: why it did not run or failed ("" when it ran);
    t_submit / t_done: time.monotonic() [s].
    """

    id: int
    kind: str
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    ok: bool = False
    width: float = float("nan")
    error: str = ""
    t_submit: float = field(default_factory=time.monotonic)
    t_done: float | None = None

    def finish(self, ok: bool, width: float = float("nan"), error: str = "") -> None:
        self.ok, self.width, self.error, self.t_done = ok, width, error, time.monotonic()
        self.done.set()

    def wait(self, timeout_s: float) -> bool:
        """True when the command ended (in any way) within `timeout_s` [s]."""
        return self.done.wait(timeout_s)


class GripperProcess:
    """Client of one gripper child process. `start()` connects (raises RobotConnectionError).

    timeout_s: longest a command may run before it is reported as failed; stall_s: no report
    from the child for this long means it hangs (commands are refused, `close` kills it).
    """

    def __init__(self, host: str, timeout_s: float = 10.0, state_period_s: float = 0.05,
                 start_timeout_s: float = 20.0, stall_s: float = 2.0) -> None:
        if timeout_s <= 0 or state_period_s <= 0 or stall_s <= state_period_s:
            raise ValueError(f"need timeout_s > 0 and stall_s > state_period_s > 0, got {timeout_s}, {stall_s}, {state_period_s}")
        self.host, self.timeout_s, self.state_period_s = host, timeout_s, state_period_s
        self.start_timeout_s, self.stall_s = start_timeout_s, stall_s
        self.max_width = float("nan")
        self.counts: collections.Counter[str] = collections.Counter()
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._tickets: dict[int, GripperTicket] = {}
        self._failed: list[GripperTicket] = []
        self._next_id = 0
        self._width = float("nan")
        self._t_report = 0.0  # time.monotonic() of the child's last line
        self._ready = threading.Event()
        self._fatal = ""
        self._reports_ended = False  # the child's stdout closed: it exited, even before the OS reaps it
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._readers: list[threading.Thread] = []

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> GripperProcess:
        cmd = [sys.executable, "-m", "hardware.gripper_process", "--host", self.host,
               "--timeout", str(self.timeout_s), "--period", str(self.state_period_s)]
        # The child imports this package wherever the caller runs from (installed or not).
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, bufsize=1, env=env)
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(self._proc.stdout,), name="gripper-reader", daemon=True),
            threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), name="gripper-stderr", daemon=True),
        ]
        for t in self._readers:
            t.start()
        if not self._ready.wait(self.start_timeout_s) or self._fatal:
            why = self._fatal or f"no answer within {self.start_timeout_s} s"
            self._kill()
            raise RobotConnectionError(f"cannot connect to the gripper at {self.host}: {why}{self._stderr_tail()}")
        log.info("gripper process %d serving %s (width %.4f m)", self._proc.pid, self.host, self._width)
        return self

    def close(self, timeout_s: float = 5.0) -> bool:
        """Drop waiting commands, give the running one up to `timeout_s` [s], stop the child.

        Returns True when the child exited on its own (False: it was killed)."""
        proc = self._proc
        if proc is None:
            return True
        self._proc = None
        with contextlib.suppress(OSError, ValueError):
            proc.stdin.write(json.dumps({"cmd": "quit", "wait_s": timeout_s}) + "\n")
            proc.stdin.flush()
        try:
            proc.wait(timeout_s + 2.0)
            clean = True
        except subprocess.TimeoutExpired:
            log.error("gripper process did not exit within %.1f s: killed", timeout_s + 2.0)
            proc.kill()
            proc.wait(5.0)
            clean = False
        for t in self._readers:
            t.join(2.0)
        self._abandon("gripper closed")
        return clean

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5.0)

    # ------------------------------------------------------------------ commands
    def submit(self, kind: str, **params: float) -> GripperTicket:
        """Queue `kind` ("open": width, speed; "grasp": width, speed, force, epsilon_inner,
        epsilon_outer) and return its ticket at once. Raises RobotConnectionError if the child is
        gone or hangs."""
        if kind not in COMMANDS:
            raise ValueError(f"unknown gripper command {kind!r}; one of {COMMANDS}")
        self._check_alive()
        with self._lock:
            ticket = GripperTicket(self._next_id, kind)
            self._next_id += 1
            self._tickets[ticket.id] = ticket
            self.counts["submitted"] += 1
        try:
            self._proc.stdin.write(json.dumps({"cmd": kind, "id": ticket.id, **params}) + "\n")
            self._proc.stdin.flush()
        except (OSError, ValueError, AttributeError) as e:
            raise RobotConnectionError(f"gripper process is gone: {e}{self._stderr_tail()}") from e
        return ticket

    def pop_error(self) -> str | None:
        """The oldest unreported failure (timeout, gripper exception), or None."""
        with self._lock:
            return self._failed.pop(0).error if self._failed else None

    def acknowledge(self, ticket: GripperTicket) -> None:
        """The caller reported `ticket`'s failure itself: `pop_error` will not return it."""
        with self._lock:
            if ticket in self._failed:
                self._failed.remove(ticket)

    @property
    def width(self) -> float:
        """Last reported finger width [m] (at most ~state_period_s old while the child runs)."""
        return self._width

    @property
    def busy(self) -> bool:
        """A submitted command has not ended yet."""
        with self._lock:
            return bool(self._tickets)

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _check_alive(self) -> None:
        proc = self._proc
        if proc is None:
            raise RobotConnectionError("gripper process is not running (closed or never started)")
        if proc.poll() is not None or self._fatal or self._reports_ended:
            raise RobotConnectionError(f"gripper process exited (code {proc.returncode}): {self._fatal or 'no message'}{self._stderr_tail()}")
        silent = time.monotonic() - self._t_report
        if silent > self.stall_s:
            raise RobotConnectionError(f"gripper process silent for {silent:.1f} s (hung in a gripper call?)")

    # ------------------------------------------------------------------ child's reports
    def _read_stdout(self, stream: TextIO) -> None:
        for line in stream:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                self._stderr.append(line.rstrip())
                continue
            self._t_report = time.monotonic()
            ev = msg.get("ev")
            if "width" in msg and msg["width"] is not None:
                self._width = float(msg["width"])
            if ev == "ready":
                self.max_width = float(msg.get("max_width", float("nan")))
                self._ready.set()
            elif ev == "done":
                self._finish(msg)
            elif ev == "fatal":
                self._fatal = msg.get("error", "unknown error")
                self._ready.set()
        code = self._proc.poll() if self._proc is not None else None
        self._reports_ended = True
        self._abandon(f"gripper process exited (code {code}){self._stderr_tail()}")
        self._ready.set()

    def _read_stderr(self, stream: TextIO) -> None:
        for line in stream:
            self._stderr.append(line.rstrip())

    def _finish(self, msg: dict[str, Any]) -> None:
        with self._lock:
            ticket = self._tickets.pop(int(msg["id"]), None)
            if ticket is None:
                return
            error = msg.get("error", "")
            if msg.get("superseded"):
                self.counts["coalesced"] += 1
            elif error:
                self.counts["failed"] += 1
                self._failed.append(ticket)
            else:
                self.counts["done"] += 1
        if error and not msg.get("superseded"):
            log.error("gripper %s: %s", ticket.kind, error)
        width = msg.get("width")
        ticket.finish(bool(msg.get("ok")), float("nan") if width is None else float(width), error)

    def _abandon(self, why: str) -> None:
        """End every open ticket (the child will not report them)."""
        with self._lock:
            open_tickets, self._tickets = list(self._tickets.values()), {}
        for t in open_tickets:
            t.finish(False, error=why)

    def _stderr_tail(self) -> str:
        tail = [s for s in list(self._stderr)[-5:] if s]
        return ("; child stderr: " + " | ".join(tail)) if tail else ""


# ---------------------------------------------------------------------- the child
def _emit(out: TextIO, **msg: Any) -> None:
    out.write(json.dumps(msg) + "\n")
    out.flush()


def serve(host: str, timeout_s: float, period_s: float, inbox: queue.Queue, out: TextIO) -> None:
    """Run gripper commands from `inbox` (dicts; None = end of input) one at a time."""
    from franky import Gripper  # only the child imports franky's gripper

    try:
        gripper = Gripper(host)
        width = float(gripper.width)
        _emit(out, ev="ready", width=width, max_width=float(gripper.max_width))
    except Exception as e:  # NetworkException, ConnectionError...: report and end
        _emit(out, ev="fatal", error=f"{type(e).__name__}: {e}")
        return
    pending: dict | None = None
    running: tuple[dict, Any, float] | None = None  # (command, franky future, start time)
    reported_timeout = False
    quit_at: float | None = None  # monotonic deadline once asked to quit
    next_report = 0.0
    while True:
        # Take every waiting message: only the newest command survives.
        msgs: list[dict | None] = []
        try:
            msgs.append(inbox.get(block=running is None, timeout=period_s / 2))
            while True:
                msgs.append(inbox.get_nowait())
        except queue.Empty:
            pass
        for m in msgs:
            if m is None or m.get("cmd") == "quit":
                wait_s = 5.0 if m is None else float(m.get("wait_s", 5.0))
                quit_at = time.monotonic() + wait_s if quit_at is None else quit_at
                continue
            if pending is not None:
                _emit(out, ev="done", id=pending["id"], ok=False, superseded=True, error="superseded by a newer gripper command")
            pending = m
        if quit_at is not None and pending is not None:
            _emit(out, ev="done", id=pending["id"], ok=False, error="dropped: gripper closing")
            pending = None
        if running is None and pending is not None:
            cmd, pending = pending, None
            try:
                if cmd["cmd"] == "open":
                    fut = gripper.move_async(float(cmd["width"]), float(cmd["speed"]))
                else:
                    fut = gripper.grasp_async(float(cmd["width"]), float(cmd["speed"]), float(cmd["force"]),
                                              epsilon_inner=float(cmd["epsilon_inner"]), epsilon_outer=float(cmd["epsilon_outer"]))
                running, reported_timeout = (cmd, fut, time.monotonic()), False
            except Exception as e:  # GripperException, lost connection
                _emit(out, ev="done", id=cmd["id"], ok=False, error=f"gripper {cmd['cmd']} failed to start: {type(e).__name__}: {e}")
        if running is not None:
            cmd, fut, t0 = running
            if fut.wait(timeout=min(period_s, 0.01)):
                try:
                    ok, error = bool(fut.get()), ""
                except Exception as e:
                    ok, error = False, f"gripper {cmd['cmd']} failed: {type(e).__name__}: {e}"
                running = None
                if not reported_timeout:
                    _emit(out, ev="done", id=cmd["id"], ok=ok, width=_width(gripper), error=error)
            elif not reported_timeout and time.monotonic() - t0 > timeout_s:
                # Reported now; still waited for (the future must outlive its command).
                _emit(out, ev="done", id=cmd["id"], ok=False, width=_width(gripper),
                      error=f"gripper {cmd['cmd']} did not finish within {timeout_s} s")
                reported_timeout = True
        now = time.monotonic()
        if quit_at is not None and (running is None or now > quit_at):
            return
        if now >= next_report:
            _emit(out, ev="state", width=_width(gripper))
            next_report = now + period_s


def _width(gripper: Any) -> float | None:
    try:
        return float(gripper.width)
    except Exception:  # the link is gone: the next command reports it
        return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Franka Hand gripper server for one FrankyRobot (JSON lines on stdin/stdout)")
    p.add_argument("--host", required=True, help="robot (or franky-sim) address")
    p.add_argument("--timeout", type=float, default=10.0, help="longest a gripper command may run [s]")
    p.add_argument("--period", type=float, default=0.05, help="width report period [s]")
    args = p.parse_args(argv)
    # Ctrl-C in the terminal reaches the whole process group: the parent handles it (stop, home,
    # which opens the gripper) and ends this process through `close`, or by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    inbox: queue.Queue = queue.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            with contextlib.suppress(json.JSONDecodeError):
                inbox.put(json.loads(line))
        inbox.put(None)  # parent gone: finish up and exit

    threading.Thread(target=read_stdin, daemon=True).start()
    try:
        serve(args.host, args.timeout, args.period, inbox, sys.stdout)
    except BrokenPipeError:
        pass
    # Skip interpreter teardown: destroying franky objects with a command in flight crashed it.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
