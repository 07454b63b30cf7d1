"""Which OpenGL backend MuJoCo renders with, checked before the first renderer is made.

MuJoCo picks its backend from MUJOCO_GL when its GL module is first imported; a typo there
either raises deep inside rendering or falls back to GLFW, which fails on a headless box with an
unhelpful message. We validate the value ourselves and default to EGL when there is no display.
"""

from __future__ import annotations

import os
import sys

SUPPORTED = ("egl", "osmesa", "glfw")


class GLBackendError(RuntimeError):
    """MUJOCO_GL is set to a value we cannot render with."""


def select_gl_backend() -> str:
    """Validate MUJOCO_GL (setting it to "egl" when unset and headless); return the backend name."""
    value = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not value:
        value = "glfw" if os.environ.get("DISPLAY") or sys.platform != "linux" else "egl"
        if "mujoco.rendering.classic.gl_context" not in sys.modules:
            os.environ["MUJOCO_GL"] = value
    if value not in SUPPORTED:
        raise GLBackendError(
            f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} is not supported; use one of {SUPPORTED} "
            "(egl or osmesa for headless rendering)"
        )
    return active_gl_backend() or value


def active_gl_backend() -> str | None:
    """Backend of MuJoCo's loaded GL context class ("egl", "osmesa", "glfw"), None before import."""
    module = sys.modules.get("mujoco.rendering.classic.gl_context")
    cls = getattr(module, "GLContext", None)
    if cls is None:
        return None
    return cls.__module__.split(".")[1] if cls.__module__.startswith("mujoco.") else cls.__module__
