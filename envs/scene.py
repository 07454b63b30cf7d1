"""The cube_pick MuJoCo scene: FR3 arm + Franka hand on a table, a cube, two cameras, one light.

Built with `mujoco.MjSpec` from the committed assets (envs/assets/fr3.xml), so it needs neither
franky-sim nor network access. Frames: world = robot base frame (base at the origin, table top
at z = 0, x pointing away from the robot).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

ASSETS = Path(__file__).resolve().parent / "assets"
ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
TABLE_CENTER = np.array([0.5, 0.0, 0.0])  # cube spawn centre on the table top [m]
TABLE_HALF = (0.45, 0.6, 0.02)  # table box half sizes [m]
TCP_OFFSET = 0.1034  # flange (hand body) to fingertip centre along hand z [m]
GRIP_GAIN = 2.0  # hand actuator gain multiplier: ~5 N squeeze on a 5 cm cube (stiffer grips get soft-contact jitter)
RENDER_MODES = ("realistic", "fast")
TABLE_TEXTURES = ("plain", "checker", "grid", "gradient")


@dataclass(frozen=True)
class CameraPose:
    """Nominal camera placement: position and look-at target in the parent body frame [m]."""

    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy: float  # vertical field of view [deg]


CAMERAS = {
    "agentview": CameraPose((1.05, 0.0, 0.5), (0.4, 0.0, 0.08), (0.0, 0.0, 1.0), 50.0),
    # On the hand, beside the fingers, looking between the fingertips (hand z points out of the flange).
    "wrist": CameraPose((0.07, 0.0, 0.04), (0.0, 0.0, 0.2), (-1.0, 0.0, 0.0), 75.0),
}
CAMERA_PARENT = {"agentview": None, "wrist": "hand"}


def look_at_quat(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """w-x-y-z quaternion of a MuJoCo camera at `pos` looking at `target` (camera looks along -z)."""
    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    z = -f
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, z], axis=1).ravel())
    return quat


def build_model(render_mode: str = "realistic", sim_dt: float = 0.01) -> mujoco.MjModel:
    """Compile the scene. "fast" drops the visual meshes and draws the collision geoms instead."""
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    spec = mujoco.MjSpec.from_file(str(ASSETS / "fr3.xml"))
    spec.meshdir = str(ASSETS / "meshes")
    spec.option.timestep = sim_dt
    # Grasping: elliptic cones with a high impedance ratio keep the cube from slipping between
    # the pads at a 10 ms step; friction comes from the pads and the cube, no welds.
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    spec.visual.quality.shadowsize = 0  # shadows cost ~30 ms/frame on llvmpipe
    spec.visual.global_.offwidth = 640
    spec.visual.global_.offheight = 640
    spec.stat.center = [0.4, 0.0, 0.2]
    spec.stat.extent = 1.0

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
    hand_act = spec.actuator("hand")
    hand_act.gainprm[0] *= GRIP_GAIN  # stronger grasp (kept well under the 140 N force range)
    hand_act.biasprm[1] *= GRIP_GAIN
    hand_act.biasprm[2] *= GRIP_GAIN
    if render_mode == "fast":
        _collision_as_visual(spec)

    world = spec.worldbody
    _add_table(spec, world)
    cube = world.add_body(name="cube", pos=[0.5, 0.0, 0.025])
    cube.add_freejoint(name="cube_joint")
    cube.add_geom(
        name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.025] * 3, mass=0.1, rgba=[0.85, 0.1, 0.1, 1],
        friction=[0.8, 0.01, 0.001], condim=4,
    )
    hand = spec.body("hand")
    hand.add_site(name="tcp", pos=[0, 0, TCP_OFFSET], size=[0.005] * 3, group=4)
    for name in ("left_finger", "right_finger"):
        for geom in spec.body(name).geoms:
            if geom.classname.name.startswith("fingertip_pad"):
                # Pads win contact-parameter mixing (priority): grippy pad-cube contacts while the
                # cube still slides on the table (cube-table friction 0.8 vs table 1.0 -> max 1.0).
                geom.friction = [1.5, 0.01, 0.001]
                geom.condim = 4
                geom.priority = 1

    for name, cam in CAMERAS.items():
        parent = world if CAMERA_PARENT[name] is None else spec.body(CAMERA_PARENT[name])
        parent.add_camera(
            name=name, pos=list(cam.pos), quat=list(look_at_quat(np.array(cam.pos), np.array(cam.target), np.array(cam.up))),
            fovy=cam.fovy,
        )
    world.add_light(name="key", pos=[0.6, 0.4, 1.5], dir=[-0.2, -0.3, -1.0], castshadow=False, diffuse=[0.7] * 3)
    spec.visual.headlight.ambient = [0.3, 0.3, 0.3]
    spec.visual.headlight.diffuse = [0.3, 0.3, 0.3]
    return spec.compile()


def _add_table(spec: mujoco.MjSpec, world: mujoco.MjsBody) -> None:
    """Table top at z=0 under the robot, a floor, and one material per table texture choice."""
    spec.add_texture(name="checker", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     rgb1=[1, 1, 1], rgb2=[0.6, 0.6, 0.6], width=64, height=64)
    spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     mark=mujoco.mjtMark.mjMARK_EDGE, markrgb=[0.3, 0.3, 0.3], rgb1=[1, 1, 1], rgb2=[1, 1, 1],
                     width=64, height=64)
    spec.add_texture(name="gradient", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                     rgb1=[1, 1, 1], rgb2=[0.5, 0.5, 0.5], width=64, height=64)
    for tex in TABLE_TEXTURES:
        mat = spec.add_material(name=f"table_{tex}", rgba=[0.6, 0.5, 0.4, 1])
        if tex != "plain":
            mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex
            mat.texrepeat = [4, 4]
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF),
                   pos=[TABLE_HALF[0] - 0.2, 0.0, -TABLE_HALF[2]], material="table_plain", friction=[0.6, 0.01, 0.001])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75],
                   rgba=[0.35, 0.35, 0.38, 1], contype=0, conaffinity=0)


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
