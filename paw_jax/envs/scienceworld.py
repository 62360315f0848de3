"""ScienceWorld (Wang et al., 2022) over the `scienceworld` package: 30 science tasks in a simulated house, run by
the package's jar on a JVM. One JVM per env instance, reused across resets; `close()` shuts it down.

Actions are free-form, as in the game: no admissible list is shown (the package's valid action-object combinations
run to thousands per room, 2,785 in the kitchen, and take 0.3 s to list), the task description lists the action
templates instead, and an action is valid when ScienceWorld's parser accepts it. A rejected action changes nothing in
the game (no move is spent), so it costs `invalid_penalty` like any invalid action. An ambiguous action (two objects
fit the name) is resolved to its alphabetically first reading, which the observation names.

Reward: r_max * (score delta) / 100 per step with the game's 0-100 score, so a won episode returns r_max; a negative
score is a failure (e.g. focusing on the wrong object): the episode ends and returns -r_max in all.

The game lists a room's contents in an order that changes between resets; observations sort those lists, so a Task
plays the same text every time.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from paw_jax.envs.base import Action, EnvError, Task, TextEnv

# Task splits -> the package's variation lists ("eval_in" / "eval_out" follow the ALFWorld naming).
_SPLIT_VARIATIONS = {"train": "train", "dev": "dev", "eval_in": "dev", "test": "test", "eval_out": "test"}

_UNPARSED = "No known action matches that input."
_AMBIGUOUS = "Ambiguous request"
_READING = re.compile(r"^(\d+):\t(.*)$", flags=re.MULTILINE)

ACTION_HELP = """Actions (OBJ / LOC are names of things and places you see):
  look around | look at OBJ | look in OBJ | read OBJ | inventory | task
  go to LOC | open OBJ | close OBJ | pick up OBJ | put down OBJ | move OBJ to OBJ
  pour OBJ into OBJ | dunk OBJ into OBJ | mix OBJ | eat OBJ | flush OBJ
  activate OBJ | deactivate OBJ | use OBJ | use OBJ on OBJ | connect OBJ to OBJ | disconnect OBJ
  focus on OBJ (marks the object the task is about; focusing on a wrong one fails the task)
  wait (10 steps) | wait1 (1 step)"""


def sort_listings(text: str) -> str:
  """Sorts each run of tab-indented lines (a room's contents): ScienceWorld lists them in hash order, which changes
  from one reset to the next, and the same state should read the same (GiGPO groups steps by observation text)."""
  lines, run = [], []
  for line in text.split("\n"):
    if line.startswith("\t"):
      run.append(line)
    else:
      lines += sorted(run) + [line]
      run = []
  return "\n".join(lines + sorted(run))


class ScienceWorldEnv(TextEnv):
  """A Task (split, seed) picks task `task_names[seed % n]` and variation `split_variations[seed // n % m]`."""
  name = "scienceworld"
  r_max = 10.0
  invalid_penalty = -0.1
  max_steps = 100  # the package's default step limit; gold paths run from 5 to ~180 actions

  def __init__(self, task_names: Sequence[str] | None = None, simplifications: str = "", gold_path: bool = False,
               max_steps: int | None = None):
    """`simplifications`: the package's comma-separated list ("easy", "teleportAction,openDoors", ...).
    `gold_path`: have the simulator generate the gold action sequence at load (slow for the genetics tasks)."""
    super().__init__(max_steps)
    from scienceworld import ScienceWorldEnv as _Simulator  # pylint: disable=import-outside-toplevel
    from scienceworld.constants import ID2TASK  # pylint: disable=import-outside-toplevel
    known = list(ID2TASK.values())  # in the paper's task-id order (1-1 boil, 1-2 melt, ...)
    self.task_names = list(task_names) if task_names is not None else known
    unknown = sorted(set(self.task_names) - set(known))
    if unknown or not self.task_names:
      raise EnvError(f"scienceworld: unknown or empty task_names {unknown or self.task_names}; known: {known}")
    try:
      # The step limit is ours (max_steps); keep the package's own limit out of the way.
      self._sim = _Simulator("", envStepLimit=10**9)
    except Exception as error:  # e.g. no Java on PATH
      raise EnvError(f"scienceworld: cannot start the simulator's JVM (needs Java 11+ on PATH): "
                     f"{type(error).__name__}: {error}") from error
    self.simplifications = simplifications
    self.gold_path = gold_path
    self._variations: dict[str, dict[str, list[int]]] = {}  # task name -> variation list name -> variations
    self._loaded: tuple[str, int] | None = None
    self._score = 0
    self._probed: tuple[str, str] | None = None  # (action text, game response) awaiting _step

  # --- tasks and variations ------------------------------------------------------------------------------------
  def _load(self, task_name: str, variation: int) -> None:
    try:
      self._sim.load(task_name, variation, self.simplifications, generateGoldPath=self.gold_path)
    except ValueError as error:  # the package validates the simplification string
      raise EnvError(f"scienceworld: {error}") from error
    self._loaded = (task_name, variation)

  def variations(self, task_name: str, split: str) -> list[int]:
    """The package's variation indices of `task_name` for `split` (train / dev / test lists)."""
    if split not in _SPLIT_VARIATIONS:
      raise EnvError(f"scienceworld: unknown split '{split}'; expected one of {sorted(_SPLIT_VARIATIONS)}")
    if task_name not in self._variations:
      self._load(task_name, 0)  # the lists belong to the loaded task
      self._variations[task_name] = {"train": self._sim.get_variations_train(),
                                     "dev": self._sim.get_variations_dev(), "test": self._sim.get_variations_test()}
    return self._variations[task_name][_SPLIT_VARIATIONS[split]]

  def task_variation(self, task: Task) -> tuple[str, int]:
    task_name = self.task_names[task.seed % len(self.task_names)]
    variations = self.variations(task_name, task.split)
    return task_name, variations[task.seed // len(self.task_names) % len(variations)]

  # --- the TextEnv contract ------------------------------------------------------------------------------------
  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    task_name, variation = self.task_variation(task)
    if self._loaded == (task_name, variation):
      self._sim.server.reset()  # same game again (a rollout group): no reload
    else:
      self._load(task_name, variation)
    self._score, self._probed = 0, None
    description = self._sim.get_task_description()
    info = dict(task=f"{description}\n{ACTION_HELP}", task_type=task_name, variation=variation)
    return f"{description}\n{sort_listings(self._sim.look())}", info

  def is_valid(self, action: Action) -> bool:
    """Whether the game's parser accepts the action. A parsed action is applied here (ScienceWorld has no dry run)
    and its response kept for `_step`; asking again about the same text does not apply it twice."""
    if self._probed is not None and self._probed[0] == action.text:
      return True
    response = self._sim.server.step(action.text)
    if response.strip() == _UNPARSED:
      return False
    if response.startswith(_AMBIGUOUS):
      response = self._resolve_ambiguity(response)
    self._probed = (action.text, sort_listings(response))
    return True

  def _resolve_ambiguity(self, response: str) -> str:
    # The game lists numbered readings ("0:\tpick up orange (in bowl, ...)") and waits for a number. Its numbering
    # changes between resets, so pick the alphabetically first reading.
    reading, number = min((match.group(2), match.group(1)) for match in _READING.finditer(response))
    return f"(Ambiguous; assuming '{reading}')\n{self._sim.server.step(number)}"

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    _, observation = self._probed  # set by is_valid, which step() calls first
    self._probed = None
    score = round(100 * self._sim.server.getScore())
    reward = self.r_max * (score - self._score) / 100
    self._score = score
    failed = score < 0
    won = bool(self._sim.server.getCompleted()) and not failed
    return observation, reward, won or failed, {"won": won, "score": score}

  def gold_actions(self) -> list[str]:
    """The package's gold action sequence for the current task (needs `gold_path=True`)."""
    if not self.gold_path or self._loaded is None:
      raise EnvError("scienceworld: gold_actions() needs ScienceWorldEnv(gold_path=True) and a reset() first")
    return self._sim.get_gold_action_sequence()

  def valid_actions(self) -> list[str]:
    """The package's valid action-object combinations in the current state (thousands; ~0.3 s)."""
    return self._sim.get_valid_action_object_combinations()

  def close(self) -> None:
    if self._sim is not None:
      self._sim.close()
      self._sim = None
