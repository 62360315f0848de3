"""Training programs by name (`config.program`): each composes rollouts, batch preparation and a Learner.

A program has `start()` (a fresh run's work before the first update, e.g. a warm-up), `build()` (its learner, for a
run that restores a checkpoint instead), `learner`, `update(index) -> metrics` and `evaluate() -> metrics`;
`paw_jax.train` runs the loop around it. Adding one: a module here and a line in PROGRAMS. Modules load on use, so
the config check can list the names without importing JAX code.
"""
from __future__ import annotations

import importlib

PROGRAMS = {"rl": "paw_jax.programs.rl:RLProgram"}


def program_class(name: str) -> type:
  module, cls = PROGRAMS[name].split(":")
  return getattr(importlib.import_module(module), cls)
