"""The TextEnv contract every environment follows, action parsing in one place, and the helpers envs share.

An episode: `reset(task)` -> (observation, info); then `step(reply)` with the model's *whole* reply text. The base
class parses the reply, penalises malformed / non-admissible actions without touching the env state, counts steps,
and truncates at `max_steps`. Subclasses implement `_reset`, `_step` and (when the env has them) `admissible_actions`.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any, ClassVar, Iterator


@dataclasses.dataclass(frozen=True)
class Task:
  """Addresses one task: a group of G rollouts plays the same `Task`; everything is deterministic given it."""
  split: str = "train"
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class Action:
  """A parsed action: which tag it came from (`action`, `search`, `answer`, ...) and its stripped text."""
  tag: str
  text: str


@dataclasses.dataclass
class StepResult:
  observation: str
  reward: float
  done: bool
  info: dict[str, Any]


class EnvError(RuntimeError):
  """An environment could not do what was asked (bad task, missing data); the message names what was wrong."""


def error_line(error: BaseException) -> str:
  """One line naming the exception, its message and where it was raised."""
  frames = [frame for frame in traceback.extract_tb(error.__traceback__) if not frame.filename.startswith("<")]
  where = f" (at {os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
  return f"{type(error).__name__}: {' '.join(str(error).split())}{where}"


def tagged(tag: str, text: str) -> str:
  """`text` wrapped in `<tag>...</tag>`, the form `parse_action` reads."""
  return f"<{tag}>{text}</{tag}>"


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
  """Yields (1-based line number, object) per non-blank line; a line that is not a JSON object raises an EnvError
  naming the file and line."""
  with Path(path).open(encoding="utf-8") as lines:
    for line_number, line in enumerate(lines, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as error:
        raise EnvError(f"{path}:{line_number}:{error.colno}: not JSON ({error.msg}): {line.strip()[:80]!r}") from error
      if not isinstance(record, dict):
        raise EnvError(f"{path}:{line_number}: expected a JSON object, got {line.strip()[:80]!r}")
      yield line_number, record


def parse_action(reply: str, tags: tuple[str, ...], max_chars: int) -> Action | None:
  """The content of the *last* `<tag>...</tag>` block among `tags`, or None when the reply has none or is too long."""
  if len(reply) > max_chars:
    return None
  best: tuple[int, Action] | None = None
  for tag in tags:
    for match in re.finditer(rf"<{tag}>(.*?)</{tag}>", reply, flags=re.DOTALL):
      if best is None or match.start() > best[0]:
        best = (match.start(), Action(tag, match.group(1).strip()))
  if best is None or not best[1].text:
    return None
  return best[1]


class TextEnv(abc.ABC):
  """Base class for all text environments.

  Class attributes each env declares:
    name: registry name.
    r_max: the success reward (also PaW's R_max for reward-adaptive weighting).
    invalid_penalty: reward for a malformed or non-admissible action (negative).
    max_steps: default episode length limit.
    action_tags: the tags an action may come in (`("action",)`; search-QA `("search", "answer")`).
    max_reply_chars: a reply longer than this is an invalid action.
  """
  name: ClassVar[str]
  r_max: ClassVar[float] = 10.0
  invalid_penalty: ClassVar[float] = -0.1
  max_steps: ClassVar[int] = 50
  action_tags: ClassVar[tuple[str, ...]] = ("action",)
  max_reply_chars: ClassVar[int] = 8192

  def __init__(self, max_steps: int | None = None):
    if max_steps is not None:
      if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
      self.max_steps = max_steps
    self._steps = 0
    self._invalid_count = 0
    self._done = True

  # --- what subclasses implement ------------------------------------------------------------------------------
  @abc.abstractmethod
  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    """Starts `task`; returns (observation, info) with at least `task` (description) and `task_type`."""

  @abc.abstractmethod
  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    """Applies a valid action; returns (observation, reward, done, info) with info['won'] set."""

  def admissible_actions(self) -> list[str] | None:
    """The admissible actions in the current state, or None when the env takes free-form actions."""
    return None

  def exploratory_actions(self) -> list[str] | None:
    """What random play (a scratch model's tokenizer corpus and warm-up) samples from: by default the admissible
    actions; an env may leave out moves that do nothing."""
    return self.admissible_actions()

  def is_valid(self, action: Action) -> bool:
    """Whether a parsed action may be applied; by default, membership in the admissible list when there is one."""
    admissible = self.admissible_actions()
    return admissible is None or action.text in admissible

  def close(self) -> None:
    """Releases external resources (a JVM, a game process)."""

  # --- the contract ---------------------------------------------------------------------------------------------
  def reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    self._steps = 0
    self._invalid_count = 0
    self._done = True  # stays finished if _reset raises, so step() cannot reach a half-built env
    observation, info = self._reset(task)
    self._done = False
    info.setdefault("admissible_actions", self.admissible_actions())
    info.update(won=False, invalid=False, steps=0, invalid_count=0)
    return observation, info

  def step(self, reply: str) -> StepResult:
    """Parses `reply` and steps; an invalid action costs `invalid_penalty` and leaves the state unchanged."""
    if self._done:
      raise EnvError(f"{self.name}: step() called on a finished episode; call reset() first")
    self._steps += 1
    action = parse_action(reply, self.action_tags, self.max_reply_chars)
    if action is None or not self.is_valid(action):
      self._invalid_count += 1
      observation, reward, done, info = self._invalid_observation(reply, action), self.invalid_penalty, False, {}
      info.update(won=False, invalid=True)
    else:
      observation, reward, done, info = self._step(action)
      info.setdefault("won", False)
      info["invalid"] = False
    truncated = not done and self._steps >= self.max_steps
    self._done = done or truncated
    info.update(steps=self._steps, invalid_count=self._invalid_count, truncated=truncated,
                admissible_actions=None if self._done else self.admissible_actions())
    return StepResult(observation, float(reward), self._done, info)

  def _invalid_observation(self, reply: str, action: Action | None) -> str:
    if action is None:
      tags = " or ".join(tagged(t, "...") for t in self.action_tags)
      return f"Invalid action: your reply must end with {tags}. Nothing happens."
    return f"Invalid action: '{action.text[:200]}' is not admissible here. Nothing happens."

  @classmethod
  def format_admissible(cls, actions: list[str] | None) -> str:
    """The admissible-actions block of a prompt (verl-agent style); '' for free-form envs. Envs may override."""
    if actions is None:
      return ""
    return "Your admissible actions of the current situation are:\n" + "\n".join(f"'{a}'" for a in actions)
