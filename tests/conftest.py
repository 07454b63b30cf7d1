"""Test-wide settings: headless MuJoCo rendering, no accidental GPU use."""

import os

# MuJoCo reads MUJOCO_GL at import; EGL on Mesa (llvmpipe) works on CI machines without a display.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
