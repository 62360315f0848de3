"""RWML's data (docs/RWML.md): (history, action, real next observation) triplets of the agent's own rollouts, the
split into train / validation by task, the too-easy filter's sampling, and a JSONL store with a schema version.

A triplet is one turn whose action was valid: the task text, the last `history` (observation, action) pairs before
it, the current observation, the action and the observation it caused. A turn that ended in an env failure has no
real next observation and is dropped too.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Sequence

import numpy as np
from etils import epath

from paw_jax.envs.base import TextEnv
from paw_jax.rollout import Episode, Turn
from paw_jax.scratch import TASKS_PER_SEED, random_play

SCHEMA_VERSION = 2
MAX_RANDOM_EPISODES = 100_000  # random play gives up after this many episodes (an env whose episodes hold nothing)


@dataclasses.dataclass(frozen=True)
class Triplet:
  env: str
  split: str  # the env split the task came from
  task_seed: int  # with `split`, the task: the unit of the train / validation split
  traj_id: int
  step: int
  task: str
  history: tuple[tuple[str, str], ...]  # the last H (observation, action) pairs before this turn, oldest first
  observation: str
  action: str
  next_observation: str
  admissible: tuple[str, ...] | None = None  # the actions the turn's prompt listed


def collect(turns: Sequence[Turn], episodes: Sequence[Episode], env: str, history: int) -> list[Triplet]:
  """The triplets of an update's turns (rollout.run_episodes' output); `history` < 0 keeps the whole history."""
  episode_of = {(e.group_id, e.traj_id): e for e in episodes}
  by_trajectory = collections.defaultdict(list)
  for turn in turns:
    by_trajectory[(turn.group_id, turn.traj_id)].append(turn)
  triplets = []
  for key, trajectory in by_trajectory.items():
    episode = episode_of[key]
    trajectory = sorted(trajectory, key=lambda t: t.step)
    for i, turn in enumerate(trajectory):
      if turn.invalid or not turn.next_observation.strip():
        continue
      past = [(t.observation, t.action) for t in trajectory[:i]]
      kept = past if history < 0 else past[len(past) - history:] if history else []
      triplets.append(Triplet(env, episode.task.split, episode.task.seed, turn.traj_id, turn.step, episode.task_text,
                              tuple(kept), turn.observation, turn.action, turn.next_observation,
                              None if turn.admissible is None else tuple(turn.admissible)))
  return triplets


def random_play_triplets(env: TextEnv, env_name: str, split: str, size: int, history: int, seed: int) -> list[Triplet]:
  """The first `size` transitions of seeded random play on `split` (as many episodes as that takes)."""
  found: list[Triplet] = []
  episode = -1
  for task_text, step, past, observation, admissible, action, next_observation in random_play(
      env, split, episodes=MAX_RANDOM_EPISODES, seed=seed):
    episode += step == 0
    if next_observation.strip():
      kept = past if history < 0 else past[len(past) - history:] if history else []
      found.append(Triplet(env_name, split, seed * TASKS_PER_SEED + episode, 0, step, task_text, tuple(kept),
                           observation, action, next_observation, None if admissible is None else tuple(admissible)))
      if len(found) == size:
        return found
  raise ValueError(f"random play on {env_name}/{split}: {len(found)} transitions in {MAX_RANDOM_EPISODES} episodes, "
                   f"fewer than the {size} asked for")


def split_by_task(triplets: Sequence[Triplet], validation_share: float,
                  seed: int) -> tuple[list[Triplet], list[Triplet]]:
  """(train, validation): a seeded `validation_share` of the tasks (at least one when there are two or more) goes to
  validation with all its triplets, so no task is in both."""
  tasks = sorted({(t.split, t.task_seed) for t in triplets})
  order = np.random.default_rng(seed).permutation(len(tasks))
  num_validation = min(max(round(validation_share * len(tasks)), 1), len(tasks) - 1) if len(tasks) > 1 else 0
  validation_tasks = {tasks[i] for i in order[:num_validation]}
  train = [t for t in triplets if (t.split, t.task_seed) not in validation_tasks]
  return train, [t for t in triplets if (t.split, t.task_seed) in validation_tasks]


def keep_hard(triplets: Sequence[Triplet], easy_N: np.ndarray, keep_easy: float,
              seed: int) -> tuple[list[Triplet], float]:
  """Every hard triplet and a seeded `keep_easy` share of the easy ones; and the easy share before filtering."""
  easy_N = np.asarray(easy_N, bool)
  if len(easy_N) != len(triplets):
    raise ValueError(f"keep_hard: {len(easy_N)} easy flags for {len(triplets)} triplets")
  keep_N = ~easy_N | (np.random.default_rng(seed).random(len(triplets)) < keep_easy)
  return [t for t, keep in zip(triplets, keep_N) if keep], float(easy_N.mean()) if len(easy_N) else 0.0


def epoch_batch(num_items: int, per_batch: int, index: int, seed: int) -> np.ndarray:
  """The item indices of batch `index` when batches of `per_batch` run through seeded permutations of `num_items`
  items, one permutation per epoch: every item once per epoch, and batch `index` the same however the run resumed."""
  if num_items < 1:
    raise ValueError("epoch_batch: no items to draw batches from")
  positions = np.arange(index * per_batch, (index + 1) * per_batch)
  epochs = positions // num_items
  orders = {e: np.random.default_rng([seed, e]).permutation(num_items) for e in np.unique(epochs)}
  return np.array([orders[e][p % num_items] for e, p in zip(epochs, positions)], np.int64)


def save(path: str | os.PathLike, triplets: Sequence[Triplet], env: str) -> None:
  """One header line ({"schema", "env"}) and one JSON object per triplet; written to a temporary file and renamed, so
  a killed run never leaves half a file that a resume would take for a finished stage."""
  path = epath.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(path.name + ".tmp")
  with tmp.open("w", encoding="utf-8") as f:
    f.write(json.dumps({"schema": SCHEMA_VERSION, "env": env}) + "\n")
    for triplet in triplets:
      f.write(json.dumps(dataclasses.asdict(triplet)) + "\n")
  tmp.replace(path)


def load(path: str | os.PathLike, env: str) -> list[Triplet]:
  """The triplets of `path`; a file of another env or schema version is a one-line ValueError naming both."""
  path = epath.Path(path)
  lines = path.read_text(encoding="utf-8").splitlines()
  header = json.loads(lines[0]) if lines else {}
  if header.get("schema") != SCHEMA_VERSION or header.get("env") != env:
    raise ValueError(f"{path}: triplets of env {header.get('env')!r}, schema {header.get('schema')!r}; this run "
                     f"needs env {env!r}, schema {SCHEMA_VERSION}")
  triplets = []
  for line in lines[1:]:
    record = json.loads(line)
    record["history"] = tuple(tuple(pair) for pair in record["history"])
    record["admissible"] = None if record["admissible"] is None else tuple(record["admissible"])
    triplets.append(Triplet(**record))
  return triplets
