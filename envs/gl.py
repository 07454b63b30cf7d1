"""Which OpenGL backend MuJoCo renders with, checked before MuJoCo reads MUJOCO_GL.

MuJoCo picks its backend from MUJOCO_GL when its GL module is first imported. Unset on a
headless machine it tries GLFW and fails at the first render with an unhelpful message; some
values (glx, "1", ...) select a backend that cannot work headless. `import envs` validates the
variable first (and defaults it to EGL when there is no display); `select_gl_backend` is what an
env calls before it renders.
"""

from __future__ import annotations

import os
import sys

from toto_robot.cli import UserError

SUPPORTED = ("egl", "osmesa", "glfw")
DISABLED = ("disable", "disabled", "off", "false", "0")  # MuJoCo's own "no rendering" values
_GL_MODULE = "mujoco.rendering.classic.gl_context"


class GLBackendError(UserError, RuntimeError):
    """MuJoCo cannot render with the GL backend that MUJOCO_GL selects (or that it picked itself)."""


def check_mujoco_gl_env() -> str:
    """Validate MUJOCO_GL (setting "egl" when unset and headless); returns the value in effect."""
    value = os.environ.get("MUJOCO_GL", "").strip().lower()
    if not value:
        value = "glfw" if _has_display() else "egl"
        if _GL_MODULE not in sys.modules:  # MuJoCo has not read it yet: our default takes effect
            os.environ["MUJOCO_GL"] = value
    if value not in SUPPORTED + DISABLED:
        raise GLBackendError(
            f"MUJOCO_GL={os.environ['MUJOCO_GL']!r} is not supported; use one of {SUPPORTED} "
            "(egl or osmesa for headless rendering)"
        )
    return value


def select_gl_backend() -> str:
    """Backend an env will render with ("egl", "osmesa" or "glfw"); GLBackendError if none."""
    value = check_mujoco_gl_env()
    if value in DISABLED:
        raise GLBackendError(f"MUJOCO_GL={value!r} disables rendering; cameras need one of {SUPPORTED}")
    backend = active_gl_backend() or value
    if backend == "glfw" and not _has_display():
        why = ("MUJOCO_GL=glfw" if value == "glfw" else
               "MuJoCo was imported before MUJOCO_GL was set (before `import envs`), so it chose GLFW, which")
        raise GLBackendError(f"{why} needs a display and there is none: set MUJOCO_GL=egl (or osmesa) in the "
                             "environment before starting Python")
    return backend


def _has_display() -> bool:
    return sys.platform != "linux" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def active_gl_backend() -> str | None:
    """Backend of MuJoCo's loaded GL context class ("egl", "osmesa", "glfw"), None before import."""
    cls = getattr(sys.modules.get(_GL_MODULE), "GLContext", None)
    if cls is None:
        return None
    return cls.__module__.split(".")[1] if cls.__module__.startswith("mujoco.") else cls.__module__
