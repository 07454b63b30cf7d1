"""Typed configs: every hydra config group is validated against a dataclass.

`as_dataclass(Cls, cfg)` merges the YAML node into the structured schema, so a misspelled or
unknown key fails at start with OmegaConf's message naming it, instead of silently being ignored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from toto_robot.cli import UserError

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(UserError, ValueError):
    """A config node does not fit its schema (unknown key, wrong type, missing value)."""


def as_dataclass(cls: type[T], cfg: Any) -> T:
    """Validate `cfg` (DictConfig, dict or None) against dataclass `cls` and return an instance."""
    try:
        schema = OmegaConf.structured(cls)
        _writable(schema)
        if cfg is not None:
            # Interpolations (e.g. runner.control_hz: ${robot.action.control_hz}) resolve against the
            # whole config this node came from, before it is merged into a schema of its own.
            node = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg))
            schema = OmegaConf.merge(schema, node)
        return OmegaConf.to_object(schema)  # type: ignore[return-value]
    except OmegaConfBaseException as e:
        raise ConfigError(f"config does not fit {cls.__name__}: {e}") from e
    except ValueError as e:  # a value the dataclass's own checks (__post_init__) refuse
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{cls.__name__}: {e}") from e


def _writable(node: DictConfig) -> None:
    """Clear the read-only flag OmegaConf puts on frozen dataclasses (e.g. ActionConvention): the
    YAML fills them in here; the instance built from the schema is still frozen."""
    OmegaConf.set_readonly(node, None)
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig):
            _writable(child)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain dict of a dataclass or DictConfig (for store attrs, checkpoints, logs)."""
    if dataclasses.is_dataclass(obj):
        return OmegaConf.to_container(OmegaConf.structured(obj), resolve=True)  # type: ignore[return-value]
    if isinstance(obj, DictConfig):
        return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]
    return dict(obj)
