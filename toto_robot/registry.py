"""Explicit, lazy registries: a name maps to "module:attr", imported only when built.

Heavy optional dependencies (pyrealsense2, franky, mujoco rendering, torch models) stay
unimported until the named component is used.
"""

from __future__ import annotations

import importlib
from typing import Any


class Registry:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, str] = {}

    def register(self, name: str, target: str) -> None:
        """`target` is "package.module:Attr"."""
        if name in self._targets and self._targets[name] != target:
            raise ValueError(f"{self.kind} {name!r} already registered as {self._targets[name]}")
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def get(self, name: str) -> Any:
        if name not in self._targets:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {self.names()}")
        module, _, attr = self._targets[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def build(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.get(name)(*args, **kwargs)
