"""deploy_policy.py's job: build robot, cameras, policy and store from config, run rollouts.

Also used by collect_teleop.py and replay_episode.py (same wiring, another policy), so every
path that moves the arm goes through the same runner, safety filter and recording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from hardware import build_robot
from hardware.camera import Camera, build_cameras
from hardware.recording import FAILURE, SUCCESS, UNLABELLED, open_rollout_store
from hardware.robot import Robot
from hardware.runner import DeployRunner, RolloutResult, RunnerConfig
from toto_robot.action import ATTR_KEY, ActionConvention
from toto_robot.cli import UserError
from toto_robot.config import as_dataclass, to_dict
from toto_robot.episode_store import EpisodeStore
from toto_robot.policy import Policy
from toto_robot.scene import LIFT_HEIGHT
from toto_robot.spec import ShapeMeta, franka_shape_meta

log = logging.getLogger(__name__)

CUBE_KEYS = ("cube_pos", "cube_quat", "cube_size", "episode_seed")  # a recorded scene's cube (privileged extras)
FAULTS = ("connection_lost", "reflex", "robot_error", "joint_limit", "error", "interrupted", "policy_error", "workspace",
          "floor_guard", "robot_clock")


@dataclass
class RecordConfig:
    store: str = "data/rollouts.zarr"  # "" = record nothing
    label: str = "ask"  # "ask": operator labels success after each rollout; "none": unlabelled
    log_dir: str = ""  # rollout JSON logs; "" = the hydra run directory

    def __post_init__(self) -> None:
        if self.label not in ("ask", "none"):
            raise ValueError(f"record.label must be 'ask' or 'none', got {self.label!r}")


@dataclass
class SessionConfig:
    """Top-level keys of deploy_policy.yaml / collect_teleop.yaml / replay_episode.yaml."""

    episodes: int = 1
    image_size: int = 128  # policy image side for policies without a checkpoint (sim renders this size)
    sim: bool = False  # start franky-sim (cube + agentview camera) in this process and drive it


@dataclass
class Session:
    """Connected robot + cameras (+ franky-sim when sim=true) for one script run."""

    robot: Robot
    cameras: dict[str, Camera]
    runner_config: RunnerConfig
    record: RecordConfig
    settings: SessionConfig
    sim: Any = None

    def shape_meta(self, image_size: int | None = None) -> ShapeMeta:
        """What this session provides: every camera (resized to `image_size`) and the robot state."""
        return franka_shape_meta(list(self.cameras), image_size or self.settings.image_size)

    def open_store(self, shape_meta: ShapeMeta, source: str, extra_attrs: dict[str, Any] | None = None) -> EpisodeStore | None:
        if not self.record.store:
            return None
        attrs = {
            ATTR_KEY: self.robot.config.action.to_dict(),  # what the recorded actions mean
            "source": source,
            "control_hz": self.runner_config.control_hz,
            "robot": to_dict(self.robot.config),
            "safety": to_dict(self.robot.safety.config),
            "cameras": {k: c.metadata() for k, c in self.cameras.items()},
            **(extra_attrs or {}),
        }
        return open_rollout_store(self.record.store, shape_meta, list(shape_meta.rgb_keys), attrs)

    @property
    def log_dir(self) -> Path:
        """record.log_dir, else the hydra run directory (outputs/<script>/<time>)."""
        if self.record.log_dir:
            return Path(self.record.log_dir)
        from hydra.core.hydra_config import HydraConfig

        try:
            return Path(HydraConfig.get().runtime.output_dir)
        except ValueError:  # called outside a hydra app
            return Path("outputs/rollout_logs")


def session_settings(cfg: DictConfig) -> SessionConfig:
    return as_dataclass(SessionConfig, {f.name: cfg[f.name] for f in fields(SessionConfig) if f.name in cfg})


@contextlib.contextmanager
def open_session(cfg: DictConfig) -> Iterator[Session]:
    """Start franky-sim if asked, connect the robot and cameras; everything is closed on exit."""
    settings = session_settings(cfg)
    runner_config = as_dataclass(RunnerConfig, cfg.runner)
    if settings.sim:  # franky-sim may run slower than real time on a loaded CPU: step on its clock
        runner_config = dataclasses.replace(runner_config, pace="robot")
    record = as_dataclass(RecordConfig, cfg.get("record"))
    with contextlib.ExitStack() as stack:
        sim = None
        robot_cfg = cfg.robot
        if settings.sim:
            if not os.environ.get("DISPLAY"):  # headless: MuJoCo reads this when first imported
                os.environ.setdefault("MUJOCO_GL", "egl")
            from hardware.franky_sim_server import SimServer

            sim = stack.enter_context(SimServer(host=None, realtime=True, cube=True, camera=True))
            robot_cfg = OmegaConf.merge(cfg.robot, {"host": sim.host, "realtime_config": "ignore"})
        robot = build_robot(robot_cfg, cfg.safety)
        if robot.config.control_hz != runner_config.control_hz:
            raise ValueError(f"robot.control_hz {robot.config.control_hz} != runner.control_hz {runner_config.control_hz}; "
                             "the safety filter's per-second limits assume the loop rate")
        cameras = build_cameras(cfg.camera, sim=sim)
        stack.enter_context(robot)
        for cam in cameras.values():
            stack.enter_context(cam)
        yield Session(robot, cameras, runner_config, record, settings, sim)


def ask_label(prompt: str = "success? [y]es / [n]o / Enter = unlabelled: ") -> int:
    """Operator's success label from the terminal (unlabelled when stdin is not a terminal)."""
    if not sys.stdin.isatty():
        return UNLABELLED
    answer = input(prompt).strip().lower()
    return SUCCESS if answer.startswith("y") else FAILURE if answer.startswith("n") else UNLABELLED


def run_rollouts(session: Session, policy: Policy, store: EpisodeStore | None, episodes: int,
                 meta: dict[str, Any] | None = None, decide: Callable[[RolloutResult], int | None] | None = None,
                 start_joints: Sequence[float] | None = None, scenes: EpisodeStore | None = None) -> list[RolloutResult]:
    """`episodes` rollouts; after each, `decide` gives the success label (None = discard), then it is saved.
    Each starts at `start_joints` (a joint motion, gripper opened) if given, else home. On franky-sim
    the cube is put back before each: as it started in episode i of `scenes` if given, else at the
    nominal pose; the outcomes (cube lifted?) are summarised at the end and in rehearsal.json.

    Stops early after a fault (lost connection, reflex, Ctrl-C...): the rollout so far is still saved.
    """
    results, outcomes = [], []
    config = session.runner_config
    if start_joints is not None:
        config = dataclasses.replace(config, home_at_start=False)
    with DeployRunner(session.robot, session.cameras, policy, config) as runner:
        for i in range(episodes):
            scene = scenes.get_episode(i, [k for k in CUBE_KEYS if k in scenes.data_spec]) if scenes is not None else None
            if session.sim is not None and session.sim.has_cube:
                if scene is not None:
                    _place_cube(session, scene)
                else:
                    session.sim.reset_cube()  # every rollout from the same nominal scene
            if start_joints is not None and not config.dry_run:
                _go_to_joints(session.robot, start_joints)
            result = runner.run_episode()
            print(f"\nrollout {i + 1}/{episodes}: {result.n_steps} steps, stop: {result.stop_reason} {result.message}")
            print(result.log.format_table())
            if session.sim is not None:
                outcome = _sim_outcome(session, result, scene)
                outcomes.append({"rollout": i, **outcome})
                print(_sim_report(outcome))
            if decide is not None and result.stop_reason not in FAULTS:
                label = decide(result)
            else:
                label = ask_label() if session.record.label == "ask" and result.stop_reason not in FAULTS else UNLABELLED
            if label is not None:
                index = runner.save(result, store, label, session.log_dir, meta)
                if index is not None:
                    print(f"saved as episode {index} of {store.path} (label {label})")
            results.append(result)
            if result.stop_reason in FAULTS:
                print(f"stopping the session after a fault: {result.stop_reason}")
                break
    if any("cube_lifted" in o for o in outcomes):
        from hardware.rollout_log import write_json

        lifted = sum(o["cube_lifted"] for o in outcomes)
        print(f"\nfranky-sim rehearsal: {lifted}/{len(outcomes)} cubes lifted "
              f"({'scenes of ' + str(scenes.path) if scenes is not None else 'nominal scene'})")
        write_json(session.log_dir / "rehearsal.json", {"cubes_lifted": lifted, "rollouts": len(outcomes),
                                                        "scenes": str(scenes.path) if scenes is not None else None,
                                                        "outcomes": outcomes})
    return results


def _sim_outcome(session: Session, result: RolloutResult, scene: dict[str, np.ndarray] | None) -> dict[str, Any]:
    """franky-sim rehearsal outcome: where the cube is, how low the measured hand went, why it stopped."""
    out: dict[str, Any] = {"stop_reason": result.stop_reason, "steps": result.n_steps}
    if scene is not None and "episode_seed" in scene:
        out["scene_seed"] = int(scene["episode_seed"][0, 0])
    if session.sim.has_cube:
        out.update(_cube_lift(session))
    if result.episode is not None:
        out["lowest_tcp_z_m"] = float(result.episode["eef_pos"][:, 2].min())
        out["floor_guard_m"] = float(session.robot.safety.config.workspace_min[2])
    return out


def _cube_lift(session: Session) -> dict[str, Any]:
    """franky-sim's cube now: its bottom's height above the table [m] and whether that counts as lifted."""
    lift = session.sim.cube_lift()
    return {"cube_lift_m": lift, "cube_lifted": bool(lift >= LIFT_HEIGHT)}


def _sim_report(outcome: dict[str, Any]) -> str:
    parts = [f"scene seed {outcome['scene_seed']}"] if "scene_seed" in outcome else []
    if "cube_lift_m" in outcome:
        parts.append(f"cube bottom {outcome['cube_lift_m'] * 100:.1f} cm above the table "
                     f"({'lifted' if outcome['cube_lifted'] else 'not lifted'})")
    if "lowest_tcp_z_m" in outcome:
        parts.append(f"lowest measured TCP z {outcome['lowest_tcp_z_m']:.4f} m (floor guard {outcome['floor_guard_m']} m)")
    return "franky-sim: " + "; ".join(parts)


def deploy(cfg: DictConfig) -> list[RolloutResult]:
    """deploy_policy.py: policy from `checkpoint` or `policy`, rollouts recorded to `record.store`."""
    from hardware.policy_loader import build_policy, prepare_checkpoint

    node = _policy_node(cfg)
    image_size, start_joints = prepare_checkpoint(node["checkpoint"]) if node.get("checkpoint") else (None, None)
    start = cfg.get("start", "demos")
    if start not in ("demos", "home"):
        raise UserError(f"start must be 'demos' or 'home', got {start!r}")
    if start == "demos" and node.get("checkpoint") and start_joints is None:
        print("note: the checkpoint records no start pose of its demonstrations; rollouts start home", flush=True)
    scenes = _rehearsal_scenes(cfg.get("sim_scenes") or "", session_settings(cfg))
    with open_session(cfg) as session:
        if node.get("type") == "scripted":
            node.setdefault("action", to_dict(session.robot.config.action))  # the scripted pick speaks the robot's convention
            if session.sim is not None and "cube_pos" not in node:
                node["cube_pos"] = session.sim.cube_pos().tolist()
        policy = build_policy(node, session.shape_meta(image_size), session.robot.config.action)
        store = session.open_store(policy.shape_meta, "deploy")
        meta = {"policy": node, "dry_run": session.runner_config.dry_run}
        return run_rollouts(session, policy, store, session.settings.episodes, meta,
                            start_joints=start_joints if start == "demos" else None, scenes=scenes)


def _rehearsal_scenes(path: str, settings: SessionConfig) -> EpisodeStore | None:
    """The store whose episodes' starting cubes a franky-sim rehearsal places (sim_scenes=PATH)."""
    if not path:
        return None
    if not settings.sim:
        raise UserError("sim_scenes places the cube of franky-sim's world: use it with sim=true")
    store = EpisodeStore.open(path)
    if "cube_pos" not in store.data_spec:
        raise UserError(f"sim_scenes={path}: the store has no cube_pos (collect it with collect_demos.py)")
    if store.n_episodes < settings.episodes:
        raise UserError(f"sim_scenes={path} holds {store.n_episodes} episodes, episodes={settings.episodes} asked")
    return store


def collect_teleop(cfg: DictConfig) -> int:
    """collect_teleop.py: teleoperated episodes into `record.store`; keep / discard / redo each. Returns kept.

    `episodes` counts kept and discarded episodes (a redo does not count).
    """
    from hardware.teleop import TeleopConfig, teleop_policy

    teleop_cfg = as_dataclass(TeleopConfig, cfg.teleop)
    kept = 0
    with open_session(cfg) as session:
        shape_meta = session.shape_meta()
        store = session.open_store(shape_meta, "teleop", {"teleop": to_dict(teleop_cfg)})
        with teleop_policy(teleop_cfg, shape_meta) as policy, \
                DeployRunner(session.robot, session.cameras, policy, session.runner_config) as runner:
            episode = 0
            while episode < session.settings.episodes:
                policy.device.new_episode()
                print(f"\nepisode {episode + 1}/{session.settings.episodes}: the arm is home; drive it (Enter ends)")
                result = runner.run_episode()
                print(f"{result.n_steps} steps, stop: {result.stop_reason} {result.message}")
                if result.stop_reason in FAULTS:
                    print("not saved: the episode ended on a fault")
                    if result.stop_reason != "reflex":
                        break
                    continue
                choice = policy.device.choose("keep [y] / discard [n] / redo [e]? ", "yne")
                if choice == "y":
                    index = runner.save(result, store, SUCCESS, session.log_dir, {"teleop": to_dict(teleop_cfg)})
                    kept += 1
                    print(f"kept as episode {index}")
                if choice in "yn":
                    episode += 1
    return kept


def replay_episode(cfg: DictConfig) -> dict[str, Any]:
    """replay_episode.py. mode=offline: recorded obs -> policy, errors + plot; mode=online: the
    episodes' actions through the runner (franky-sim with sim=true, or the robot), with safety,
    each from where it started; prints the end-effector path error relative to the start pose.

    A store made under another action convention than the robot's is refused.
    """
    from hardware.replay import compare_actions, open_replay_store, plot_comparison
    from hardware.rollout_log import write_json

    store = open_replay_store(cfg.store, as_dataclass(ActionConvention, cfg.robot.action))
    if cfg.mode == "offline":
        from hardware.policy_loader import build_policy

        episode = store.get_episode(cfg.episode)
        node = _policy_node(cfg)
        if "checkpoint" not in node:
            if not node.get("type"):
                raise UserError("replay_episode.py mode=offline compares a policy with the recorded actions: give "
                                "checkpoint=PATH (or policy.type=tiny_torch to run an untrained network on purpose)")
            print(f"WARNING: no checkpoint: comparing with an UNTRAINED {node['type']} policy built from its config; "
                  "its errors say nothing about a trained policy", flush=True)
        policy = build_policy(node, store.shape_meta, as_dataclass(ActionConvention, cfg.robot.action), what=f"store {cfg.store}")
        report = compare_actions(policy, episode)
        out = Path(cfg.record.log_dir) if cfg.record.log_dir else _hydra_dir()
        plot = plot_comparison(report, out / f"replay_episode_{cfg.episode}.png", f"{cfg.store} episode {cfg.episode}")
        summary = {k: v for k, v in report.items() if k not in ("predicted", "recorded")}
        write_json(out / f"replay_episode_{cfg.episode}.json", {**summary, "plot": str(plot), "policy": node})
        untrained = "" if cfg.get("checkpoint") else f" [UNTRAINED {node['type']} policy]"
        print(f"offline replay of episode {cfg.episode}{untrained}: mean MAE {summary['mae_mean']:.4f}, "
              f"per dim {[round(x, 4) for x in summary['mae']]}, gripper agreement {summary['gripper_agreement']:.1%}")
        print(f"plot: {plot}")
        return summary
    if cfg.mode != "online":
        raise ValueError(f"mode must be 'online' or 'offline', got {cfg.mode!r}")
    return _replay_online(cfg, store)


def _replay_online(cfg: DictConfig, store: EpisodeStore) -> dict[str, Any]:
    """Episodes cfg.episode .. + episodes - 1, each from its start pose (and cube, on franky-sim)."""
    from hardware.replay import path_error
    from hardware.simple_policies import ReplayPolicy

    first, count = int(cfg.episode), session_settings(cfg).episodes
    if not 0 <= first or first + count > store.n_episodes:
        raise ValueError(f"episodes {first}..{first + count - 1} asked, {cfg.store} holds {store.n_episodes}")
    rows: list[dict[str, Any]] = []
    with open_session(cfg) as session:
        runner_config = dataclasses.replace(session.runner_config, home_at_start=False)  # starts where the episode did
        out_store = session.open_store(session.shape_meta(), "replay", {"replayed_from": str(cfg.store)})
        for i in range(first, first + count):
            episode = store.get_episode(i)
            if not runner_config.dry_run:
                _go_to_episode_start(session, episode)
            policy = ReplayPolicy(episode["action"], session.shape_meta())
            with DeployRunner(session.robot, session.cameras, policy, runner_config) as runner:
                result = runner.run_episode()
                runner.save(result, out_store, UNLABELLED, session.log_dir, {"replayed_from": f"{cfg.store}#{i}"})
            row: dict[str, Any] = {"episode": i, "stop_reason": result.stop_reason, "steps": result.n_steps,
                                   "recorded_steps": len(episode["action"])}
            if result.episode is not None:
                err = path_error(episode["eef_pos"], result.episode["eef_pos"])
                row.update(eef_path_error_mean_m=err["mean_m"], eef_path_error_max_m=err["max_m"])
            if session.sim is not None and session.sim.has_cube:
                row.update(_cube_lift(session))
            rows.append(row)
            print(f"episode {i}: {result.n_steps}/{row['recorded_steps']} steps, stop {result.stop_reason}; "
                  + (f"end-effector path error vs recorded, from each start pose: mean {row['eef_path_error_mean_m'] * 100:.2f} cm, "
                     f"max {row['eef_path_error_max_m'] * 100:.2f} cm" if "eef_path_error_mean_m" in row else "no steps")
                  + (f"; cube bottom {row['cube_lift_m'] * 100:.1f} cm above the table" if "cube_lift_m" in row else ""))
            if result.stop_reason in FAULTS:
                print(f"stopping after a fault: {result.stop_reason} {result.message}")
                break
    summary = _replay_summary(rows)
    print(f"online replay of {len(rows)} episode(s): {summary}")
    return {"episodes": rows, **summary}


def _go_to_episode_start(session: Session, episode: dict[str, np.ndarray]) -> None:
    """Arm to the episode's first joint angles, gripper open; on franky-sim the cube where it was."""
    _go_to_joints(session.robot, episode["joint_pos"][0])
    if session.sim is not None and session.sim.has_cube and "cube_pos" in episode:
        _place_cube(session, episode)
        session.robot.clear_queue()


def _place_cube(session: Session, episode: dict[str, np.ndarray]) -> None:
    """franky-sim's cube where (and as large as) it was at the start of a recorded episode."""
    quat = episode["cube_quat"][0] if "cube_quat" in episode else np.array([1.0, 0, 0, 0])
    size = float(episode["cube_size"][0, 0]) if "cube_size" in episode else session.sim.cube_size()
    session.sim.place_cube(episode["cube_pos"][0], quat, size)


def _go_to_joints(robot: Robot, joints: Sequence[float]) -> None:
    """Arm to `joints` (a joint motion at home speed, inside the joint limits), gripper open, queues cleared."""
    robot.stop()  # a joint motion cannot take over from a running Cartesian stream
    robot.move_joints(joints)
    robot.open_gripper()
    robot.clear_queue()


def _replay_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r for r in rows if "eef_path_error_mean_m" in r]
    out: dict[str, Any] = {}
    if errs:
        out["eef_path_error_mean_m"] = float(np.mean([r["eef_path_error_mean_m"] for r in errs]))
        out["eef_path_error_max_m"] = float(np.max([r["eef_path_error_max_m"] for r in errs]))
    if any("cube_lifted" in r for r in rows):
        out["cubes_lifted"] = f"{sum(r.get('cube_lifted', False) for r in rows)}/{len(rows)}"
    return out


def _policy_node(cfg: DictConfig) -> dict[str, Any]:
    """`policy` node (type + keys, or runtime keys of a checkpoint's class) with `checkpoint` merged in.

    With a checkpoint, the `type` default of the config file does not apply (the file names its class)."""
    node = OmegaConf.to_container(cfg.policy, resolve=True) if cfg.get("policy") is not None else {}
    if cfg.get("checkpoint"):
        node = {k: v for k, v in node.items() if k != "type"}
        node["checkpoint"] = cfg.checkpoint
    return node


def _hydra_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path("outputs/replay_episode")
