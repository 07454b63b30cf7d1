"""Simulated environments. Importing registers the gymnasium id "toto/CubePick-v0".

MuJoCo fixes its GL backend when `mujoco` is first imported, so the headless default (EGL when
MUJOCO_GL is unset and there is no display) is put in place here, before any submodule imports
MuJoCo. A bad MUJOCO_GL value is reported (GLBackendError) when an env that renders is made.
Heavy modules (MuJoCo scene, renderer) load when an env is made, not on import.
"""

from __future__ import annotations

import gymnasium as gym

from envs.gl import GLBackendError, check_mujoco_gl_env

try:
    check_mujoco_gl_env()
except GLBackendError:
    pass  # raised again, with the same message, by the first env that renders

ENV_ID = "toto/CubePick-v0"

if ENV_ID not in gym.registry:
    # The env truncates itself at cfg.episode_len; no TimeLimit wrapper.
    gym.register(id=ENV_ID, entry_point="envs.cube_pick:CubePickEnv")
