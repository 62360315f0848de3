"""Training programs by name (`config.stages`): each composes rollouts, batch preparation and a Learner.

A program has `start()` (a fresh run's work before the first update, e.g. a warm-up), `build()` (its learner, for a
run that restores a checkpoint instead), `learner`, `update(index) -> metrics` and `evaluate() -> metrics`;
`paw_jax.train` runs the loop around it. Adding one: a module here and a line in PROGRAMS. Modules load on use, so
the config check can list the names without importing JAX code.
"""
from __future__ import annotations

import importlib

PROGRAMS = {
    "rl": "paw_jax.programs.rl:RLProgram",  # task RL (GRPO, GiGPO, RLOO, PPO; with or without PaW)
    "rwml": "paw_jax.programs.rwml:RWMLProgram",  # world-model RL on the agent's own transitions
    "wm_sft": "paw_jax.programs.wm_sft:NextStateSFTProgram",  # next-state SFT on the same transitions (baseline)
}


def program_class(name: str) -> type:
  module, cls = PROGRAMS[name].split(":")
  return getattr(importlib.import_module(module), cls)
