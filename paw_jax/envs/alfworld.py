"""ALFWorld (text) on the real alfworld package and TextWorld's PDDL engine.

Two sources of games, played the same way (textworld.gym with alfworld's AlfredDemangler / AlfredInfos wrappers):
  * source="generated" (default, offline): `alfworld_gen` samples a problem per Task(split, seed) from the room
    layouts alfworld ships, writes it as an official-format `game.tw-pddl` (+ `traj_data.json`) under `cache_dir`,
    and verifies once, by playing its expert plan through the engine, that it is solvable.
  * source="official": the ALFWorld data ($ALFWORLD_DATA/json_2.1.1/{train,valid_seen,valid_unseen}/<task>/<trial>/);
    Task(split, seed) picks game `seed % count` of the sorted solvable games, as AlfredTWEnv filters them.

Reward: r_max (10) on the step that wins, 0 otherwise; the episode ends when won. info carries `task` (the sentence
after "Your task is to: "), `task_type` (for per-type success), `gamefile`, and with `expert_plan=True` (games with a
traj_data.json) the package's handcoded expert's next command as `expert_plan`.

Speed: textworld translates the PDDL problem with fast-downward four times per reset (~0.5-1 s CPU each), and on every
step re-parses each admissible command's grammar template and condition and deep-copies its context. ENGINE_SPEEDUPS
memoises the translation (in memory, and gzipped under cache_dir/compiled so worker processes and later runs share
it) and the parses, and copies contexts shallowly; the games play identically.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import gzip
import hashlib
import importlib.metadata
import json
import os
import pickle
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import fast_downward
import textworld
import textworld.gym
from alfworld.agents.environment.alfred_tw_env import (AlfredDemangler, AlfredExpert, AlfredExpertType,
                                                       AlfredInfos)
from textworld.envs.pddl import textgen
from textworld.logic import Rule

from paw_jax.envs import alfworld_gen
from paw_jax.envs.alfworld_gen import SPLITS, TASK_TYPES
from paw_jax.envs.base import Action, EnvError, Task, TextEnv

SOURCES = ("generated", "official")
OFFICIAL_SPLIT_DIRS = {"train": "train", "eval_in": "valid_seen", "eval_out": "valid_unseen"}
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "paw_jax" / "alfworld"
_TASK_PREFIX = "Your task is to: "


# --- engine speed-ups -----------------------------------------------------------------------------------------------
_ORIGINAL_PDDL2SAS = fast_downward.pddl2sas
_ORIGINAL_PARSE = textgen._parse_and_convert
_TRANSLATOR = importlib.metadata.version("fast-downward-textworld")  # in the cache key: a new translator recompiles
_COMPILED_IN_MEMORY = 32  # translations of recent problems (~1.5 MB each): a group's G rollouts share one
_compiled: OrderedDict[str, tuple] = OrderedDict()
_compile_dir: contextvars.ContextVar[Path | None] = contextvars.ContextVar("alfworld_compile_dir", default=None)


def _cached_pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> tuple:
  """fast_downward.pddl2sas, memoised in memory and on disk; it also stops the original clobbering sys.argv."""
  key = hashlib.sha256(f"{_TRANSLATOR}\0{optimize}\0{domain}\0{problem}".encode()).hexdigest()
  if key in _compiled:
    _compiled.move_to_end(key)
    return _compiled[key]
  directory = _compile_dir.get()
  path = directory / "compiled" / f"{key}.pkl.gz" if directory else None
  result = _read_compiled(path) if path else None
  if result is None:
    argv = sys.argv
    try:
      result = _ORIGINAL_PDDL2SAS(domain, problem, verbose=verbose, optimize=optimize)
    finally:
      sys.argv = argv
    if path:
      _write_atomic(path, gzip.compress(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)))
  _compiled[key] = result
  if len(_compiled) > _COMPILED_IN_MEMORY:
    _compiled.popitem(last=False)
  return result


def _read_compiled(path: Path) -> tuple | None:
  try:
    return pickle.loads(gzip.decompress(path.read_bytes()))
  except Exception:  # absent, truncated, or unreadable: it is only a cache, so translate again
    return None


@functools.lru_cache(maxsize=4096)
def _parsed_symbols(*args, **kwargs) -> list:
  return _ORIGINAL_PARSE(*args, **kwargs)


def _cached_parse(*args, **kwargs) -> list:
  """textgen._parse_and_convert, memoised; callers mutate the symbols, so each gets a copy."""
  return copy.deepcopy(_parsed_symbols(*args, **kwargs))


class _MemoisedQueries:
  """Stands in for `Rule` in textgen, whose only use of it is parsing grammar conditions; the parsed rule is only
  read, so one parse per condition text serves every step."""
  parse_conjunctive_query = staticmethod(functools.lru_cache(maxsize=1024)(Rule.parse_conjunctive_query))


def _shallow_copy_context(context: dict) -> dict:
  """textgen.copy_context without deep copies: derivations add keys to `variables` / `mapping` but never mutate
  their values (entity infos, logic variables), so copying the two dicts is equivalent, and several times faster."""
  return {**context, "variables": dict(context["variables"]), "mapping": dict(context["mapping"])}


# (module, attribute, replacement): textworld's PDDL engine (checked against textworld 1.7) routed through the
# memoised / equivalent functions above. The games play identically (tests/test_alfworld.py compares transcripts).
ENGINE_SPEEDUPS = ((fast_downward, "pddl2sas", _cached_pddl2sas), (textgen, "_parse_and_convert", _cached_parse),
                   (textgen, "Rule", _MemoisedQueries), (textgen, "copy_context", _shallow_copy_context))
ENGINE_ORIGINALS = tuple((module, name, getattr(module, name)) for module, name, _ in ENGINE_SPEEDUPS)


def _install_engine_speedups() -> None:
  for module, name, replacement in ENGINE_SPEEDUPS:
    setattr(module, name, replacement)


@contextlib.contextmanager
def _compiling_into(cache_dir: Path) -> Iterator[None]:
  token = _compile_dir.set(cache_dir)
  try:
    yield
  finally:
    _compile_dir.reset(token)


def _write_atomic(path: Path, payload: bytes) -> None:
  """Writes via a temporary file so a concurrent reader never sees half a file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_bytes(payload)
  os.replace(tmp, path)


# --- playing a game file -------------------------------------------------------------------------------------------
class _TolerantExpert(AlfredExpert):
  """AlfredExpert whose heuristic expert may give up (it raises when lost) without breaking the game: no plan then."""

  def _gather_infos(self) -> None:
    try:
      super()._gather_infos()
    except Exception:  # the handcoded expert raises HandCodedAgentFailed / Timeout (NameError) or bare Exception
      self.state["extra.expert_plan"] = []


def _open_game(gamefile: Path, expert_plan: bool) -> Any:
  """A textworld gym env on `gamefile` with alfworld's wrappers (and its handcoded expert when asked)."""
  request = textworld.EnvInfos(won=True, admissible_commands=True, extras=["gamefile"])
  wrappers = [AlfredDemangler(shuffle=False), AlfredInfos]
  if expert_plan:
    request.extras.append("expert_plan")
    wrappers.append(_TolerantExpert(expert_type=AlfredExpertType.HANDCODED))
  env_id = textworld.gym.register_game(str(gamefile), request, max_episode_steps=None, wrappers=wrappers)
  try:
    return textworld.gym.make(env_id)
  finally:
    textworld.gym.registry.pop(env_id)  # one registration per reset would grow the registry without bound


def _verify_walkthrough(gamefile: Path, walkthrough: list[str]) -> str | None:
  """Plays `walkthrough`; None when it wins, else what went wrong."""
  env = _open_game(gamefile, expert_plan=False)
  try:
    _, infos = env.reset()
    for command in walkthrough:
      if command not in infos["admissible_commands"]:
        return f"'{command}' is not admissible"
      _, _, _, infos = env.step(command)
    return None if infos["won"] else "the walkthrough ends without winning"
  finally:
    env.close()


# --- official data ---------------------------------------------------------------------------------------------------
def task_type_of(gamefile: Path) -> str:
  """The task type from the official directory name `<task_type>-<Object>-<Mrecep>-<Parent>-<scene>/<trial>/`."""
  return gamefile.parent.parent.name.split("-", 1)[0]


def _official_root(data_path: str | os.PathLike | None) -> Path:
  env_value = os.environ.get("ALFWORLD_DATA")
  root = data_path if data_path is not None else env_value
  games = Path(root).expanduser() / "json_2.1.1" if root else None
  if games is None or not games.is_dir():
    raise EnvError(f"alfworld: official ALFWorld data not found at {games or '<unset>'} (data_path={data_path!r}, "
                   f"$ALFWORLD_DATA={env_value!r}); get it with `alfworld-download` or play offline-generated "
                   f"games with source='generated'")
  return games


@functools.cache
def _official_games(split_dir: Path) -> tuple[Path, ...]:
  """Sorted playable games of one split, filtered as alfworld's AlfredTWEnv does."""
  games = []
  for gamefile in sorted(split_dir.glob("*/*/game.tw-pddl")):
    trial = gamefile.parent
    if "movable" in trial.as_posix() or "Sliced" in trial.as_posix():  # unsupported by the text engine
      continue
    if task_type_of(gamefile) in TASK_TYPES and (trial / "traj_data.json").exists() and _solvable(gamefile):
      games.append(gamefile)
  return tuple(games)


def _solvable(gamefile: Path) -> bool:
  try:
    return bool(json.loads(gamefile.read_text()).get("solvable"))
  except (OSError, ValueError):
    return False


# --- the env ----------------------------------------------------------------------------------------------------------
class AlfWorldEnv(TextEnv):
  """ALFWorld household tasks: "go to", "open", "take X from Y", "move X to Y", "heat/cool/clean X with Y", "use"."""
  name: ClassVar[str] = "alfworld"
  r_max: ClassVar[float] = 10.0
  invalid_penalty: ClassVar[float] = -0.1
  max_steps: ClassVar[int] = 50

  def __init__(self, source: str = "generated", data_path: str | os.PathLike | None = None,
               task_types: tuple[str, ...] = TASK_TYPES, cache_dir: str | os.PathLike | None = None,
               expert_plan: bool = False, verify: bool = True, max_steps: int | None = None):
    """
    Args:
      source: "generated" (offline problems) or "official" (the ALFWorld data under `data_path` / $ALFWORLD_DATA).
      task_types: the task types to play (a subset of `TASK_TYPES`).
      cache_dir: where generated games and engine translations are kept (default ~/.cache/paw_jax/alfworld).
      expert_plan: add the package's handcoded expert (needs traj_data.json) and report its next command per step.
      verify: play each new generated problem's expert plan through the engine once before serving it.
    """
    super().__init__(max_steps)
    if source not in SOURCES:
      raise EnvError(f"alfworld: source must be one of {', '.join(SOURCES)}, got '{source}'")
    if source == "generated" and data_path is not None:
      raise EnvError("alfworld: data_path is only read with source='official'")
    unknown = sorted(set(task_types) - set(TASK_TYPES))
    if not task_types or unknown:
      raise EnvError(f"alfworld: task_types must be a non-empty subset of {', '.join(TASK_TYPES)}; got {unknown}")
    self.source = source
    self.task_types = tuple(task_types)
    self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else DEFAULT_CACHE_DIR
    self._official = _official_root(data_path) if source == "official" else None
    self._expert_plan = expert_plan
    self._verify = verify
    self._game: Any = None
    self._infos: dict[str, Any] = {}
    self._task_type = ""
    self._walkthrough: list[str] | None = None
    _install_engine_speedups()

  # --- choosing the game ---------------------------------------------------------------------------------------------
  def gamefile(self, task: Task) -> Path:
    """The game.tw-pddl file that `task` plays (generated and verified on first use)."""
    if task.split not in SPLITS:
      raise EnvError(f"alfworld: unknown split '{task.split}'; expected one of {', '.join(SPLITS)}")
    if self._official is not None:
      return self._official_game(task)
    return self._generated_game(task)

  def _official_game(self, task: Task) -> Path:
    split_dir = self._official / OFFICIAL_SPLIT_DIRS[task.split]
    games = [g for g in _official_games(split_dir) if task_type_of(g) in self.task_types]
    if not games:
      raise EnvError(f"alfworld: no playable games of types {', '.join(self.task_types)} under {split_dir}")
    return games[task.seed % len(games)]

  def _generated_game(self, task: Task) -> Path:
    problem = alfworld_gen.sample_problem(task.split, task.seed, self.task_types)
    data = alfworld_gen.game_data(problem)
    game = json.dumps(data)
    # The official layout (<split>/<task dir>/<trial>/), with the content's hash as the trial: stale files never match.
    trial = self.cache_dir / "games" / task.split / problem.trial_dir / hashlib.sha256(game.encode()).hexdigest()[:20]
    gamefile = trial / "game.tw-pddl"
    if not gamefile.exists():
      _write_atomic(trial / "traj_data.json", json.dumps(alfworld_gen.traj_data(problem)).encode())
      _write_atomic(gamefile, game.encode())
    verified = trial / "verified"
    if self._verify and not verified.exists():
      with _compiling_into(self.cache_dir):
        failure = _verify_walkthrough(gamefile, data["walkthrough"])
      if failure:
        raise EnvError(f"alfworld: generated game for {task} is not solvable by its expert: {failure} ({gamefile})")
      verified.touch()
    return gamefile

  # --- the TextEnv contract ------------------------------------------------------------------------------------------
  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    self.close()
    gamefile = self.gamefile(task)
    self._task_type = task_type_of(gamefile)
    self._walkthrough = json.loads(gamefile.read_text()).get("walkthrough")
    self._game = _open_game(gamefile, self._expert_plan)
    with _compiling_into(self.cache_dir):
      observation, self._infos = self._game.reset()
    task_text = observation.partition(_TASK_PREFIX)[2].strip()
    return observation, self._info(task=task_text, gamefile=str(gamefile))

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    observation, _, _, self._infos = self._game.step(action.text)
    won = bool(self._infos["won"])
    return observation, self.r_max if won else 0.0, won, self._info(won=won)

  def _info(self, **extra: Any) -> dict[str, Any]:
    info = {"task_type": self._task_type, **extra}
    if self._expert_plan:
      info["expert_plan"] = list(self._infos.get("extra.expert_plan") or [])
    return info

  def admissible_actions(self) -> list[str] | None:
    return list(self._infos.get("admissible_commands", []))

  def expert_actions(self) -> list[str] | None:
    """The current game's winning command sequence: the generated expert's plan, or an official game's walkthrough
    (None when the file has none; `expert_plan=True` then gives the handcoded expert's next command per step)."""
    if self._game is None:
      raise EnvError("alfworld: expert_actions() needs a game; call reset() first")
    return list(self._walkthrough) if self._walkthrough is not None else None

  def close(self) -> None:
    if self._game is not None:
      self._game.close()
      self._game = None
