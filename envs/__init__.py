"""Simulated environments. Importing registers the gymnasium id "toto/CubePick-v0".

MUJOCO_GL is validated here, before any submodule imports MuJoCo (which reads it once).
Heavy modules (MuJoCo scene, renderer) load when an env is made, not on import.
"""

from __future__ import annotations

import gymnasium as gym

from envs.gl import check_mujoco_gl_env

check_mujoco_gl_env()

ENV_ID = "toto/CubePick-v0"

if ENV_ID not in gym.registry:
    # The env truncates itself at cfg.episode_len; no TimeLimit wrapper.
    gym.register(id=ENV_ID, entry_point="envs.cube_pick:CubePickEnv")
