"""Simulated environments. Importing registers the gymnasium id "toto/CubePick-v0".

Heavy modules (MuJoCo scene, renderer) load when an env is made, not on import.
"""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "toto/CubePick-v0"

if ENV_ID not in gym.registry:
    # The env truncates itself at cfg.episode_len; no TimeLimit wrapper.
    gym.register(id=ENV_ID, entry_point="envs.cube_pick:CubePickEnv")

# MuJoCo fixes its GL backend when `mujoco` is first imported, so a headless default (EGL) must be
# in MUJOCO_GL before any module imports it. A bad value is reported when an env is made.
from envs.gl import GLBackendError, select_gl_backend

try:
    select_gl_backend()
except GLBackendError:
    pass
