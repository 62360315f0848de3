"""Sokoban: generation, push mechanics, the BFS oracle. (Contract, oracle and random-play checks common to all envs
are in test_envs_base.py.)"""
from __future__ import annotations

from typing import Any

import pytest

from paw_jax.envs import EnvError, Task
from paw_jax.envs.sokoban import Level, SokobanEnv, generate_level, solve, task_rng

SEED_0_TRAIN = """A new puzzle.
# # # # # #
# # _ _ _ #
# _ _ X _ #
# _ O _ P #
# _ # # _ #
# # # # # #"""
CORRIDOR = """
#######
#P_X_O#
#######"""
TWO_BOXES = """
#######
#P_X_O#
#__X_O#
#######"""


class FixedLevelEnv(SokobanEnv):
  """Deals one hand-made level whatever the task."""

  def __init__(self, level: str, **kwargs: Any):
    super().__init__(**kwargs)
    self.fixed = Level.parse(level)

  def _generate(self, task: Task) -> Level:
    return self.fixed


def play(env: SokobanEnv, moves: list[str]) -> list[tuple[str, float, bool]]:
  return [(r.observation.split("\n")[0], r.reward, r.done) for r in (env.step(f"<action>{m}</action>") for m in moves)]


def test_seed_0_level_is_stable():
  """A reference level: generation must not drift between runs, processes or refactors."""
  assert SokobanEnv().reset(Task("train", 0))[0] == SEED_0_TRAIN


def test_render_parse_round_trip():
  env = SokobanEnv(num_boxes=2)
  for seed in range(10):
    env.reset(Task("train", seed))
    assert Level.parse(env.level.render()) == env.level


@pytest.mark.parametrize("text, problem", [
    ("#####\n#P X#\n#####", "rectangle of the symbols"),
    ("#####\n#PXO\n#####", "rectangle of the symbols"),
    ("#####\n#PXO_\n#####", "wall border"),
    ("#####\n#P_O#\n#####", "as many boxes as targets"),
    ("#####\n#PXO#\n#P__#\n#####", "one player"),
])
def test_parse_rejects_bad_levels(text: str, problem: str):
  with pytest.raises(ValueError, match=problem):
    Level.parse(text)


def test_solver_on_hand_made_levels():
  assert solve(Level.parse(CORRIDOR)) == ["right", "right", "right"]
  assert solve(Level.parse(TWO_BOXES)) == ["right", "right", "right", "left", "left", "down", "right", "right"]
  stuck = Level.parse("######\n#X__O#\n#_P__#\n######")  # a box in a corner never moves again
  assert solve(stuck) is None


@pytest.mark.parametrize("num_boxes", [1, 2])
def test_generated_levels_need_min_to_max_moves(num_boxes: int):
  env = SokobanEnv(num_boxes=num_boxes, min_moves=4, max_moves=9, max_steps=10)
  lengths = []
  for seed in range(25):
    env.reset(Task("train", seed))
    level = env.level
    assert len(level.boxes) == num_boxes and level.player not in level.boxes | level.walls
    assert not level.boxes & level.walls and level.boxes != level.targets
    lengths.append(len(solve(level)))
  assert min(lengths) >= 4 and max(lengths) <= 9
  assert len(set(lengths)) >= 3  # a spread of difficulties, not one


def test_moves_pushes_and_win():
  env = FixedLevelEnv(CORRIDOR)
  observation, _ = env.reset(Task())
  assert observation == "A new puzzle.\n# # # # # # #\n# P _ X _ O #\n# # # # # # #"
  assert play(env, ["up", "left", "right", "right"]) == [
      ("You cannot move up.", 0.0, False), ("You cannot move left.", 0.0, False),
      ("You moved right.", 0.0, False), ("You pushed a box right.", 0.0, False)]
  assert env.level.render() == "# # # # # # #\n# _ _ P X O #\n# # # # # # #"
  result = env.step("<action>right</action>")
  assert (result.observation, result.reward, result.done, result.info["won"]) == (
      "Every box is on a target. You solved the puzzle!\n# # # # # # #\n# _ _ _ P √ #\n# # # # # # #", 10.0, True, True)


def test_shaping_rewards_each_box_placed_and_r_max_for_the_last():
  env = FixedLevelEnv(TWO_BOXES, box_reward=1.0)
  env.reset(Task())
  rewards = [reward for _, reward, _ in play(env, solve(Level.parse(TWO_BOXES)))]
  assert rewards == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 10.0]


def test_box_blocked_by_box():
  env = FixedLevelEnv("#######\n#PXX_O#\n#____O#\n#######")
  env.reset(Task())
  assert play(env, ["right"]) == [("You cannot move right.", 0.0, False)]
  assert env.level == env.fixed


def test_exploratory_actions_leave_out_the_moves_that_do_nothing():
  env = FixedLevelEnv("#######\n#PXX_O#\n#____O#\n#######")
  env.reset(Task())
  assert env.exploratory_actions() == ["down"]  # up and left: walls; right: a box blocked by a box
  for move in ("up", "left", "right"):
    env.step(f"<action>{move}</action>")
    assert env.level == env.fixed
  play(env, ["down", "right"])
  assert env.exploratory_actions() == ["left", "right"]  # up: the box above is against the wall; down: a wall


def test_box_pushed_off_target_costs_the_shaping():
  env = FixedLevelEnv("#######\n#P√_O_#\n#_X___#\n#######", box_reward=0.5)
  env.reset(Task())
  assert play(env, ["right"]) == [("You pushed a box right.", -0.5, False)]


def test_truncation_with_valid_moves():
  env = FixedLevelEnv(CORRIDOR, max_steps=12)
  env.reset(Task())
  results = [env.step("<action>up</action>") for _ in range(12)]
  assert [r.done for r in results] == [False] * 11 + [True]
  assert results[-1].info["truncated"] and not results[-1].info["invalid"] and results[-1].info["invalid_count"] == 0


@pytest.mark.parametrize("kwargs, problem", [
    ({"dim": 4}, "dim must be >= 5"),
    ({"num_boxes": 0}, r"num_boxes must be in \[1, 3\]"),
    ({"num_boxes": 4}, r"num_boxes must be in \[1, 3\]"),
    ({"floor_fraction": 0.0}, "floor_fraction"),
    ({"min_moves": 5, "max_moves": 4}, "min_moves <= max_moves"),
    ({"max_moves": 30}, "max_moves <= max_steps"),
    ({"max_steps": 10}, "max_moves <= max_steps"),
])
def test_bad_arguments(kwargs: dict[str, Any], problem: str):
  with pytest.raises(ValueError, match=problem):
    SokobanEnv(**kwargs)


def test_impossible_difficulty_is_a_clear_error():
  with pytest.raises(EnvError, match="no room allows a 20-move level"):
    generate_level(task_rng("sokoban", Task()), 5, 1, 20, 20, 0.5)
