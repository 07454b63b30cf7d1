"""The cube_pick world, defined once: robot model, table, cube, cameras, light and contact settings.

Both the simulated task (`envs.scene`) and the franky-sim rehearsal world
(`hardware.franky_sim_server`) are built from this module, so a rehearsal renders the views and
runs the contacts a policy was trained on. Frames: world = robot base frame (base at the origin,
table top at z = 0, x pointing away from the robot). Lengths in m, angles in degrees where named.

The FR3 arm + Franka hand is the MuJoCo Menagerie model as shipped by franky-sim (Apache-2.0),
copied with its NOTICE into `assets/` with visual meshes decimated (`assets/make_assets.py`):
rendering cost on a CPU rasteriser is set by triangle count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # MuJoCo is imported on use: importing it fixes its GL backend (MUJOCO_GL) for the process
    import mujoco

ASSETS = Path(__file__).resolve().parent / "assets"
ROBOT_XML = ASSETS / "fr3.xml"
MESH_DIR = ASSETS / "meshes"

TABLE_HALF = (0.45, 0.6, 0.02)  # table box half sizes; its top is the plane z = 0
TABLE_POS = (TABLE_HALF[0] - 0.2, 0.0, -TABLE_HALF[2])  # the robot base stands on it, 0.2 m from the near edge
TABLE_RGBA = (0.6, 0.5, 0.4, 1.0)
TABLE_FRICTION = (0.6, 0.01, 0.001)
TABLE_TEXTURES = ("plain", "checker", "grid", "gradient")  # one material each (randomized in the env)
FLOOR_Z = -0.75  # the room's floor: it collides, so a dropped cube comes to rest

CUBE_CENTER = (0.5, 0.0)  # nominal cube position on the table (x, y)
CUBE_SIZE_RANGE = (0.04, 0.06)  # edge lengths the task uses
CUBE_HALF = 0.025  # nominal half edge
CUBE_MASS = 0.1  # kg
CUBE_RGBA = (0.85, 0.1, 0.1, 1.0)
CUBE_FRICTION = (0.8, 0.01, 0.001)
PAD_FRICTION = (1.5, 0.01, 0.001)  # fingertip pads: grippy, and they win contact mixing (priority)
LIFT_HEIGHT = 0.05  # a cube counts as lifted when its bottom is this far above the table
# Robot-side stand-in for that success (a real arm cannot see the cube's height): the fingers hold
# something of a task cube's width (closing, width in HELD_WIDTH and steady) with the TCP at least
# HELD_LIFT_Z high, so a cube gripped anywhere up to its top edge has its bottom LIFT_HEIGHT up.
HAND_OPEN_WIDTH = 0.08  # [m] finger distance of the open Franka hand
# [m] finger distance on a grasped cube: its edge, up to nearly the open hand (a yawed cube is
# gripped across its corners); an empty hand closes to ~0
HELD_WIDTH = (0.9 * CUBE_SIZE_RANGE[0], HAND_OPEN_WIDTH - 0.002)
HELD_LIFT_Z = LIFT_HEIGHT + CUBE_SIZE_RANGE[1]  # [m] TCP height
HELD_STEADY = 0.002  # [m] most the finger distance may change in one control step while holding

TCP_OFFSET = 0.1034  # flange (hand body) to the fingertip centre along hand z, as franky's default EE frame
FINGERTIP_BELOW_TCP = 0.009  # lowest point of the finger collision geoms under the TCP, pointing down
# The floor guard: lowest TCP height targets may have. Pointing down, the fingertips then clear the
# table by 6 mm, and a 4 cm cube is grasped with its top 2.5 cm above the TCP.
FLOOR_GUARD = 0.015


@dataclass(frozen=True)
class CameraPose:
    """Nominal camera: position and look-at target in the parent body frame [m], up vector, vertical fov [deg]."""

    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    fovy: float


CAMERAS = {
    "agentview": CameraPose((1.05, 0.0, 0.5), (0.4, 0.0, 0.08), (0.0, 0.0, 1.0), 50.0),
    # On the hand, beside the fingers, looking between the fingertips (hand z points out of the flange).
    "wrist": CameraPose((0.07, 0.0, 0.04), (0.0, 0.0, 0.2), (-1.0, 0.0, 0.0), 75.0),
}
CAMERA_PARENT = {"agentview": None, "wrist": "hand"}  # None: fixed in the world
LIGHT_POS = (0.6, 0.4, 1.5)
LIGHT_DIR = (-0.2, -0.3, -1.0)
LIGHT_DIFFUSE = 0.7
HEADLIGHT = {"ambient": 0.3, "diffuse": 0.3, "specular": 0.5}
OFFSCREEN_SIZE = 640  # largest offscreen render [px]
MSAA_SAMPLES = 4  # multisampling of offscreen renders (MuJoCo's default; franky-sim asks 8)

# Contact model: elliptic friction cones with a high impedance ratio keep a cube from creeping out
# of the closed fingers; with a <= 5 ms time step (the env's) held cubes neither slip nor drift.
IMPRATIO = 10.0


def load_robot_spec() -> mujoco.MjSpec:
    """FR3 + Franka hand (body names "fr3_link0".."fr3_link7", "hand", "left_finger", "right_finger")."""
    import mujoco

    spec = mujoco.MjSpec.from_file(str(ROBOT_XML))
    spec.meshdir = str(MESH_DIR)
    return spec


def look_at_quat(pos: np.ndarray, target: np.ndarray, up: np.ndarray) -> np.ndarray:
    """w-x-y-z quaternion of a MuJoCo camera at `pos` looking at `target` (camera looks along -z)."""
    import mujoco

    f = np.asarray(target, float) - np.asarray(pos, float)
    f /= np.linalg.norm(f)
    x = np.cross(f, up)
    x /= np.linalg.norm(x)
    z = -f
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, z], axis=1).ravel())
    return quat


def add_world(spec: mujoco.MjSpec, prefix: str = "", cube: bool = True, cameras: bool = True) -> None:
    """Add the cube_pick world around a robot already in `spec` (its body names prefixed `prefix`).

    Adds: contact settings, render settings, the table (one material per texture), the colliding
    floor, the cube (body "cube", free joint "cube_joint", geom "cube"), the "tcp" site on the
    hand, grippy fingertip pads, the cameras and the key light. Time step and actuators are the
    caller's (the env and franky-sim drive the arm differently).
    """
    import mujoco

    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = IMPRATIO
    spec.visual.quality.shadowsize = 0  # a shadow map costs ~30 ms a frame on llvmpipe
    spec.visual.quality.offsamples = MSAA_SAMPLES
    spec.visual.global_.offwidth = OFFSCREEN_SIZE
    spec.visual.global_.offheight = OFFSCREEN_SIZE
    for key, value in HEADLIGHT.items():
        setattr(spec.visual.headlight, key, [value] * 3)
    spec.visual.headlight.active = 1
    spec.stat.center = [0.4, 0.0, 0.2]
    spec.stat.extent = 1.0

    world = spec.worldbody
    _add_table(spec, world)
    if cube:
        body = world.add_body(name="cube", pos=[*CUBE_CENTER, CUBE_HALF])
        body.add_freejoint(name="cube_joint")
        body.add_geom(name="cube", type=mujoco.mjtGeom.mjGEOM_BOX, size=[CUBE_HALF] * 3, mass=CUBE_MASS,
                      rgba=list(CUBE_RGBA), friction=list(CUBE_FRICTION), condim=4)
    hand = spec.body(prefix + "hand")
    hand.add_site(name="tcp", pos=[0, 0, TCP_OFFSET], size=[0.005] * 3, group=4)
    for name in ("left_finger", "right_finger"):
        for geom in spec.body(prefix + name).geoms:
            if geom.classname.name.startswith("fingertip_pad"):
                # Pads win contact-parameter mixing (priority): grippy pad-cube contacts while the
                # cube still slides on the table (cube-table friction 0.8 vs table 0.6 -> max 0.8).
                geom.friction = list(PAD_FRICTION)
                geom.condim = 4
                geom.priority = 1
    if cameras:
        for name, cam in CAMERAS.items():
            parent = world if CAMERA_PARENT[name] is None else spec.body(prefix + CAMERA_PARENT[name])
            parent.add_camera(name=name, pos=list(cam.pos), fovy=cam.fovy,
                              quat=list(look_at_quat(np.array(cam.pos), np.array(cam.target), np.array(cam.up))))
    world.add_light(name="key", pos=list(LIGHT_POS), dir=list(LIGHT_DIR), castshadow=False, diffuse=[LIGHT_DIFFUSE] * 3)


def _add_table(spec: mujoco.MjSpec, world: mujoco.MjsBody) -> None:
    """Table top at z=0 under the robot, the floor, and one material per table texture choice."""
    import mujoco

    spec.add_texture(name="checker", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     rgb1=[1, 1, 1], rgb2=[0.6, 0.6, 0.6], width=64, height=64)
    spec.add_texture(name="grid", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
                     mark=mujoco.mjtMark.mjMARK_EDGE, markrgb=[0.3, 0.3, 0.3], rgb1=[1, 1, 1], rgb2=[1, 1, 1],
                     width=64, height=64)
    spec.add_texture(name="gradient", type=mujoco.mjtTexture.mjTEXTURE_2D, builtin=mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                     rgb1=[1, 1, 1], rgb2=[0.5, 0.5, 0.5], width=64, height=64)
    for tex in TABLE_TEXTURES:
        mat = spec.add_material(name=f"table_{tex}", rgba=list(TABLE_RGBA))
        if tex != "plain":
            mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex
            mat.texrepeat = [4, 4]
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF), pos=list(TABLE_POS),
                   material="table_plain", friction=list(TABLE_FRICTION))
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, FLOOR_Z],
                   rgba=[0.35, 0.35, 0.38, 1])


def resize_cube(model: mujoco.MjModel, half: float) -> None:
    """Set the cube's half edge [m] in a compiled model: geometry, collision bounds and inertia."""
    geom, body = model.geom("cube").id, model.body("cube").id
    model.geom_size[geom] = half
    model.geom_rbound[geom] = np.sqrt(3.0) * half  # broad-phase bounds must follow the size
    model.geom_aabb[geom, 3:] = half
    model.bvh_aabb[model.body_bvhadr[body], 3:] = half  # the body-level BVH box is also checked
    model.body_inertia[body] = model.body_mass[body] * (2 * half) ** 2 / 6.0


def place_cube(model: mujoco.MjModel, data: mujoco.MjData, pos: np.ndarray, quat: np.ndarray, half: float) -> None:
    """Put the cube (half edge `half` [m]) at pos (3,) [m], quat (4,) w-x-y-z, at rest."""
    resize_cube(model, half)
    joint = model.joint("cube_joint")
    qpos, dof = model.jnt_qposadr[joint.id], model.jnt_dofadr[joint.id]
    data.qpos[qpos:qpos + 7] = [*np.asarray(pos, float), *np.asarray(quat, float)]
    data.qvel[dof:dof + 6] = 0.0


def held_and_lifted(tcp_z: float, gripper_width: float, previous_width: float, closing: bool) -> bool:
    """The cube_pick task done, judged from what a real arm measures (TCP height [m], finger
    distance now and one control step before [m], whether the gripper is commanded closed): the
    deploy runner ends a rollout here as the simulated episode ends on its lift success."""
    return (closing and tcp_z >= HELD_LIFT_Z and HELD_WIDTH[0] <= gripper_width <= HELD_WIDTH[1]
            and abs(gripper_width - previous_width) <= HELD_STEADY)
