"""Tests for paw_jax.envs.textworld_env: games generated and compiled into a fresh cache, played through Jericho."""
from __future__ import annotations

import random
import time

import pytest
import textworld

from paw_jax.envs import EnvError, Task, make
from paw_jax.envs.textworld_env import TextWorldEnv, clean_feedback, generate_game

# Small games keep generation + Inform7 compilation to a few seconds each.
COOKING = {"go": 1}
CUSTOM = {"world_size": 3, "nb_objects": 5, "quest_length": 3}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("textworld_cache")


@pytest.fixture(scope="module")
def cooking(cache_dir) -> TextWorldEnv:
  env = make("textworld", game="cooking", settings=COOKING, cache_dir=cache_dir)
  yield env
  env.close()


@pytest.fixture(scope="module")
def custom(cache_dir) -> TextWorldEnv:
  env = make("textworld", game="custom", settings=CUSTOM, cache_dir=cache_dir)
  yield env
  env.close()


def _act(text: str) -> str:
  return f"<think>...</think><action>{text}</action>"


def _play(env: TextWorldEnv, commands: list[str]) -> list:
  results = []
  for command in commands:
    results.append(env.step(_act(command)))
    if results[-1].done:
      break
  return results


def test_clean_feedback_drops_banner_prompt_and_menu():
  raw = ("\n\n   ________  __\n  |        \\|  \\\n   \\$$$$$$$$| $$\n\nYou are hungry!\n\n-= Kitchen =-\n"
         "You see a fridge.\n\n\n\n>                        -= Kitchen =-0/1")
  assert clean_feedback(raw) == "You are hungry!\n\n-= Kitchen =-\nYou see a fridge."
  end = ("\nYou eat the meal.\n\n        *** The End ***\n\nYou scored 3 out of a possible 3, in 7 turns.\n\n\n"
         "Would you like to RESTART, RESTORE a saved game, QUIT or UNDO the last command?\n>     -= Kitchen =-2/6")
  assert clean_feedback(end) == "You eat the meal.\n\n*** The End ***\n\nYou scored 3 out of a possible 3, in 7 turns."


@pytest.mark.parametrize("seed", [0, 1])
def test_cooking_walkthrough_wins(cooking: TextWorldEnv, seed: int):
  observation, info = cooking.reset(Task("train", seed))
  assert observation.startswith("You are hungry! Let's cook a delicious meal.") and "-= Kitchen =-" in observation
  assert info["task"].startswith("You are hungry!") and info["task_type"] == "cooking"
  assert "look" in info["admissible_actions"] and "inventory" in info["admissible_actions"]
  results = _play(cooking, cooking.walkthrough())
  assert results[-1].done and results[-1].info["won"] and results[-1].reward == 10.0
  # A walkthrough may repeat a no-op such as "open fridge"; that step is not admissible and costs 0.1.
  assert sum(r.reward for r in results) == pytest.approx(10.0 - 0.1 * results[-1].info["invalid_count"])


@pytest.mark.parametrize("seed", [0, 1])
def test_custom_quest_walkthrough_wins(custom: TextWorldEnv, seed: int):
  observation, info = custom.reset(Task("train", seed))
  assert info["task_type"] == "custom" and info["task"] in observation
  results = _play(custom, custom.walkthrough())
  assert len(results) == len(custom.walkthrough()) == CUSTOM["quest_length"]
  assert [r.reward for r in results] == [0.0] * (CUSTOM["quest_length"] - 1) + [10.0]
  assert results[-1].done and results[-1].info["won"]


def test_games_are_cached_and_deterministic(custom: TextWorldEnv, cache_dir):
  first = custom.reset(Task("train", 0))
  path = custom.game_path(Task("train", 0))
  assert path.parent == cache_dir and path.is_file() and path.with_suffix(".json").is_file()
  start = time.perf_counter()
  assert custom.reset(Task("train", 0)) == first
  assert time.perf_counter() - start < 1.0  # no generation or compilation
  # Generating the Task again gives the cached game; another seed gives another.
  cached = textworld.Game.load(str(path.with_suffix(".json")))
  assert generate_game("custom", custom.settings, "train", 0) == cached
  assert generate_game("custom", custom.settings, "train", 1) != cached
  assert custom.game_path(Task("dev", 0)) == custom.game_path(Task("valid", 0)) != path


def test_num_games_makes_each_split_a_finite_game_set(custom: TextWorldEnv, cache_dir):
  pooled = TextWorldEnv(game="custom", settings=CUSTOM, cache_dir=cache_dir, num_games=2)
  paths = [pooled.game_path(Task("train", s)) for s in (2, 3, 5)]
  assert paths == [custom.game_path(Task("train", s)) for s in (0, 1, 1)]
  assert pooled.reset(Task("train", 4)) == custom.reset(Task("train", 0))
  with pytest.raises(EnvError, match="num_games must be >= 1"):
    TextWorldEnv(num_games=0)


def test_dense_reward_sums_to_r_max(cache_dir):
  env = TextWorldEnv(game="cooking", settings=COOKING, cache_dir=cache_dir, dense_reward=True)
  env.reset(Task("train", 0))  # the cached game of test_cooking_walkthrough_wins
  results = [r for r in _play(env, env.walkthrough()) if not r.info["invalid"]]
  max_score = sum(r.reward > 0 for r in results)  # one point per scoring step in cooking games
  assert [r.reward for r in results if r.reward] == [10.0 / max_score] * max_score
  assert results[-1].info["won"] and sum(r.reward for r in results) == pytest.approx(10.0)
  env.close()


def test_exploring_state_changes_leaves_out_the_commands_that_only_read(custom: TextWorldEnv, cache_dir):
  exploring = TextWorldEnv(game="custom", settings=CUSTOM, cache_dir=cache_dir, explore_state_changes=True)
  for env in (custom, exploring):
    env.reset(Task("train", 0))  # the cached game of test_custom_quest_walkthrough_wins
  admissible = custom.admissible_actions()
  assert custom.exploratory_actions() == admissible
  reading = [c for c in admissible if c in ("look", "inventory") or c.startswith("examine ")]
  assert "look" in reading and "inventory" in reading
  assert exploring.exploratory_actions() == [c for c in admissible if c not in reading]
  assert exploring.walkthrough()[0] in exploring.exploratory_actions()  # the quest's first step is explored
  exploring.close()


def test_losing_ends_the_episode_without_reward(cooking: TextWorldEnv):
  cooking.reset(Task("train", 0))
  walkthrough = cooking.walkthrough()
  take = next(i for i, command in enumerate(walkthrough) if command.startswith("take "))
  results = _play(cooking, walkthrough[:take + 1])
  ingredient = walkthrough[take].split(" from ")[0].removeprefix("take ")
  consume = next(c for c in results[-1].info["admissible_actions"] if c in (f"eat {ingredient}", f"drink {ingredient}"))
  result = cooking.step(_act(consume))  # consuming a raw ingredient loses the cooking game
  assert (result.done, result.info["won"], result.info["lost"], result.reward) == (True, False, True, 0.0)
  assert "*** You lost! ***" in result.observation


@pytest.mark.parametrize("reply", [
    "go north",  # no tag
    _act("xyzzy"),
    _act("fly to the moon"),
    _act("take " + "cookbook " * 1300),  # 10,000+ characters
])
def test_invalid_action_is_penalised_and_changes_nothing(cooking: TextWorldEnv, reply: str):
  _, info = cooking.reset(Task("train", 1))
  result = cooking.step(reply)
  assert (result.reward, result.done, result.info["invalid"]) == (-0.1, False, True)
  assert result.observation.startswith("Invalid action")
  assert result.info["admissible_actions"] == info["admissible_actions"]
  assert _play(cooking, cooking.walkthrough())[-1].info["won"]


def test_random_play_mostly_fails(cooking: TextWorldEnv):
  rng = random.Random(0)
  wins = 0
  for seed in (0, 1):
    for _ in range(3):
      _, info = cooking.reset(Task("train", seed))
      admissible = info["admissible_actions"]
      for _ in range(cooking.max_steps):
        result = cooking.step(_act(rng.choice(admissible)))
        if result.done:
          break
        admissible = result.info["admissible_actions"]
      wins += result.info["won"]
  assert wins <= 1


def test_bad_configuration_is_named(cooking: TextWorldEnv):
  with pytest.raises(EnvError, match="unknown game 'zork'"):
    TextWorldEnv(game="zork")
  with pytest.raises(EnvError, match=r"unknown cooking settings \['nb_rooms'\]"):
    TextWorldEnv(game="cooking", settings={"nb_rooms": 3})
  with pytest.raises(EnvError, match="unknown split 'holdout'"):
    cooking.reset(Task("holdout", 0))
  with pytest.raises(EnvError, match=r"cannot generate a cooking game .*'go': 5.*only have \{1, 6, 9, 12\} rooms"):
    TextWorldEnv(game="cooking", settings={"go": 5}, cache_dir=cooking.cache_dir).reset(Task("train", 0))
  with pytest.raises(EnvError, match=r"cannot generate a custom game .*'quest_breadth': 5.*No quest can be generated"):
    TextWorldEnv(game="custom", settings={"quest_length": 1, "quest_breadth": 5},
                 cache_dir=cooking.cache_dir).reset(Task("train", 0))
