"""CubePickEnv: a gymnasium env where the Franka arm picks up a cube from a table.

Action (7,) float32 in [-1, 1], meaning what it means on the robot (`toto_robot.action`, the
convention in `cfg.action`): the TCP target moves by [0:3] x max_translation [m] and turns by
[3:6] x max_rotation [rad] (axis-angle, base frame) from the *previous target*, leading the TCP
by at most max_lead; [6] > 0 closes the gripper. Observation: `<camera>_image`
(render_size^2 x 3 uint8) per camera, eef_pos (3) [m], eef_quat (4) w-x-y-z in the hemisphere of
`EEF_QUAT_REFERENCE` (continuous), gripper_width (1) [m], joint_pos (7) [rad].

Control: each step computes the next target (`ActionConvention.next_target`, clipped to the
workspace box as the robot's safety filter does), solves differential IK for a joint goal and
moves the joint servos there along a smooth trajectory with velocity feed-forward, so that the
TCP reaches each target within the step, as a Franka does under franky.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.config import CubePickConfig
from envs.controller import DiffIKController, ServoTrajectory
from envs.gl import select_gl_backend
from envs.randomization import Nominal, apply_params, sample_params
from envs.scene import ARM_JOINTS, CAMERAS, FINGER_JOINTS, build_model
from toto_robot.action import ActionConvention
from toto_robot.config import as_dataclass, to_dict
from toto_robot.rotations import quat_canonical
from toto_robot.scene import TABLE_TEXTURES
from toto_robot.spec import EEF_QUAT_REFERENCE, ShapeMeta, check_finite_action, franka_shape_meta

GRIPPER_OPEN, GRIPPER_CLOSED = 255.0, 0.0  # hand actuator ctrl range (0 = closed)
DOWN_QUAT = np.array(EEF_QUAT_REFERENCE)  # TCP pointing down (hand z along world -z)


def cube_pick_shape_meta(cameras: list[str], render_size: int) -> ShapeMeta:
    """The observation/action spec of cube_pick: the Franka rig's (`franka_shape_meta`) with these cameras."""
    return franka_shape_meta([f"{cam}_image" for cam in cameras], render_size)


class CubePickEnv(gym.Env):
    """See module docstring. Build with a `CubePickConfig` or keyword overrides of its fields.

    `render_mode` follows gymnasium (`render()` returns the agentview frame) and also picks the
    mesh detail: "realistic" (and "rgb_array") use decimated visual meshes, "fast" collision geoms.
    """

    metadata = {"render_modes": ["rgb_array", "realistic", "fast"], "render_fps": 10}

    def __init__(self, cfg: CubePickConfig | dict | None = None, **overrides: Any) -> None:
        base = to_dict(cfg) if cfg is not None else {}
        if overrides.get("render_mode") == "rgb_array" or overrides.get("render_mode") is None:
            overrides.pop("render_mode", None)
        self.cfg: CubePickConfig = as_dataclass(CubePickConfig, {**base, **overrides})
        cfg = self.cfg
        unknown = [c for c in cfg.cameras if c not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown cameras {unknown}; available: {sorted(CAMERAS)}")
        if cfg.render_size < 8 or cfg.substeps < 1 or cfg.control_hz <= 0 or cfg.episode_len < 1:
            raise ValueError(f"bad env config: render_size {cfg.render_size}, substeps {cfg.substeps}, "
                             f"control_hz {cfg.control_hz}, episode_len {cfg.episode_len}")
        self.render_mode = cfg.render_mode
        self.action_convention: ActionConvention = cfg.action
        self.gl_backend = select_gl_backend() if cfg.cameras else None
        self.model = build_model(cfg.render_mode, cfg.sim_dt)
        self.data = mujoco.MjData(self.model)
        self.shape_meta = cube_pick_shape_meta(list(cfg.cameras), cfg.render_size)
        bounds = {"eef_pos": 2.0, "eef_quat": 1.0, "gripper_width": 0.1, "joint_pos": 2 * np.pi}  # loose, finite
        self.observation_space = gym.spaces.Dict(
            {k: gym.spaces.Box(0, 255, s.shape, np.uint8) if s.kind == "rgb"
             else gym.spaces.Box(-bounds[k], bounds[k], s.shape, np.float32) for k, s in self.shape_meta.obs.items()}
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (7,), np.float32)

        m = self.model
        self._arm_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in ARM_JOINTS])
        self._arm_dof = np.array([m.jnt_dofadr[m.joint(j).id] for j in ARM_JOINTS])
        self._finger_qpos = np.array([m.jnt_qposadr[m.joint(j).id] for j in FINGER_JOINTS])
        self._arm_ctrl = np.array([m.actuator(j).id for j in ARM_JOINTS])
        lag = -m.actuator_biasprm[self._arm_ctrl, 2] / m.actuator_gainprm[self._arm_ctrl, 0]
        self.servo = ServoTrajectory(lag, 1.0 / cfg.control_hz, cfg.substeps)
        self._hand_ctrl = m.actuator("hand").id
        self._tcp = m.site("tcp").id
        self._cube_body = m.body("cube").id
        self._cube_geom = m.geom("cube").id
        self._cube_qpos = m.jnt_qposadr[m.joint("cube_joint").id]
        self._table_geom = m.geom("table").id
        self._table_mats = [m.material(f"table_{t}").id for t in TABLE_TEXTURES]
        self._light = m.light("key").id
        self._finger_side = np.full(m.ngeom, -1)  # geom -> 0 left finger, 1 right finger, -1 other
        for side, body in enumerate(("left_finger", "right_finger")):
            self._finger_side[m.geom_bodyid == m.body(body).id] = side
        self._cam_ids = {c: m.camera(c).id for c in CAMERAS}
        self._nominal = Nominal.capture(m, self._table_mats[0])
        home = m.key("home").qpos[self._arm_qpos]
        self.controller = DiffIKController(m, self._tcp, self._arm_qpos, self._arm_dof, q_rest=home)
        self._start_q = self._solve_start()
        self.controller.q_rest = self._start_q
        self._renderer: mujoco.Renderer | None = None
        self._params: dict[str, np.ndarray] = {}
        self._target_pos = np.zeros(3)
        self._target_quat = DOWN_QUAT.copy()
        self._gripper_ctrl = GRIPPER_OPEN
        self._steps = 0
        self._held = 0

    # ---------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        params = sample_params(self.cfg.randomization, self.np_random, self.model.ncam, len(ARM_JOINTS))
        self._apply(params)
        d = self.data
        mujoco.mj_resetData(self.model, d)
        d.qpos[self._arm_qpos] = self._start_q + params["arm_noise"]
        d.qpos[self._finger_qpos] = 0.04
        yaw = float(params["cube_yaw"])
        d.qpos[self._cube_qpos : self._cube_qpos + 7] = [*params["cube_xy"], float(params["cube_half"]),
                                                         np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        d.ctrl[self._arm_ctrl] = d.qpos[self._arm_qpos]
        self.servo.reset(d.qpos[self._arm_qpos])
        d.ctrl[self._hand_ctrl] = GRIPPER_OPEN
        mujoco.mj_forward(self.model, d)
        self._target_pos = d.site_xpos[self._tcp].copy()
        self._target_quat = self._tcp_quat()
        self._gripper_ctrl = GRIPPER_OPEN
        self._steps = 0
        self._held = 0
        return self._obs(), self._info(grasped=False, height=0.0)

    def step(self, action: np.ndarray) -> tuple[dict, float, bool, bool, dict]:
        a = check_finite_action(action, 7)
        cfg, d = self.cfg, self.data
        pos, self._target_quat, close = self.action_convention.next_target(
            self._target_pos, self._target_quat, a, d.site_xpos[self._tcp])
        self._target_pos = np.clip(pos, cfg.workspace_low, cfg.workspace_high)
        self._gripper_ctrl = GRIPPER_CLOSED if close else GRIPPER_OPEN
        d.ctrl[self._hand_ctrl] = self._gripper_ctrl
        q_goal = self.controller.joint_goal(d.qpos, self._target_pos, self._target_quat)
        for ctrl in self.servo.plan(q_goal):
            d.ctrl[self._arm_ctrl] = ctrl
            mujoco.mj_step(self.model, d)
        mujoco.mj_kinematics(self.model, d)  # site poses and contacts of the new state for obs
        mujoco.mj_collision(self.model, d)
        self._steps += 1

        grasped = self._grasped()
        height = float(d.xpos[self._cube_body, 2] - self._params["cube_half"])
        lifted = height >= cfg.success.lift_height
        self._held = self._held + 1 if lifted and (grasped or not cfg.success.require_grasp) else 0
        info = self._info(grasped, height)
        terms = info["reward_terms"]
        reward = float(sum(terms.values()))
        terminated = bool(info["is_success"] and cfg.terminate_on_success)
        truncated = self._steps >= cfg.episode_len
        return self._obs(), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        """Agentview frame (render_size^2 x 3 uint8)."""
        return self._render("agentview")

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---------------------------------------------------------------- replay and metadata
    def get_state(self) -> dict[str, Any]:
        """Everything needed to continue this episode bit-exactly (physics, controller, counters, scene)."""
        d = self.data
        return {
            "qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "act": d.act.copy(), "ctrl": d.ctrl.copy(),
            "qacc_warmstart": d.qacc_warmstart.copy(), "time": float(d.time),
            "target_pos": self._target_pos.copy(), "target_quat": self._target_quat.copy(),
            "servo_q": self.servo.q.copy(), "servo_v": self.servo.v.copy(),
            "gripper_ctrl": self._gripper_ctrl, "steps": self._steps, "held": self._held,
            "params": {k: v.copy() for k, v in self._params.items()},
        }

    def reset_to(self, state: dict[str, Any]) -> dict[str, np.ndarray]:
        """Restore a `get_state()` snapshot; returns the observation at that state."""
        self._apply({k: np.asarray(v) for k, v in state["params"].items()})
        d = self.data
        mujoco.mj_resetData(self.model, d)
        for key in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart"):
            getattr(d, key)[:] = state[key]
        d.time = state["time"]
        self._target_pos = np.array(state["target_pos"], dtype=float)
        self._target_quat = np.array(state["target_quat"], dtype=float)
        self.servo.reset(state["servo_q"], state["servo_v"])
        self._gripper_ctrl = float(state["gripper_ctrl"])
        self._steps, self._held = int(state["steps"]), int(state["held"])
        mujoco.mj_forward(self.model, d)
        return self._obs()

    def camera_params(self) -> dict[str, dict[str, Any]]:
        """camera -> {intrinsics 3x3, extrinsics 4x4 world_T_cam, height, width} at the current state.

        OpenCV convention (x right, y down, z forward) so `intrinsics` projects camera-frame
        points to pixels; the wrist camera's extrinsics move with the hand.
        """
        out = {}
        size = self.cfg.render_size
        gl_to_cv = np.diag([1.0, -1.0, -1.0])
        for cam in self.cfg.cameras:
            cid = self._cam_ids[cam]
            f = 0.5 * size / np.tan(np.deg2rad(self.model.cam_fovy[cid]) / 2)
            pose = np.eye(4)
            pose[:3, :3] = self.data.cam_xmat[cid].reshape(3, 3) @ gl_to_cv
            pose[:3, 3] = self.data.cam_xpos[cid]
            k = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
            out[cam] = {"intrinsics": k, "extrinsics": pose, "height": size, "width": size}
        return out

    @property
    def start_joints(self) -> np.ndarray:
        """Arm joints (7,) [rad] of the nominal start pose (TCP at cfg.start_pos pointing down);
        resets add `randomization.robot_qpos_noise` to them."""
        return self._start_q.copy()

    def cube_pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Privileged cube state: position [m], quaternion w-x-y-z, half edge length [m]."""
        return self.data.xpos[self._cube_body].copy(), self.data.xquat[self._cube_body].copy(), float(self._params["cube_half"])

    # ---------------------------------------------------------------- internals
    def _apply(self, params: dict[str, np.ndarray]) -> None:
        self._params = params
        apply_params(self.model, params, self._nominal, self._cube_geom, self._table_geom, self._table_mats, self._light)

    def _solve_start(self) -> np.ndarray:
        """Arm joint angles putting the TCP at cfg.start_pos pointing down (from the home keyframe)."""
        home = self.model.key("home").qpos.copy()
        q = self.controller.joint_goal(home, np.asarray(self.cfg.start_pos, float), DOWN_QUAT, iters=300)
        err = np.linalg.norm(self.controller.site_pose()[0] - self.cfg.start_pos)
        if err > 1e-3:
            raise ValueError(f"start_pos {self.cfg.start_pos} is unreachable (IK error {err:.3f} m)")
        return q

    def _tcp_quat(self) -> np.ndarray:
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, self.data.site_xmat[self._tcp])
        return quat

    def _grasped(self) -> bool:
        """Both fingers touch the cube (contacts from the last mj_collision)."""
        pairs = self.data.contact.geom[: self.data.ncon]
        other = np.concatenate([pairs[pairs[:, 0] == self._cube_geom, 1], pairs[pairs[:, 1] == self._cube_geom, 0]])
        sides = self._finger_side[other]
        return bool((sides == 0).any() and (sides == 1).any())

    def _info(self, grasped: bool, height: float) -> dict[str, Any]:
        d = self.data
        dist = float(np.linalg.norm(d.site_xpos[self._tcp] - d.xpos[self._cube_body]))
        success = self._held >= self.cfg.success.hold_steps
        return {
            "is_success": bool(success),
            "grasped": bool(grasped),
            "cube_height": height,
            "reward_terms": {
                "reach": 1.0 - float(np.tanh(10.0 * dist)),
                "grasp": float(grasped),
                "lift": float(np.clip(height / self.cfg.success.lift_height, 0.0, 1.0)) * float(grasped),
                "success": float(success),
            },
        }

    def _render(self, cam: str) -> np.ndarray:
        if self._renderer is None:
            size = self.cfg.render_size
            self._renderer = mujoco.Renderer(self.model, size, size)
        self._renderer.update_scene(self.data, camera=self._cam_ids[cam])
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        return self._renderer.render()

    def _obs(self) -> dict[str, np.ndarray]:
        d = self.data
        quat = self._tcp_quat()
        obs = {f"{cam}_image": self._render(cam) for cam in self.cfg.cameras}
        obs["eef_pos"] = d.site_xpos[self._tcp].astype(np.float32)
        obs["eef_quat"] = np.clip(quat_canonical(quat, DOWN_QUAT), -1.0, 1.0).astype(np.float32)
        obs["gripper_width"] = np.array([d.qpos[self._finger_qpos].sum()], dtype=np.float32)
        obs["joint_pos"] = d.qpos[self._arm_qpos].astype(np.float32)
        return obs
