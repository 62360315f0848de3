"""Env steps per second for every registered env, in one process and through an EnvPool. Not a test.

  .venv/bin/python bench/env_speed.py [--seconds 3] [--num_envs 8] [--envs sokoban,frozenlake]

Actions are drawn uniformly from the admissible actions when the env lists them, else a fixed plausible action.
Episodes that end are reset with the next seed, and resets count in the time (a rollout pays for them too); pool
start-up does not. Envs that cannot be imported or constructed show "unavailable: <reason>".
"""
from __future__ import annotations

import argparse
import random
import time
from typing import Any, Callable

from paw_jax.envs import REGISTRY, StepResult, Task, TextEnv, env_class, tagged
from paw_jax.envs.pool import EnvPool

FREE_FORM_ACTION = "look"  # for envs without an admissible list: a command every text game understands
Resets = Callable[[list[tuple[int, Task]]], list[tuple[str, dict[str, Any]]]]
Steps = Callable[[list[tuple[int, str]]], list[StepResult]]


def measure(reset: Resets, step: Steps, num_envs: int, action_tag: str, seconds: float) -> float:
  """Steps/s of `num_envs` envs stepped together in batches for `seconds`, through `reset` and `step`."""
  rng = random.Random(0)
  next_seed = num_envs

  def admissible(infos: list[dict[str, Any]]) -> list[list[str] | None]:
    if errors := [info["error"] for info in infos if "error" in info]:
      raise RuntimeError(errors[0])
    return [info["admissible_actions"] for info in infos]

  actions = admissible([info for _, info in reset([(slot, Task("train", slot)) for slot in range(num_envs)])])
  steps, start = 0, time.perf_counter()
  while (elapsed := time.perf_counter() - start) < seconds:
    replies = [tagged(action_tag, rng.choice(a) if a else FREE_FORM_ACTION) for a in actions]
    results = step(list(enumerate(replies)))
    steps += num_envs
    actions = [result.info["admissible_actions"] for result in results]
    if done := [slot for slot, result in enumerate(results) if result.done]:
      tasks = [(slot, Task("train", next_seed + i)) for i, slot in enumerate(done)]
      next_seed += len(done)
      for slot, (_, info) in zip(done, reset(tasks)):
        actions[slot] = admissible([info])[0]
  return steps / elapsed


def single_process_rate(env: TextEnv, seconds: float) -> float:
  return measure(lambda tasks: [env.reset(task) for _, task in tasks],
                 lambda replies: [env.step(reply) for _, reply in replies], 1, env.action_tags[0], seconds)


def pool_rate(name: str, num_envs: int, seconds: float) -> float:
  with EnvPool(name, num_envs) as pool:
    return measure(pool.reset, pool.step, num_envs, pool.env_class.action_tags[0], seconds)


def row(name: str, num_envs: int, seconds: float) -> tuple[str, str, str]:
  try:
    env = env_class(name)()
    try:
      single = single_process_rate(env, seconds)
    finally:
      env.close()
    return name, f"{single:,.0f}", f"{pool_rate(name, num_envs, seconds):,.0f}"
  except Exception as error:  # a missing package or data file: show why and go on with the next env
    reason = error.__cause__ or error  # the ImportError itself rather than EnvError's wrapping of it
    return name, f"unavailable: {type(reason).__name__}: {' '.join(str(reason).split())[:100]}", ""


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
  parser.add_argument("--num_envs", type=int, default=8, help="pool size")
  parser.add_argument("--envs", default=",".join(REGISTRY), help="comma-separated env names")
  args = parser.parse_args()
  header = ("env", "steps/s, 1 process", f"steps/s, pool of {args.num_envs}")
  print(" | ".join(f"{h:<22}" for h in header))
  print("-" * 72)
  for name in args.envs.split(","):
    print(" | ".join(f"{cell:<22}" for cell in row(name, args.num_envs, args.seconds)), flush=True)


if __name__ == "__main__":
  main()
