"""TextWorld games generated locally with the `textworld` package: the "cooking" challenge (tw-cooking, as in
First TextWorld Problems) or "custom" quests (tw-make custom), played through Jericho with admissible commands.

A Task (split, seed) fixes the game: the generator's seed is derived from (split, seed), and for cooking the split also
picks the challenge's food split (train / valid / test). With `num_games` each split is a finite set of games, as
ALFWorld's official data is: Task (split, seed) plays game seed % num_games. Compiled games are cached on disk under
`cache_dir/{kind}-{settings digest}-{split}-{seed}.z8` (+ .json), so only the first reset of a task pays for
generation and Inform7 compilation (seconds); later resets start the cached game (~0.1 s).

Reward: r_max on a win (the default, as ALFWorld), or with `dense_reward=True` r_max * (score delta) / max_score per
step, which also sums to r_max on a win (the game's score reaches max_score exactly when it is won). A lost game ends
the episode with no reward. A command that is not admissible costs `invalid_penalty` and is not sent to the game.

Random play (a scratch model's tokenizer corpus and warm-up) samples the admissible commands; with
`explore_state_changes=True` only those that change the game: `look`, `inventory` and `examine ...` are admissible in
every state and several of them in each list, so uniform play over all of them teaches a policy mostly to read.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

from paw_jax.envs.base import Action, EnvError, Task, TextEnv

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "paw_jax" / "textworld"

# The settings each kind of game takes, with defaults (tw-make's option names).
DEFAULT_SETTINGS = {
    "cooking": {"recipe": 1, "take": 1, "go": 6, "open": True, "cook": False, "cut": False, "drop": False},
    "custom": {"world_size": 5, "nb_objects": 10, "quest_length": 5, "quest_breadth": 1},
}
# Task splits -> the cooking challenge's food splits ("eval_in" / "eval_out" follow the ALFWorld naming).
_SPLITS = {"train": "train", "valid": "valid", "dev": "valid", "eval_in": "valid", "test": "test", "eval_out": "test"}

# Lines of the TextWorld banner (ASCII art) contain only these characters.
_BANNER_LINE = re.compile(r"^[\s_|\\/$<>]+$")
# Commands that only read the game (always admissible, never change its state).
_READ_ONLY_COMMAND = re.compile(r"^(look|inventory|examine .*)$")


def clean_feedback(text: str) -> str:
  """The game's text without the ASCII banner, the status line after the '>' prompt and the end-of-game menu."""
  text = text.split("\n>")[0]
  lines = [line.strip() for line in text.splitlines()
           if not _BANNER_LINE.match(line) and not line.startswith("Would you like to RESTART")]
  return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


@contextlib.contextmanager
def _quiet_jericho() -> Iterator[None]:
  # Jericho warns that it cannot track the score of generated games; TextWorld's own wrapper tracks it.
  with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*is not fully supported")
    yield


def _game_seed(split: str, seed: int) -> int:
  # A stable hash (unlike hash()): the same Task gives the same game in every process.
  return zlib.crc32(f"{split}:{seed}".encode())


def _settings_digest(kind: str, settings: Mapping[str, Any]) -> str:
  import textworld  # pylint: disable=import-outside-toplevel
  key = json.dumps({"kind": kind, "settings": dict(settings), "textworld": textworld.__version__}, sort_keys=True)
  return hashlib.sha1(key.encode()).hexdigest()[:12]


def generate_game(kind: str, settings: Mapping[str, Any], split: str, seed: int):
  """The textworld.Game for one task (not compiled)."""
  import textworld  # pylint: disable=import-outside-toplevel
  import textworld.challenges  # pylint: disable=import-outside-toplevel
  options = textworld.GameOptions()
  options.seeds = _game_seed(split, seed)
  try:
    if kind == "cooking":
      _, make_cooking, _ = textworld.challenges.CHALLENGES["tw-cooking"]
      with _quiet_jericho():  # the challenge plays its walkthrough to check it
        return make_cooking({**settings, "split": split, "recipe_seed": 0}, options)
    options.nb_rooms = settings["world_size"]
    options.nb_objects = settings["nb_objects"]
    options.quest_length = settings["quest_length"]
    options.quest_breadth = settings["quest_breadth"]
    return textworld.generator.make_game(options)
  except (ValueError, textworld.generator.chaining.QuestGenerationError) as error:
    reason = str(error).strip().splitlines()[0]
    raise EnvError(f"textworld: cannot generate a {kind} game with settings {dict(settings)} (split {split}, "
                   f"seed {seed}): {reason}") from error


def compile_to_cache(game, path: Path) -> None:
  """Compiles `game` to `path` (.z8, with its .json beside it); atomic, so concurrent workers never see half a file."""
  import textworld  # pylint: disable=import-outside-toplevel
  path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
    options = textworld.GameOptions()
    options.path = str(Path(tmp) / path.name)
    compiled = Path(textworld.generator.compile_game(game, options))
    os.replace(compiled.with_suffix(".json"), path.with_suffix(".json"))
    os.replace(compiled, path)  # last: an existing .z8 means the pair is complete


class TextWorldEnv(TextEnv):
  """A generated TextWorld game per Task; admissible commands come from the game's logic."""
  name = "textworld"
  r_max = 10.0
  invalid_penalty = -0.1
  max_steps = 50

  def __init__(self, game: str = "cooking", settings: Mapping[str, Any] | None = None,
               cache_dir: str | Path | None = None, dense_reward: bool = False, max_steps: int | None = None,
               num_games: int | None = None, explore_state_changes: bool = False):
    super().__init__(max_steps)
    if num_games is not None and num_games < 1:
      raise EnvError(f"textworld: num_games must be >= 1 (or None: a game per seed), got {num_games}")
    if game not in DEFAULT_SETTINGS:
      raise EnvError(f"textworld: unknown game '{game}'; expected one of {sorted(DEFAULT_SETTINGS)}")
    unknown = sorted(set(settings or {}) - set(DEFAULT_SETTINGS[game]))
    if unknown:
      raise EnvError(f"textworld: unknown {game} settings {unknown}; expected some of {sorted(DEFAULT_SETTINGS[game])}")
    self.game = game
    self.settings = {**DEFAULT_SETTINGS[game], **(settings or {})}
    self.cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    self.dense_reward = dense_reward
    self.num_games = num_games
    self.explore_state_changes = explore_state_changes
    self._digest = _settings_digest(game, self.settings)
    self._tw = None  # the running textworld environment
    self._game_path: Path | None = None
    self._state = None  # the last textworld GameState
    self._walkthrough: list[str] = []

  def game_path(self, task: Task) -> Path:
    """The cached game file of `task`, generated and compiled on first use."""
    if task.split not in _SPLITS:
      raise EnvError(f"textworld: unknown split '{task.split}'; expected one of {sorted(_SPLITS)}")
    split = _SPLITS[task.split]
    seed = task.seed if self.num_games is None else task.seed % self.num_games
    path = self.cache_dir / f"{self.game}-{self._digest}-{split}-{seed}.z8"
    if not path.is_file():
      compile_to_cache(generate_game(self.game, self.settings, split, seed), path)
    return path

  def _start(self, path: Path) -> None:
    import textworld  # pylint: disable=import-outside-toplevel
    self.close()
    infos = textworld.EnvInfos(admissible_commands=True, won=True, lost=True, score=True, max_score=True,
                               objective=True, extras=["walkthrough"])
    with _quiet_jericho():
      self._tw = textworld.start(str(path), request_infos=infos)
    self._game_path = path

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    path = self.game_path(task)
    if path != self._game_path:
      self._start(path)
    self._state = self._tw.reset()
    self._walkthrough = list(self._state["extra.walkthrough"] or [])
    info = dict(task=self._state["objective"], task_type=self.game, game_file=str(path))
    return clean_feedback(self._state.feedback), info

  def admissible_actions(self) -> list[str] | None:
    return list(self._state["admissible_commands"]) if self._state is not None else None

  def exploratory_actions(self) -> list[str] | None:
    admissible = self.admissible_actions()
    if not self.explore_state_changes or admissible is None:
      return admissible
    return [command for command in admissible if not _READ_ONLY_COMMAND.match(command)] or admissible

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    previous_score = self._state["score"]
    self._state, score, _ = self._tw.step(action.text)
    won, lost = bool(self._state["won"]), bool(self._state["lost"])
    if self.dense_reward:
      reward = self.r_max * (score - previous_score) / max(self._state["max_score"], 1)
    else:
      reward = self.r_max if won else 0.0
    return clean_feedback(self._state.feedback), reward, won or lost, {"won": won, "lost": lost, "score": score}

  def walkthrough(self) -> list[str]:
    """The generator's winning command sequence for the current game (the oracle)."""
    return list(self._walkthrough)

  def close(self) -> None:
    if self._tw is not None:
      self._tw.close()
      self._tw, self._game_path, self._state = None, None, None
