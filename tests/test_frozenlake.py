"""FrozenLake: map generation, moves, holes, slippery dynamics. (Contract, determinism, oracle and random-play checks
common to all envs are in test_envs_base.py.)"""
from __future__ import annotations

import collections
from typing import Any

import pytest

from paw_jax.envs import EnvError, Task
from paw_jax.envs.frozenlake import FrozenLakeEnv, Lake, solve

SEED_0_TRAIN = """You are at the start.
P O _ _
_ _ _ O
_ O _ _
_ _ _ G
Around you: hole right; edge up, left."""


class FixedLakeEnv(FrozenLakeEnv):
  """Deals one hand-made map whatever the task."""

  def __init__(self, lake: str, **kwargs: Any):
    super().__init__(**kwargs)
    self.fixed = Lake.parse(lake)

  def _generate(self, task: Task) -> Lake:
    return self.fixed


def step(env: FrozenLakeEnv, move: str) -> tuple[str, float, bool, bool]:
  result = env.step(f"<action>{move}</action>")
  return result.observation, result.reward, result.done, result.info["won"]


def test_seed_0_map_is_stable():
  """A reference map: generation must not drift between runs, processes or refactors."""
  assert FrozenLakeEnv().reset(Task("train", 0))[0] == SEED_0_TRAIN
  assert FrozenLakeEnv(slippery=True).reset(Task("train", 0))[0] == SEED_0_TRAIN


def test_render_parse_round_trip():
  env = FrozenLakeEnv(size=5)
  for seed in range(10):
    env.reset(Task("train", seed))
    assert Lake.parse(env.lake.render(env.lake.start)) == env.lake


@pytest.mark.parametrize("text", ["P_\nOG_", "P_\n__", "PG\nGO", "P_\nOX"])
def test_parse_rejects_bad_maps(text: str):
  with pytest.raises(ValueError, match="frozenlake map must be a square"):
    Lake.parse(text)


def test_maps_are_solvable_with_the_requested_hole_rate():
  env = FrozenLakeEnv(size=8)
  hole_fractions = []
  for seed in range(150):
    env.reset(Task("train", seed))
    lake = env.lake
    assert (lake.start, lake.goal) == (0, 63) and not {lake.start, lake.goal} & lake.holes
    assert solve(lake) is not None
    hole_fractions.append(len(lake.holes) / 62)
  # hole_prob 0.2 per inner cell; keeping only solvable maps lowers the mean a little (measured 0.193).
  assert abs(sum(hole_fractions) / len(hole_fractions) - 0.2) < 0.015
  env = FrozenLakeEnv(hole_prob=0.0)
  env.reset(Task("train", 0))
  assert not env.lake.holes


def test_solver_on_a_hand_made_map():
  assert solve(Lake.parse("P_O\n__O\nO_G")) == ["down", "right", "down", "right"]
  assert solve(Lake.parse("PO\nOG")) is None


def test_edge_hole_and_goal():
  env = FixedLakeEnv("P_\nOG")
  assert env.reset(Task())[0] == ("You are at the start.\nP _\nO G\n"
                                  "Around you: hole down; edge up, left.")
  assert step(env, "up") == (
      "You went up. You hit the edge of the lake and stay where you are.\nP _\nO G\n"
      "Around you: hole down; edge up, left.", 0.0, False, False)
  assert step(env, "down") == ("You went down. You fell into a hole. Game over.\n_ _\nP G\n"
                               "Around you: edge down, left.", 0.0, True, False)
  env.reset(Task())
  assert step(env, "right") == ("You went right.\n_ P\nO G\nAround you: edge up, right.",
                                0.0, False, False)
  assert step(env, "down") == ("You went down. You reached the goal!\n_ _\nO P\n"
                               "Around you: hole left; edge down, right.", 10.0, True, True)


def test_without_the_hazard_hint_the_observation_is_outcome_and_map_only():
  env = FixedLakeEnv("P_\nOG", hazard_hint=False)
  assert env.reset(Task())[0] == "You are at the start.\nP _\nO G"
  assert step(env, "down") == ("You went down. You fell into a hole. Game over.\n_ _\nP G", 0.0, True, False)
  hinted, plain = FrozenLakeEnv(size=4), FrozenLakeEnv(size=4, hazard_hint=False)
  for split in ("train", "eval"):  # the same maps and dynamics, one line less
    for seed in range(5):
      assert hinted.reset(Task(split, seed))[0].rsplit("\n", 1)[0] == plain.reset(Task(split, seed))[0]
      for move in ("right", "down", "down", "right"):
        with_hint, without = hinted.step(f"<action>{move}</action>"), plain.step(f"<action>{move}</action>")
        assert with_hint.observation.rsplit("\n", 1)[0] == without.observation
        assert (with_hint.reward, with_hint.done) == (without.reward, without.done)
        if with_hint.done:
          break


def test_truncation_with_valid_moves():
  env = FrozenLakeEnv(max_steps=5)
  env.reset(Task("train", 0))
  results = [env.step("<action>up</action>") for _ in range(5)]  # the start is the top-left corner
  assert [r.done for r in results] == [False] * 4 + [True]
  assert results[-1].info["truncated"] and not results[-1].info["won"] and results[-1].info["invalid_count"] == 0


def test_slips_follow_gym_one_third_each_way():
  env = FixedLakeEnv("___\n_P_\n__G", slippery=True)
  cells = {5: "right", 1: "up", 7: "down", 3: "left"}
  outcomes = collections.Counter()
  for seed in range(600):
    env.reset(Task("train", seed))
    observation, *_ = step(env, "right")
    outcomes[cells[env.player]] += 1
    if cells[env.player] != "right":
      assert observation.startswith(f"You slipped and went {cells[env.player]} instead of right.")
  # Each of right / up / down w.p. 1/3: 200 expected, binomial sd sqrt(600 * 1/3 * 2/3) = 11.5, so +-4 sd = 46.
  assert all(abs(outcomes[move] - 200) < 46 for move in ("right", "up", "down")), outcomes
  assert outcomes["left"] == 0


def test_without_slippery_moves_never_slip():
  env = FixedLakeEnv("___\n_P_\n__G")
  for seed in range(50):
    env.reset(Task("train", seed))
    step(env, "right")
    assert env.player == 5


def test_slips_depend_on_the_task_only():
  """Same task and actions: same slips, even in another env instance; another seed: other slips."""
  def slips(seed: int) -> list[int]:
    env = FixedLakeEnv("P___\n____\n____\n___G", slippery=True)  # "left" on the left edge moves only by slipping
    env.reset(Task("train", seed))
    return [env.step("<action>left</action>").observation for _ in range(8)]

  assert slips(1) == slips(1)
  assert slips(1) != slips(2)


@pytest.mark.parametrize("kwargs, problem", [
    ({"size": 1}, "size must be >= 2"),
    ({"hole_prob": 1.0}, r"hole_prob must be in \[0, 1\)"),
    ({"hole_prob": -0.1}, r"hole_prob must be in \[0, 1\)"),
])
def test_bad_arguments(kwargs: dict[str, Any], problem: str):
  with pytest.raises(ValueError, match=problem):
    FrozenLakeEnv(**kwargs)


def test_hopeless_hole_rate_is_a_clear_error():
  with pytest.raises(EnvError, match="no map with a reachable goal"):
    FrozenLakeEnv(size=3, hole_prob=0.999).reset(Task())


def test_random_play_explores_the_moves_that_stay_on_the_lake():
  env = FixedLakeEnv("P_\nOG")
  env.reset(Task())
  assert env.admissible_actions() == ["up", "down", "left", "right"]  # an edge move is valid, and does nothing
  assert env.exploratory_actions() == ["down", "right"]
  step(env, "right")
  assert env.exploratory_actions() == ["down", "left"]
