"""Text environments by name: `make("frozenlake", **kwargs)`. Modules are imported lazily, so an env whose package
is not installed costs nothing until it is asked for."""
from __future__ import annotations

import importlib

from paw_jax.envs.base import (Action, EnvError, StepResult, Task, TextEnv, error_line, parse_action, read_jsonl,
                               tagged)

REGISTRY = {
    "alfworld": "paw_jax.envs.alfworld:AlfWorldEnv",
    "webshop": "paw_jax.envs.webshop:WebShopEnv",
    "search_qa": "paw_jax.envs.search_qa:SearchQAEnv",
    "scienceworld": "paw_jax.envs.scienceworld:ScienceWorldEnv",
    "textworld": "paw_jax.envs.textworld_env:TextWorldEnv",
    "sokoban": "paw_jax.envs.sokoban:SokobanEnv",
    "frozenlake": "paw_jax.envs.frozenlake:FrozenLakeEnv",
}
ENV_NAMES = tuple(sorted(REGISTRY))


def env_class(name: str) -> type[TextEnv]:
  """The env class for a registry name or a "package.module:Class" path (so a test can use its own env); EnvError
  says in one line why it is unavailable."""
  if ":" not in name and name not in REGISTRY:
    raise EnvError(f"unknown env '{name}'; known: {', '.join(ENV_NAMES)}")
  module_name, _, class_name = REGISTRY.get(name, name).partition(":")
  try:
    found = getattr(importlib.import_module(module_name), class_name)
  except Exception as error:  # a missing package, a broken module, a misspelt class
    raise EnvError(f"env '{name}' is unavailable: {error_line(error)}") from error
  if not (isinstance(found, type) and issubclass(found, TextEnv)):
    raise EnvError(f"env '{name}' is not a TextEnv subclass")
  return found


def make(name: str, **kwargs) -> TextEnv:
  return env_class(name)(**kwargs)


__all__ = ["Action", "ENV_NAMES", "EnvError", "REGISTRY", "StepResult", "Task", "TextEnv", "env_class", "make",
           "parse_action", "read_jsonl", "tagged"]
