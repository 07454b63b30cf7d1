"""The fixed-rate deployment loop: cameras + robot state -> policy -> safety filter -> robot.

Threads: each camera captures on its own thread into a ring buffer; preprocessing and policy
inference run on one worker thread; the calling thread (the "robot thread") owns every robot
call, so a slow policy can never delay a stop. Per tick (period 1/control_hz):

1. wait for a new frame from `trigger_camera` (if set) and take the newest of the others; a
   frame older than `max_frame_age_ms` is a stale-frame stop;
2. read the robot state (a lost connection, an end effector outside the safety box, or below its
   floor, the floor guard, stops the run);
3. hand frames + state to the worker and wait until the command deadline; an unfinished
   inference is an overrun: the tick sends nothing (the arm holds its last target) or, with
   `on_overrun: stop`, the run stops; a late result is dropped, never sent;
4. `robot.send_action` (the safety filter lives there), then record the step.

A reflex is recovered once (`max_recoveries`), then the run stops. Ctrl-C stops and returns the
arm home; a second Ctrl-C during that homing stops the arm where it is, gripper left as it is. After any stop the robot's and the policy's queues are cleared, so a restart never
resumes stale motion. `dry_run` runs all of it but motion: actions go through the safety filter
and are recorded, nothing is sent.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hardware.camera import Camera, CameraFrame, StaleFrameError
from hardware.observation import build_observation, check_sources
from hardware.recording import DRY_RUN, REFUSED, SENT, UNLABELLED, EpisodeBuffer, scalar
from hardware.robot import Robot, RobotConnectionError, RobotError, RobotLimitError, RobotReflexError, RobotState
from hardware.rollout_log import RolloutLog, write_json
from hardware.safety import SentCommand
from toto_robot.episode_store import EpisodeStore
from toto_robot.policy import Policy
from toto_robot.scene import held_and_lifted

log = logging.getLogger(__name__)

OVERRUN_MODES = ("skip", "stop")
PACES = ("wall", "robot")
ROBOT_CLOCK_STALL_S = 10.0  # pace "robot": a robot clock that does not advance a period in this long has stalled
MAX_STRETCH = 20.0  # pace "robot": deadlines stretch at most this much (a robot clock at >= 5% of real time)


@dataclass
class RunnerConfig:
    """Loop settings (conf/deploy_policy.yaml `runner:`). Times in ms unless named."""

    control_hz: float = 10.0
    max_steps: int = 300
    max_frame_age_ms: float = 100.0  # older frame -> stale-frame stop
    trigger_camera: str = ""  # start each step on a new frame of this camera ("" = newest frames at the tick)
    command_margin_ms: float = 5.0  # inference must finish this long before the next tick
    on_overrun: str = "skip"  # "skip": send nothing this tick; "stop": stop the run
    max_overruns: int = 0  # with "skip": stop after this many overruns (0 = never)
    max_recoveries: int = 1  # reflexes recovered before the run stops
    workspace_stop_margin: float = 0.05  # m: measured end effector this far outside the safety box -> stop
    # m: measured end effector this far below the box floor (the floor guard, 6 mm of fingertip
    # clearance) -> stop, before the fingertips reach the table; room for tracking overshoot.
    floor_stop_margin: float = 0.004
    dry_run: bool = False
    # End a rollout as "done" once the hand holds a cube-sized object lifted clear of the table
    # (toto_robot.scene.held_and_lifted), as a simulated episode ends on its success; without it a
    # policy that lifted keeps going until max_steps, pushing into the workspace ceiling.
    stop_when_lifted: bool = False
    home_at_start: bool = True
    home_on_interrupt: bool = True
    # "wall": ticks on the host's clock (a real robot). "robot": the loop runs on the robot's own
    # clock: a tick waits until it advanced one period, and deadlines and frame-age limits stretch
    # by how much slower than real time it runs, so a simulator falling behind on a loaded CPU
    # (franky-sim) steps as a real controller would, only slower.
    pace: str = "wall"

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.max_steps < 1 or self.max_frame_age_ms <= 0:
            raise ValueError("control_hz, max_steps and max_frame_age_ms must be positive")
        if self.pace not in PACES:
            raise ValueError(f"pace must be one of {PACES}, got {self.pace!r}")
        if self.on_overrun not in OVERRUN_MODES:
            raise ValueError(f"on_overrun must be one of {OVERRUN_MODES}, got {self.on_overrun!r}")
        if self.workspace_stop_margin < 0 or self.floor_stop_margin < 0:
            raise ValueError("workspace_stop_margin and floor_stop_margin must be >= 0")
        if not 0 <= self.command_margin_ms < 1e3 / self.control_hz:
            raise ValueError(f"command_margin_ms must be in [0, period), got {self.command_margin_ms}")


@dataclass
class RolloutResult:
    """One rollout: recorded arrays (None when no step completed), its log and why it stopped."""

    episode: dict[str, np.ndarray] | None
    log: RolloutLog
    stop_reason: str
    message: str = ""
    camera_meta: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        """True when the rollout ended by itself (step limit or the policy's `done`), not by a fault."""
        return self.stop_reason in ("max_steps", "done")

    @property
    def n_steps(self) -> int:
        return 0 if self.episode is None else len(self.episode["action"])


@dataclass
class _Inference:
    """What the worker thread returns for one step."""

    obs: dict[str, np.ndarray]
    action: np.ndarray  # raw policy output
    preprocess_ms: float
    inference_ms: float


class _Stop(Exception):
    """Internal: end the rollout with a reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DeployRunner:
    """Runs rollouts of `policy` on `robot` with `cameras` (obs key -> Camera, already connected)."""

    def __init__(self, robot: Robot, cameras: Mapping[str, Camera], policy: Policy, config: RunnerConfig) -> None:
        if config.trigger_camera and config.trigger_camera not in cameras:
            raise ValueError(f"trigger_camera {config.trigger_camera!r} is not one of the cameras {sorted(cameras)}")
        check_sources(policy.shape_meta, list(cameras))
        self.robot, self.cameras, self.policy, self.config = robot, dict(cameras), policy, config
        self.shape_meta = policy.shape_meta
        # Only the cameras the policy reads are waited on and recorded.
        self.camera_keys = list(self.shape_meta.rgb_keys)
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")

    def close(self) -> None:
        self._worker.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> DeployRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ rollout
    def run_episode(self, max_steps: int | None = None) -> RolloutResult:
        cfg = self.config
        rlog = RolloutLog(cfg.control_hz)
        keys = list(self.shape_meta.data_spec()) + _extra_keys(self.camera_keys)
        buf = EpisodeBuffer(keys)
        steps = max_steps or cfg.max_steps
        self.policy.reset()
        self.robot.safety.reset_counts()
        events_before = dict(self.robot.events)
        if cfg.home_at_start and not cfg.dry_run:
            self.robot.move_home()
        self.robot.clear_queue()
        reason, message = "max_steps", ""
        period = 1.0 / cfg.control_hz
        t_begin = time.monotonic()
        try:
            tick, prev_start, next_device, stretch = t_begin, None, None, 1.0
            if cfg.pace == "robot":  # the first tick, too, comes one period of the robot's clock from now
                next_device = self.robot.get_state().t_device + period
            pending: Future | None = None
            width = None  # measured finger distance at the previous step [m]
            while rlog.steps < steps:
                if next_device is not None:
                    tick = max(tick, self._wait_robot_clock(next_device))
                    # wall seconds per robot second over the last period
                    stretch = float(np.clip((time.monotonic() - (prev_start or t_begin)) / period, 1.0, MAX_STRETCH))
                _sleep_until(tick)
                start = time.monotonic()
                if prev_start is not None:
                    rlog.add("period", (start - prev_start) * 1e3)
                prev_start = start
                frames = self._capture(rlog, tick, stretch)
                t0 = time.monotonic()
                state = self.robot.get_state()
                rlog.add("state", (time.monotonic() - t0) * 1e3)
                if cfg.pace == "robot" and state.t_device is not None:
                    next_device = state.t_device + period
                self._check_workspace(state)
                if not state.ok:  # a latched reflex can show up in the state before any command fails
                    state = self._recover(rlog, RobotReflexError(f"robot mode {state.mode}, errors {state.errors}", state.errors))
                if pending is None or pending.done():
                    pending = self._worker.submit(self._infer, frames, state)
                    result = self._await(pending, tick + (period - cfg.command_margin_ms * 1e-3) * stretch)
                else:  # the previous inference is still running: this tick is lost too
                    result = None
                if result is None:
                    self._overrun(rlog)
                else:
                    pending = None
                    cmd = self._step(rlog, buf, tick, frames, state, result)
                    lifted = (cfg.stop_when_lifted and width is not None and cmd.sent
                              and held_and_lifted(float(state.eef_pos[2]), state.gripper_width, width, cmd.action[-1] > 0))
                    width = state.gripper_width
                    if getattr(self.policy, "done", False) or lifted:
                        rlog.steps += 1
                        reason, message = "done", "object held and lifted" if lifted else "policy reported done"
                        break
                rlog.steps += 1
                tick += period
                behind = time.monotonic() - tick
                if behind > 0 and next_device is None:  # fell behind: skip the missed ticks instead of bursting commands
                    missed = int(behind // period) + 1
                    rlog.missed_cycles += missed
                    tick += missed * period
        except _Stop as e:
            reason, message = e.reason, str(e)
        except StaleFrameError as e:
            reason, message = "stale_frame", str(e)
        except RobotConnectionError as e:
            reason, message = "connection_lost", f"robot connection lost: {e}"
        except KeyboardInterrupt:
            reason, message = "interrupted", "Ctrl-C"
        except RobotLimitError as e:
            reason, message = "joint_limit", str(e)
        except RobotError as e:
            reason, message = "robot_error", f"{type(e).__name__}: {e}"
        except Exception as e:  # anything unforeseen still ends in a safe stop with the rollout kept
            log.exception("rollout aborted by an unexpected error")
            reason, message = "error", f"{type(e).__name__}: {e}"
        finally:
            rlog.duration_s = time.monotonic() - t_begin
            self._safe_stop(reason)
        if reason == "interrupted" and cfg.home_on_interrupt and not cfg.dry_run:
            self._go_home_after_interrupt(rlog)
        rlog.stop_reason = reason
        rlog.safety_counts = dict(self.robot.safety.counts)
        rlog.robot_events = {k: n - events_before.get(k, 0) for k, n in self.robot.events.items() if n != events_before.get(k, 0)}
        if message:
            rlog.event(f"stop: {reason}: {message}")
            log.warning("rollout stopped (%s): %s", reason, message)
        episode = buf.arrays() if len(buf) else None
        return RolloutResult(episode, rlog, reason, message, {k: c.metadata() for k, c in self.cameras.items()})

    def save(self, result: RolloutResult, store: EpisodeStore | None, success: int = UNLABELLED,
             log_dir: str | Path | None = None, meta: Mapping[str, Any] | None = None) -> int | None:
        """Append the rollout (with its success label) to `store` and write its JSON log; episode index."""
        index = None
        if store is not None and result.episode is not None:
            episode = dict(result.episode)
            episode["success"] = np.full((result.n_steps, 1), success, dtype=np.int8)
            index = store.add_episode(episode)
        if log_dir is not None:
            name = f"rollout_{index:05d}.json" if index is not None else f"rollout_unsaved_{time.time_ns()}.json"
            write_json(Path(log_dir) / name, {"episode": index, "success": success, "summary": result.log.summary(),
                                              "cameras": result.camera_meta, "store": str(store.path) if store else None,
                                              **dict(meta or {})})
        return index

    # ------------------------------------------------------------------ stages
    def _capture(self, rlog: RolloutLog, tick: float, stretch: float = 1.0) -> dict[str, CameraFrame]:
        """Frames of this tick; `stretch`: wall seconds per robot second (pace "robot"), else 1."""
        cfg = self.config
        t0 = time.monotonic()
        max_age_ms = cfg.max_frame_age_ms * stretch
        frames: dict[str, CameraFrame] = {}
        if cfg.trigger_camera:  # the step starts when this camera delivers its first frame after the tick
            cam = self.cameras[cfg.trigger_camera]
            frames[cfg.trigger_camera] = cam.read(timeout_s=max_age_ms * 1e-3, newer_than=tick)
        for key in self.camera_keys:
            if key not in frames:
                frames[key] = self.cameras[key].read_latest(max_age_ms)
        now = time.monotonic()
        rlog.add("capture_wait", (now - t0) * 1e3)
        if frames:
            rlog.add("frame_age", max(f.age_ms(now) for f in frames.values()))
        return frames

    def _wait_robot_clock(self, t_device: float) -> float:
        """Wait until the robot's clock reaches `t_device` [s]; time.monotonic() then.

        Polled every few ms: an in-process simulator needs the GIL to advance its clock.
        """
        deadline = time.monotonic() + ROBOT_CLOCK_STALL_S
        while self.robot.get_state().t_device < t_device - 5e-4:
            if time.monotonic() > deadline:
                raise _Stop("robot_clock", f"the robot's clock did not reach {t_device:.3f} s within {ROBOT_CLOCK_STALL_S} s")
            time.sleep(0.005)
        return time.monotonic()

    def _check_workspace(self, state: RobotState) -> None:
        cfg, safety = self.config, self.robot.safety
        floor = safety.config.workspace_min[2]
        if state.eef_pos[2] < floor - cfg.floor_stop_margin:
            raise _Stop("floor_guard", f"end effector at z = {state.eef_pos[2]:.4f} m is below the floor guard "
                                       f"({floor} m) by more than {cfg.floor_stop_margin} m")
        if not safety.in_workspace(state.eef_pos, cfg.workspace_stop_margin):
            raise _Stop("workspace", f"end effector at {np.round(state.eef_pos, 3).tolist()} is outside the "
                                     f"workspace box by more than {cfg.workspace_stop_margin} m")

    def _infer(self, frames: dict[str, CameraFrame], state: RobotState) -> _Inference:
        """Worker thread: preprocess + policy."""
        t0 = time.monotonic()
        obs = build_observation(self.shape_meta, frames, state)
        t1 = time.monotonic()
        action = np.asarray(self.policy.select_action(obs), dtype=np.float32).reshape(-1)
        t2 = time.monotonic()
        return _Inference(obs, action, (t1 - t0) * 1e3, (t2 - t1) * 1e3)

    def _await(self, fut: Future, deadline: float) -> _Inference | None:
        try:
            return fut.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            return None
        except Exception as e:  # a policy bug: stop the arm, report it
            raise _Stop("policy_error", f"policy failed: {type(e).__name__}: {e}") from e

    def _overrun(self, rlog: RolloutLog) -> None:
        rlog.overruns += 1
        cfg = self.config
        if cfg.on_overrun == "stop":
            raise _Stop("overrun", f"inference missed the command deadline ({1e3 / cfg.control_hz - cfg.command_margin_ms:.0f} ms)")
        if cfg.max_overruns and rlog.overruns >= cfg.max_overruns:
            raise _Stop("overrun", f"{rlog.overruns} overruns (limit {cfg.max_overruns})")

    def _step(self, rlog: RolloutLog, buf: EpisodeBuffer, tick: float, frames: dict[str, CameraFrame],
              state: RobotState, inf: _Inference) -> SentCommand:
        obs, raw, infer_ms = inf.obs, inf.action, inf.inference_ms
        rlog.add("preprocess", inf.preprocess_ms)
        rlog.add("inference", infer_ms)
        t0 = time.monotonic()
        cmd = self._command(rlog, raw, state)
        t_cmd = time.monotonic()
        rlog.add("command", (t_cmd - t0) * 1e3)
        if self.camera_keys:
            # From the frame that started the step (trigger camera), and from the oldest frame used:
            # unsynchronised cameras differ by up to one frame period.
            oldest = min(frames[k].t_host for k in self.camera_keys)
            ref = frames[self.config.trigger_camera].t_host if self.config.trigger_camera else oldest
            rlog.add("capture_to_command", (t_cmd - ref) * 1e3)
            rlog.add("oldest_frame_to_command", (t_cmd - oldest) * 1e3)
        if cmd.sent and not self.config.dry_run:
            rlog.commands_sent += 1
        status = DRY_RUN if self.config.dry_run and cmd.sent else SENT if cmd.sent else REFUSED
        policy_action = raw if raw.shape == self.shape_meta.action.shape and np.all(np.isfinite(raw)) else np.zeros(self.shape_meta.action.shape, np.float32)
        row: dict[str, Any] = {
            **obs,
            "action": cmd.action.astype(self.shape_meta.action.dtype),
            "t_tick": scalar(tick),
            "t_state": scalar(state.t_host),
            "t_state_device": scalar(-1.0 if state.t_device is None else state.t_device),
            "t_command": scalar(t_cmd if cmd.sent else -1.0),
            "inference_ms": scalar(infer_ms),
            "policy_action": policy_action.astype(np.float32),
            "status": scalar(status, "int8"),
            "success": scalar(UNLABELLED, "int8"),
        }
        for key in self.camera_keys:
            row[f"t_frame_{key}"] = scalar(frames[key].t_host)
            row[f"t_frame_device_{key}"] = scalar(frames[key].t_device)
        buf.append(row)
        return cmd

    def _command(self, rlog: RolloutLog, action: np.ndarray, state: RobotState) -> SentCommand:
        if self.config.dry_run:
            # Re-anchor on the measured pose each step: nothing moves, so integrated targets would drift.
            safety = self.robot.safety
            safety.reset(state.eef_pos, state.eef_quat, safety.gripper_closed)
            return safety.filter_action(action, state.eef_pos)
        try:
            return self.robot.send_action(action)
        except RobotReflexError as e:
            state = self._recover(rlog, e)
            return SentCommand(
                action=np.zeros(self.shape_meta.action.shape, np.float32), target_pos=state.eef_pos,
                target_quat=state.eef_quat, gripper=None, sent=False, reason="recovered from a reflex; step dropped",
            )

    def _recover(self, rlog: RolloutLog, err: RobotReflexError) -> RobotState:
        """Recover from a reflex once (logged); raise _Stop on the next one or when recovery fails."""
        rlog.reflexes.update(err.reflexes or ("unnamed_reflex",))
        rlog.event(f"reflex at step {rlog.steps}: {err}")
        if rlog.recoveries >= self.config.max_recoveries:
            raise _Stop("reflex", f"reflex after {rlog.recoveries} recovery(ies): {err}") from err
        rlog.recoveries += 1
        if not self.robot.recover():
            raise _Stop("reflex", f"recovery from reflex failed: {err}") from err
        rlog.event(f"recovered at step {rlog.steps}")
        self.policy.reset()  # its queued actions were planned before the reflex
        state = self.robot.get_state()
        if not state.ok:
            raise _Stop("reflex", f"robot still in mode {state.mode} with errors {state.errors} after recovery")
        return state

    def _safe_stop(self, reason: str) -> None:
        """Stop the arm and clear every queue; never raises (the link may be gone)."""
        for what, fn in (("stop", self.robot.stop), ("clear_queue", self.robot.clear_queue)):
            if self.config.dry_run and what == "stop":
                continue
            try:
                fn()
            except Exception as e:  # after a lost connection these fail; the controller stops on its own
                log.warning("robot.%s after %s failed: %s", what, reason, e)
        self.policy.reset()

    def _go_home_after_interrupt(self, rlog: RolloutLog) -> None:
        """After a first Ctrl-C (the arm is already stopped) the arm returns home and opens the hand.

        A second Ctrl-C during that homing stops the arm where it is (decelerating, as any stop)
        and leaves the gripper as it is: an object in the hand is not dropped. franky answers a
        Ctrl-C inside its blocking motion call by stopping the motion and raising "preempted";
        the handler below tells that apart from a real homing failure.
        """
        second = threading.Event()

        def on_sigint(signum: int, frame: Any) -> None:
            second.set()
            raise KeyboardInterrupt

        try:
            previous = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not the main thread: Ctrl-C is not delivered here anyway
            previous = None
        try:
            self.robot.move_home()
            rlog.event("returned home after Ctrl-C")
        except (KeyboardInterrupt, Exception) as e:
            if second.is_set() or isinstance(e, KeyboardInterrupt):
                self._safe_stop("second Ctrl-C")
                rlog.event("second Ctrl-C: homing stopped, the arm holds where it stopped, the gripper was left as it was")
                log.warning("second Ctrl-C: homing stopped; the arm holds where it is and the gripper was not opened")
            else:
                rlog.event(f"return home after Ctrl-C failed: {e}")
                log.error("return home after Ctrl-C failed: %s", e)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _extra_keys(camera_keys: list[str]) -> list[str]:
    keys = ["t_tick", "t_state", "t_state_device", "t_command", "inference_ms", "policy_action", "status", "success"]
    for k in camera_keys:
        keys += [f"t_frame_{k}", f"t_frame_device_{k}"]
    return keys


def _sleep_until(t: float) -> None:
    # sleep() overshoots by ~0.1 ms on Linux; the last millisecond is not worth spinning for at 10 Hz.
    dt = t - time.monotonic()
    if dt > 0:
        time.sleep(dt)
