"""Tests for paw_jax.envs.scienceworld over the real simulator (one JVM shared by the module)."""
from __future__ import annotations

import random

import pytest

from paw_jax.envs import Action, EnvError, Task, make
from paw_jax.envs.scienceworld import ScienceWorldEnv, sort_listings

# Three tasks with short gold paths (5, 6 and 11 actions); Task seed s plays TASKS[s % 3].
TASKS = ["find-non-living-thing", "lifespan-longest-lived", "power-component"]


@pytest.fixture(scope="module")
def env() -> ScienceWorldEnv:
  sw_env = make("scienceworld", task_names=TASKS, gold_path=True)
  yield sw_env
  sw_env.close()


def _act(text: str) -> str:
  return f"<think>...</think><action>{text}</action>"


def _play(env: ScienceWorldEnv, actions: list[str]) -> list:
  results = []
  for text in actions:
    results.append(env.step(_act(text)))
    if results[-1].done:
      break
  return results


def test_sort_listings_sorts_each_indented_block():
  text = "In it, you see: \n\tthe agent\n\ta cup\nYou also see:\n\tA door to the hallway\n\tA door to the bedroom\n"
  assert sort_listings(text) == (
      "In it, you see: \n\ta cup\n\tthe agent\nYou also see:\n\tA door to the bedroom\n\tA door to the hallway\n")


def test_variation_lists_are_the_packages(env: ScienceWorldEnv):
  # (train, dev, test) sizes from the package's split of each task's variations.
  for task_name, sizes in [("find-non-living-thing", (150, 75, 75)), ("lifespan-longest-lived", (62, 31, 32)),
                           ("power-component", (10, 5, 5))]:
    lists = [env.variations(task_name, split) for split in ("train", "dev", "test")]
    assert tuple(map(len, lists)) == sizes
    assert sorted(sum(lists, [])) == list(range(sum(sizes)))  # disjoint, covering every variation
    assert env.variations(task_name, "eval_in") == lists[1] and env.variations(task_name, "eval_out") == lists[2]


def test_task_maps_to_task_name_and_variation(env: ScienceWorldEnv):
  for seed in range(7):
    task_name = TASKS[seed % 3]
    assert env.task_variation(Task("test", seed)) == (task_name, env.variations(task_name, "test")[seed // 3])


def test_reset_is_deterministic(env: ScienceWorldEnv):
  actions = ["open door to greenhouse", "go to greenhouse", "look around"]
  runs = []
  for _ in range(2):
    observation, info = env.reset(Task("train", 4))
    runs.append([observation, info["task"]] + [(r.observation, r.reward) for r in _play(env, actions)])
  assert runs[0] == runs[1]
  assert "Your task is to find the animal with the longest life span" in runs[0][0]
  assert "focus on OBJ" in runs[0][1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gold_action_sequence_wins(env: ScienceWorldEnv, seed: int):
  _, info = env.reset(Task("train", seed))
  assert info["task_type"] == TASKS[seed] and info["admissible_actions"] is None
  results = _play(env, env.gold_actions())
  assert results[-1].done and results[-1].info["won"] and results[-1].info["score"] == 100
  assert sum(r.reward for r in results) == pytest.approx(env.r_max)
  assert not any(r.info["invalid"] for r in results)


def test_wrong_focus_fails_with_minus_r_max(env: ScienceWorldEnv):
  env.reset(Task("train", 1))  # lifespan-longest-lived: the answer is an animal outside
  result = env.step(_act("focus on air"))
  assert (result.done, result.info["won"], result.info["score"], result.reward) == (True, False, -100, -10.0)


@pytest.mark.parametrize("reply", [
    "go to kitchen",  # no tag
    _act("xyzzy"),
    _act("go to mars"),
    _act("pick up the moon"),
    _act("look at " + "x" * 10_000),  # too long
])
def test_invalid_action_is_penalised_and_changes_nothing(env: ScienceWorldEnv, reply: str):
  env.reset(Task("train", 0))
  gold = env.gold_actions()
  result = env.step(reply)
  assert (result.reward, result.done, result.info["invalid"]) == (env.invalid_penalty, False, True)
  assert result.observation.startswith("Invalid action")
  # Nothing moved: the gold path still earns exactly r_max, step by step as from a fresh reset.
  results = _play(env, gold)
  assert results[-1].info["won"] and sum(r.reward for r in results) == pytest.approx(env.r_max)


def test_is_valid_applies_a_parsed_action_once(env: ScienceWorldEnv):
  env.reset(Task("train", 0))
  action = Action("action", "open door to kitchen")
  assert env.is_valid(action) and env.is_valid(action)
  assert env.step(_act("open door to kitchen")).observation == "The door is now open."
  assert "already open" in env.step(_act("open door to kitchen")).observation


def test_ambiguous_action_takes_the_first_reading(env: ScienceWorldEnv):
  env.reset(Task("train", 0))  # two oranges: one in the bowl, one in the inventory
  _play(env, ["open door to kitchen", "go to kitchen"])
  result = env.step(_act("pick up orange"))
  assert not result.info["invalid"]
  assert result.observation == ("(Ambiguous; assuming 'pick up orange (in bowl, in counter, in kitchen)')\n"
                                "You move the orange to the inventory.")


def test_random_play_mostly_fails(env: ScienceWorldEnv):
  rng = random.Random(0)
  wins, returns = 0, []
  for seed in (1, 4, 7):  # lifespan-longest-lived variations
    env.reset(Task("train", seed))
    candidates = env.valid_actions()  # listed once per episode: the call is slow
    results = _play(env, [rng.choice(candidates) for _ in range(10)])
    wins += results[-1].info["won"]
    returns.append(sum(r.reward for r in results))
  assert wins == 0 and max(returns) < env.r_max


def test_bad_configuration_is_named(env: ScienceWorldEnv):
  with pytest.raises(EnvError, match="unknown split 'validation'"):
    env.reset(Task("validation", 0))
  with pytest.raises(EnvError, match=r"unknown or empty task_names \['boil-an-egg'\]"):
    ScienceWorldEnv(task_names=["boil", "boil-an-egg"])
