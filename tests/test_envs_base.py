"""The TextEnv contract (paw_jax/envs/base.py), checked on a tiny env defined here and on the grid envs."""
from __future__ import annotations

import dataclasses
import functools
import io
import random
from typing import Any, Callable

import pytest

from paw_jax.envs import (ENV_NAMES, Action, EnvError, Task, TextEnv, env_class, frozenlake, parse_action, read_jsonl,
                          sokoban, tagged)
from paw_jax.envs.play import play


class CounterEnv(TextEnv):
  """Say "inc" until the count reaches the task's target (1 to 3, from its seed and split), then "stop"."""
  name = "counter"
  r_max = 1.0
  invalid_penalty = -0.5
  max_steps = 8

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    self.count, self.target = 0, (task.seed + len(task.split)) % 3 + 1
    return self._observation(), {"task": f"Count to {self.target}, then stop.", "task_type": "counter"}

  def admissible_actions(self) -> list[str]:
    return ["inc", "stop"]

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    if action.text == "inc":
      self.count += 1
      return self._observation(), 0.0, False, {}
    won = self.count == self.target
    return self._observation(), self.r_max if won else 0.0, True, {"won": won}

  def _observation(self) -> str:
    return f"count {self.count} of {self.target}"


@dataclasses.dataclass(frozen=True)
class EnvCase:
  make: Callable[[], TextEnv]
  oracle: Callable[[Any], list[str]] | None  # the env -> a winning action list; None when no plan can guarantee it
  min_distinct_of_20: int  # distinct first observations among seeds 0..19
  random_win_bound: float | None  # uniform-random play must win less often than this


# Random-play bounds: a uniform-random player wins 9.5% of these 200 Sokoban episodes (levels need >= 3 moves), 4%
# with 2 boxes, 6.5% on FrozenLake and 7% on the slippery lake. 20% sits 5 binomial standard errors
# (sqrt(.095 * .905 / 200) = 2%) above the worst of them, yet fails a generator that deals near-solved levels (the
# plain reverse random walk we tried first for Sokoban let random play win 26%).
CASES = {
    "counter": EnvCase(CounterEnv, lambda env: ["inc"] * env.target + ["stop"], 3, None),
    "sokoban": EnvCase(sokoban.SokobanEnv, lambda env: sokoban.solve(env.level), 20, 0.2),
    "sokoban-2-boxes": EnvCase(functools.partial(sokoban.SokobanEnv, num_boxes=2),
                               lambda env: sokoban.solve(env.level), 20, 0.2),
    "frozenlake": EnvCase(frozenlake.FrozenLakeEnv, lambda env: frozenlake.solve(env.lake), 15, 0.2),
    "frozenlake-slippery": EnvCase(functools.partial(frozenlake.FrozenLakeEnv, slippery=True), None, 15, 0.2),
}


def over_cases(keep: Callable[[EnvCase], bool] = lambda case: True) -> pytest.MarkDecorator:
  kept = {name: case for name, case in CASES.items() if keep(case)}
  return pytest.mark.parametrize("case", kept.values(), ids=kept.keys())


with_each_env = over_cases()


def wrap(action: str) -> str:
  return f"<think>Let me see.</think><action>{action}</action>"


def transcript(env: TextEnv, task: Task, replies: list[str]) -> list[Any]:
  """Reset, then step through `replies` until the episode ends: everything the env said."""
  said: list[Any] = [env.reset(task)]
  for reply in replies:
    said.append(env.step(reply))
    if said[-1].done:
      break
  return said


# --- parse_action ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reply, tags, expected", [
    ("<think>up?</think>\n<action> left </action>", ("action",), Action("action", "left")),
    ("<action>up</action> no, <action>down</action>", ("action",), Action("action", "down")),
    ("<answer>Paris</answer><search>capital of France</search>", ("search", "answer"),
     Action("search", "capital of France")),
    ("<action>go to\ndesk 1</action>", ("action",), Action("action", "go to\ndesk 1")),
    ("<action>  </action>", ("action",), None),
    ("<action>up", ("action",), None),
    ("up", ("action",), None),
    ("<search>x</search>", ("action",), None),
])
def test_parse_action(reply: str, tags: tuple[str, ...], expected: Action | None):
  assert parse_action(reply, tags, max_chars=100) == expected


def test_parse_action_rejects_long_reply():
  reply = "x" * 90 + "<action>up</action>"
  assert parse_action(reply, ("action",), max_chars=len(reply)) == Action("action", "up")
  assert parse_action(reply, ("action",), max_chars=len(reply) - 1) is None


def test_tagged_round_trips_through_parse_action():
  assert tagged("search", "capital of France") == "<search>capital of France</search>"
  assert parse_action(tagged("answer", " Paris "), ("search", "answer"), max_chars=100) == Action("answer", "Paris")


# --- shared helpers ---------------------------------------------------------------------------------------------
def test_read_jsonl_numbers_lines_and_skips_blank_ones(tmp_path):
  path = tmp_path / "data.jsonl"
  path.write_text('{"a": 1}\n\n  \n{"b": [2]}\n')
  assert list(read_jsonl(path)) == [(1, {"a": 1}), (4, {"b": [2]})]


@pytest.mark.parametrize("bad_line, problem", [
    ('{"a": 1,}', r"data\.jsonl:2:9: not JSON \(Expecting property name enclosed in double quotes\): '\{\"a\": 1,\}'$"),
    ("[1, 2]", r"data\.jsonl:2: expected a JSON object, got '\[1, 2\]'$"),
])
def test_read_jsonl_names_file_and_line_of_a_bad_line(tmp_path, bad_line: str, problem: str):
  path = tmp_path / "data.jsonl"
  path.write_text(f'{{"a": 1}}\n{bad_line}\n{{"c": 3}}\n')
  with pytest.raises(EnvError, match=problem):
    list(read_jsonl(path))


def test_env_class_takes_registry_names_and_class_paths():
  assert ENV_NAMES == tuple(sorted(ENV_NAMES)) and "frozenlake" in ENV_NAMES
  assert env_class("frozenlake") is frozenlake.FrozenLakeEnv
  assert env_class(f"{__name__}:CounterEnv") is CounterEnv
  with pytest.raises(EnvError, match=r"^unknown env 'no_such_env'; known: alfworld, "):
    env_class("no_such_env")


# --- the contract on every env ----------------------------------------------------------------------------------
@with_each_env
def test_reset_info(case: EnvCase):
  env = case.make()
  _, info = env.reset(Task("train", 4))
  assert isinstance(info["task"], str) and info["task"]
  assert {key: info[key] for key in ("task_type", "won", "invalid", "steps", "invalid_count")} == {
      "task_type": env.name, "won": False, "invalid": False, "steps": 0, "invalid_count": 0}
  assert info["admissible_actions"] == env.admissible_actions()


@with_each_env
def test_same_task_same_trajectory(case: EnvCase):
  rng = random.Random(0)
  actions = case.make().admissible_actions() or []
  replies = [wrap(rng.choice(actions)) if rng.random() < 0.8 else "junk" for _ in range(30)]
  first, second = (transcript(case.make(), Task("train", 7), replies) for _ in range(2))
  assert first == second
  assert len(first) > 2


@with_each_env
def test_seeds_and_splits_give_different_tasks(case: EnvCase):
  env = case.make()
  observations = {env.reset(Task("train", seed))[0] for seed in range(20)}
  assert len(observations) >= case.min_distinct_of_20
  assert env.reset(Task("test", 0))[0] != env.reset(Task("train", 0))[0]


@with_each_env
def test_invalid_replies_cost_the_penalty_and_change_nothing(case: EnvCase):
  env = case.make()
  env.reset(Task("train", 3))
  valid = env.admissible_actions()[0]
  tags = " or ".join(f"<{t}>...</{t}>" for t in env.action_tags)
  invalid = {  # reply -> the observation the base class answers with
      valid: f"Invalid action: your reply must end with {tags}. Nothing happens.",
      wrap("walk to the moon"): "Invalid action: 'walk to the moon' is not admissible here. Nothing happens.",
      wrap("jump"): "Invalid action: 'jump' is not admissible here. Nothing happens.",
      wrap(""): f"Invalid action: your reply must end with {tags}. Nothing happens.",
      "x" * 10_000 + wrap(valid): f"Invalid action: your reply must end with {tags}. Nothing happens.",
  }
  for count, (reply, observation) in enumerate(invalid.items(), start=1):
    result = env.step(reply)
    assert (result.observation, result.reward, result.done) == (observation, env.invalid_penalty, False)
    assert {key: result.info[key] for key in ("invalid", "won", "invalid_count", "steps")} == {
        "invalid": True, "won": False, "invalid_count": count, "steps": count}
  # The state (RNG included) is untouched: the next valid step says what it says right after a reset.
  reference = case.make()
  reference.reset(Task("train", 3))
  after_invalid, fresh = env.step(wrap(valid)), reference.step(wrap(valid))
  assert (after_invalid.observation, after_invalid.reward, after_invalid.done) == (
      fresh.observation, fresh.reward, fresh.done)
  assert (after_invalid.info["invalid"], after_invalid.info["invalid_count"]) == (False, len(invalid))


@with_each_env
def test_truncation_at_max_steps(case: EnvCase):
  env = case.make()
  env.reset(Task("train", 0))
  results = [env.step("no tags") for _ in range(env.max_steps)]
  assert not any(result.done for result in results[:-1])
  assert results[-1].done and results[-1].info["truncated"] and not results[-1].info["won"]
  assert results[-1].info["admissible_actions"] is None
  with pytest.raises(EnvError, match="finished episode"):
    env.step(wrap("up"))
  assert env.reset(Task("train", 0))[1]["steps"] == 0


@over_cases(lambda case: case.oracle is not None)
def test_oracle_wins(case: EnvCase):
  env = case.make()
  for seed in range(12):
    env.reset(Task("train", seed))
    moves = case.oracle(env)
    assert 0 < len(moves) <= env.max_steps
    results = [env.step(wrap(move)) for move in moves]
    assert [result.done for result in results] == [False] * (len(moves) - 1) + [True]
    assert results[-1].info["won"] and not results[-1].info["truncated"]
    assert sum(result.reward for result in results) == env.r_max


@over_cases(lambda case: case.random_win_bound is not None)
def test_random_play_mostly_fails(case: EnvCase):
  env, rng, wins, episodes = case.make(), random.Random(0), 0, 200
  for seed in range(episodes):
    env.reset(Task("train", seed))
    while not (result := env.step(wrap(rng.choice(env.admissible_actions())))).done:
      pass
    wins += result.info["won"]
  assert wins / episodes < case.random_win_bound


def test_max_steps_validation():
  assert CounterEnv(max_steps=2).max_steps == 2
  with pytest.raises(ValueError, match="max_steps must be >= 1"):
    CounterEnv(max_steps=0)


def test_format_admissible():
  assert TextEnv.format_admissible(["go north", "look"]) == (
      "Your admissible actions of the current situation are:\n'go north'\n'look'")
  assert TextEnv.format_admissible(None) == ""


# --- play.py --------------------------------------------------------------------------------------------------
def test_play_by_hand():
  out, lines = io.StringIO(), iter(["inc", "jump", "stop", "inc", "quit", "never read"])
  play(CounterEnv(), Task("train", 1), lines, out)
  ask = "Your admissible actions of the current situation are:\n'inc'\n'stop'\n> \n"
  info = "'won': {}, 'invalid': {}, 'steps': {}, 'invalid_count': {}, 'truncated': False}}"
  assert out.getvalue() == (
      "=== counter train/1: Count to 1, then stop.\n\ncount 0 of 1\n" + ask +
      "count 1 of 1\nreward +0  done False  {" + info.format(False, False, 1, 0) + "\n" + ask +
      "Invalid action: 'jump' is not admissible here. Nothing happens.\n"
      "reward -0.5  done False  {" + info.format(False, True, 2, 1) + "\n" + ask +
      "count 1 of 1\nreward +1  done True  {" + info.format(True, False, 3, 1) + "\n"
      "=== episode over: won True, return +0.5\n\n"
      "=== counter train/2: Count to 2, then stop.\n\ncount 0 of 2\n" + ask +
      "count 1 of 2\nreward +0  done False  {" + info.format(False, False, 1, 0) + "\n" + ask)
  assert next(lines) == "never read"  # "quit" stopped the reading


def test_play_ends_at_end_of_input():
  out = io.StringIO()
  play(CounterEnv(), Task("train", 1), iter(["inc"]), out)
  assert out.getvalue().rstrip().endswith(">")
