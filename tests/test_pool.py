"""EnvPool: results identical to direct play, and crashed / hung / dead workers contained to their own episode."""
from __future__ import annotations

import multiprocessing
import os
import time
from typing import Any

import pytest

from paw_jax.envs import Action, EnvError, StepResult, Task
from paw_jax.envs.frozenlake import FrozenLakeEnv, solve
from paw_jax.envs.pool import EnvPool

CRASH_SEED, HANG_SEED, DIE_SEED, RESET_CRASH_SEED = 1001, 1002, 1003, 1004
FAULTY = f"{__name__}:FaultyLake"  # a class path: the pool imports it in its workers, no registry entry needed


class FaultyLake(FrozenLakeEnv):
  """FrozenLake whose second step raises, hangs or kills its process for some task seeds."""

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    if task.seed == RESET_CRASH_SEED:
      raise RuntimeError("injected reset crash")
    self.fault_seed = task.seed
    return super()._reset(task)

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    if self._steps == 2:
      if self.fault_seed == CRASH_SEED:
        raise RuntimeError("injected step crash")
      if self.fault_seed == HANG_SEED:
        time.sleep(60)
      if self.fault_seed == DIE_SEED:
        os._exit(7)
    return super()._step(action)


def script(task: Task) -> list[str]:
  """The winning moves of `task`'s map, with an invalid reply slipped in as the second step."""
  env = FrozenLakeEnv()
  env.reset(task)
  replies = [f"<action>{move}</action>" for move in solve(env.lake)]
  return replies[:1] + ["<action>fly</action>"] + replies[1:]


def play_directly(task: Task) -> list[Any]:
  env = FaultyLake()
  said: list[Any] = [env.reset(task)]
  for reply in script(task):
    said.append(env.step(reply))
    if said[-1].done:
      return said
  raise AssertionError("the script did not finish the episode")


def play_in_pool(pool: EnvPool, tasks: list[Task]) -> list[list[Any]]:
  """Plays `tasks` on slots 0.. together, stepping only the slots whose episode is still running."""
  said = [[reset] for reset in pool.reset(list(enumerate(tasks)))]
  scripts = [script(task) if task.seed < 1000 else ["<action>up</action>"] * 3 for task in tasks]  # up: a no-op
  running = [slot for slot in range(len(tasks)) if "error" not in said[slot][0][1]]
  while running:
    results = pool.step([(slot, scripts[slot][len(said[slot]) - 1]) for slot in running])
    for slot, result in zip(running, results):
      said[slot].append(result)
    running = [slot for slot, result in zip(running, results) if not result.done]
  return said


def failure(error: str, steps: int) -> StepResult:
  return StepResult("", 0.0, True, {"won": False, "invalid": False, "error": error, "steps": steps,
                                    "invalid_count": 0, "truncated": False, "admissible_actions": None})


def test_faults_stay_in_their_slot_and_slots_recover():
  tasks = [Task("train", 0), Task("train", CRASH_SEED), Task("train", 1), Task("train", HANG_SEED),
           Task("train", DIE_SEED)]
  with EnvPool(FAULTY, len(tasks), step_timeout_s=1.0, reset_timeout_s=30.0) as pool:
    said = play_in_pool(pool, tasks)
    for slot in (0, 2):
      assert said[slot] == play_directly(tasks[slot])
    crash = said[1][-1]
    assert crash.info["error"].startswith("RuntimeError: injected step crash (at test_pool.py:")
    assert crash == failure(crash.info["error"], steps=2)
    assert said[3][-1] == failure("step got no answer within 1 s (worker hung; killed)", steps=2)
    assert said[4][-1] == failure("worker process died (exit code 7)", steps=2)
    assert [len(said[slot]) for slot in (1, 3, 4)] == [3, 3, 3]  # reset, a good step, the failed one
    # Every slot, restarted ones included, plays new tasks exactly as a direct run does.
    fresh = [Task("test", seed) for seed in range(len(tasks))]
    assert play_in_pool(pool, fresh) == [play_directly(task) for task in fresh]
    assert len(multiprocessing.active_children()) == len(tasks)  # killed workers were reaped, not leaked
  assert not multiprocessing.active_children()


def test_failed_reset_leaves_the_slot_without_episode():
  with EnvPool(FAULTY, 2, reset_timeout_s=30.0) as pool:
    (_, good), (observation, bad) = pool.reset([(0, Task("train", 0)), (1, Task("train", RESET_CRASH_SEED))])
    assert "error" not in good and observation == ""
    assert bad["error"].startswith("RuntimeError: injected reset crash (at test_pool.py:")
    with pytest.raises(ValueError, match="slot 1 has no running episode"):
      pool.step([(1, "<action>up</action>")])
    assert pool.reset([(1, Task("train", 3))]) == [play_directly(Task("train", 3))[0]]


def test_in_process_pool_matches_and_contains_crashes():
  tasks = [Task("train", 5), Task("train", CRASH_SEED)]
  with EnvPool(FAULTY, 2, in_process=True) as pool:
    said = play_in_pool(pool, tasks)
    assert said[0] == play_directly(tasks[0])
    assert said[1][-1].info["error"].startswith("RuntimeError: injected step crash")
    assert play_in_pool(pool, tasks[:1] * 2) == [play_directly(tasks[0])] * 2
  assert not multiprocessing.active_children()


@pytest.mark.parametrize("env_name, kwargs, problem", [
    ("no_such_env", {}, "unknown env 'no_such_env'"),
    ("no_such_module:Env", {}, "env 'no_such_module:Env' is unavailable: ModuleNotFoundError"),
    (f"{__name__}:NoSuchClass", {}, "is unavailable: AttributeError"),
    ("collections:OrderedDict", {}, "is not a TextEnv subclass"),
])
def test_unknown_envs_fail_at_construction(env_name: str, kwargs: dict[str, Any], problem: str):
  with pytest.raises(EnvError, match=problem):
    EnvPool(env_name, 2, kwargs)


@pytest.mark.parametrize("in_process", [False, True])
def test_env_construction_error_fails_the_pool_once(in_process: bool):
  with pytest.raises(EnvError, match=r"could not be constructed with \{'size': 1\}: ValueError: frozenlake: size "
                                     r"must be >= 2, got 1 \(at frozenlake.py"):
    EnvPool("frozenlake", 2, {"size": 1}, in_process=in_process)
  assert not multiprocessing.active_children()


def test_bad_requests_are_clear_errors():
  with EnvPool("frozenlake", 2, in_process=True) as pool:
    with pytest.raises(ValueError, match="slot 0 has no running episode"):
      pool.step([(0, "<action>up</action>")])
    with pytest.raises(ValueError, match=r"slot must be an int in \[0, 2\), got 2"):
      pool.reset([(2, Task())])
    with pytest.raises(ValueError, match="a slot appears twice"):
      pool.reset([(1, Task()), (1, Task())])
    with pytest.raises(ValueError, match="slot 0 needs a Task, got str"):
      pool.reset([(0, "train")])
    assert pool.reset([]) == []
  with pytest.raises(EnvError, match="the pool is closed"):
    pool.reset([(0, Task())])
  with pytest.raises(ValueError, match="num_envs must be >= 1"):
    EnvPool("frozenlake", 0)
