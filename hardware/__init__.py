"""Real-robot layer: the `Robot` interface, its franky backend, the safety filter, cameras.

Backends are registered by name and imported lazily, so `import hardware` needs neither franky
nor pyrealsense2. Build one from hydra config groups with `build_robot(cfg.robot, cfg.safety)`.
"""

from __future__ import annotations

from typing import Any

from toto_robot.config import as_dataclass
from toto_robot.registry import Registry

ROBOTS = Registry("robot")
ROBOTS.register("franky", "hardware.franky_robot:FrankyRobot")
ROBOTS.register("franky_faults", "hardware.faults:FaultInjectingRobot")  # tests and drills

# name -> "module:ConfigClass" of the backend's config dataclass (a RobotConfig subclass).
ROBOT_CONFIGS = Registry("robot config")
ROBOT_CONFIGS.register("franky", "hardware.franky_robot:FrankyConfig")
ROBOT_CONFIGS.register("franky_faults", "hardware.faults:FaultConfig")


def build_robot(robot_cfg: Any, safety_cfg: Any = None) -> Any:
    """Robot from the `robot` (with a `backend` key) and `safety` config groups; not yet connected."""
    from hardware.safety import SafetyConfig

    backend = robot_cfg["backend"] if robot_cfg is not None and "backend" in robot_cfg else "franky"
    config = as_dataclass(ROBOT_CONFIGS.get(backend), robot_cfg)
    return ROBOTS.build(backend, config, as_dataclass(SafetyConfig, safety_cfg))
