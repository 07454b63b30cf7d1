"""The cube_pick MuJoCo model of the simulated task: the shared world (`toto_robot.scene`) plus
what only the simulator needs, i.e. how its arm is actuated.

Frames: world = robot base frame (base at the origin, table top at z = 0, x pointing away from
the robot).
"""

from __future__ import annotations

import mujoco

from toto_robot.scene import CAMERAS, add_world, load_robot_spec

ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
GRIP_GAIN = 2.0  # hand actuator gain multiplier: ~5 N squeeze on a 5 cm cube (stiffer grips get soft-contact jitter)
# Joint servo damping kv = SERVO_DAMPING * kp [s]. The menagerie's kv = 0.1 kp is 3-8x critical
# damping: the servos lag ~0.1 s behind their set-point and saturate their torque when asked to
# cancel that lag. Near-critical damping plus velocity feed-forward (envs.controller) lets the
# arm reach each target within the control step, as a Franka does under franky.
SERVO_DAMPING = 0.03
RENDER_MODES = ("realistic", "fast")

__all__ = ["ARM_JOINTS", "CAMERAS", "FINGER_JOINTS", "RENDER_MODES", "build_model"]


def build_model(render_mode: str = "realistic", sim_dt: float = 0.005) -> mujoco.MjModel:
    """Compile the scene. "fast" drops the visual meshes and draws the collision geoms instead."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    spec = load_robot_spec()
    spec.option.timestep = sim_dt
    for body in spec.bodies:
        if body.name.startswith("fr3_link") or body.name in ("hand", "left_finger", "right_finger"):
            body.gravcomp = 1.0  # the menagerie arm has none: position servos would sag ~1 cm
    for name in FINGER_JOINTS:
        # The menagerie fingers inherit the arm's friction loss (1.1 N): against the hand's 4 N
        # open force they would take seconds to open. Armature 0.1 as in the menagerie Panda.
        joint = spec.joint(name)
        joint.armature = 0.1
        joint.frictionloss = 0.1
        joint.damping = [0.2, 0.0, 0.0]
    for name in ARM_JOINTS:
        act = spec.actuator(name)
        act.biasprm[2] = -SERVO_DAMPING * act.gainprm[0]
    hand_act = spec.actuator("hand")
    hand_act.gainprm[0] *= GRIP_GAIN  # stronger grasp (kept well under the 140 N force range)
    hand_act.biasprm[1] *= GRIP_GAIN
    hand_act.biasprm[2] *= GRIP_GAIN
    if render_mode == "fast":
        _collision_as_visual(spec)
    add_world(spec)
    return spec.compile()


def _collision_as_visual(spec: mujoco.MjSpec) -> None:
    """Fast render mode: remove the visual meshes and show the (coarse) collision geoms in group 2."""
    for geom in list(spec.geoms):
        if geom.classname.name == "visual":
            spec.delete(geom)
        elif geom.classname.name.startswith("collision") or geom.classname.name.startswith("fingertip"):
            geom.group = 2
            geom.rgba = [0.9, 0.9, 0.9, 1]
    for mesh in list(spec.meshes):
        if mesh.name.endswith("_coll") or mesh.name == "finger_0":
            continue
        spec.delete(mesh)
