"""Typed configuration of the cube_pick environment (validated from conf/env/*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from toto_robot.action import ActionConvention
from toto_robot.scene import CUBE_SIZE_RANGE, FLOOR_GUARD, LIFT_HEIGHT


@dataclass
class RandomizationConfig:
    """Seeded domain randomization applied at every reset; `enabled: false` gives the nominal scene."""

    enabled: bool = True
    cube_x_range: float = 0.1  # spawn uniform in +-x around the table centre [m]
    cube_y_range: float = 0.2  # spawn uniform in +-y [m]
    cube_yaw: bool = True  # uniform yaw in [-pi/4, pi/4) (a cube's yaw is 90-degree periodic)
    cube_size: tuple[float, float] = CUBE_SIZE_RANGE  # edge length range [m]
    cube_color: bool = True
    table_color: bool = True
    table_texture: bool = True
    light_pos_jitter: float = 0.3  # [m] per axis
    light_intensity: tuple[float, float] = (0.4, 0.9)  # diffuse level
    camera_pos_jitter: float = 0.02  # [m] per axis
    camera_rot_jitter: float = 3.0  # [deg] about a random axis
    robot_qpos_noise: float = 0.02  # start joint angle noise [rad]


@dataclass
class SuccessConfig:
    """Success = cube bottom >= lift_height above the table, grasped, for hold_steps control steps."""

    lift_height: float = LIFT_HEIGHT  # [m]
    hold_steps: int = 10
    require_grasp: bool = True  # both fingers touching the cube (a thrown cube does not count)


@dataclass
class CubePickConfig:
    """cube_pick: FR3 + Franka hand lifts a cube. Frames: world = robot base, table top at z=0."""

    render_size: int = 128  # square camera images [px]
    cameras: list[str] = field(default_factory=lambda: ["agentview", "wrist"])
    render_mode: str = "realistic"  # "realistic" (decimated meshes) or "fast" (collision geoms)
    # What an action means (conf/action/default.yaml, shared with the robot): targets integrated on
    # the previous target, per-step scales, control rate. The arm reaches each target within the step.
    action: ActionConvention = field(default_factory=ActionConvention)
    substeps: int = 20  # physics steps per control step: sim_dt = 1 / (action.control_hz * substeps)
    episode_len: int = 100  # control steps before truncation
    terminate_on_success: bool = True
    start_pos: tuple[float, float, float] = (0.45, 0.0, 0.25)  # TCP start, gripper pointing down [m]
    # TCP targets are clipped to this box [m]: the robot's default safety box (conf/safety/default.yaml),
    # whose floor is the floor guard (fingertips above the table), so a policy meets the same walls.
    workspace_low: tuple[float, float, float] = (0.25, -0.35, FLOOR_GUARD)
    workspace_high: tuple[float, float, float] = (0.75, 0.35, 0.65)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    success: SuccessConfig = field(default_factory=SuccessConfig)

    @property
    def control_hz(self) -> float:
        return self.action.control_hz

    @property
    def sim_dt(self) -> float:
        """Physics time step [s]."""
        return 1.0 / (self.control_hz * self.substeps)
