"""Text environments by name: `make("frozenlake", **kwargs)`. Modules are imported lazily, so an env whose package
is not installed costs nothing until it is asked for."""
from __future__ import annotations

import importlib

from paw_jax.envs.base import Action, EnvError, StepResult, Task, TextEnv, parse_action

REGISTRY = {
    "alfworld": "paw_jax.envs.alfworld:AlfWorldEnv",
    "webshop": "paw_jax.envs.webshop:WebShopEnv",
    "search_qa": "paw_jax.envs.search_qa:SearchQAEnv",
    "scienceworld": "paw_jax.envs.scienceworld:ScienceWorldEnv",
    "textworld": "paw_jax.envs.textworld_env:TextWorldEnv",
    "sokoban": "paw_jax.envs.sokoban:SokobanEnv",
    "frozenlake": "paw_jax.envs.frozenlake:FrozenLakeEnv",
}


def env_class(name: str) -> type[TextEnv]:
  if name not in REGISTRY:
    raise EnvError(f"unknown env '{name}'; known: {', '.join(sorted(REGISTRY))}")
  module, cls = REGISTRY[name].split(":")
  return getattr(importlib.import_module(module), cls)


def make(name: str, **kwargs) -> TextEnv:
  return env_class(name)(**kwargs)


__all__ = ["Action", "EnvError", "REGISTRY", "StepResult", "Task", "TextEnv", "env_class", "make", "parse_action"]
