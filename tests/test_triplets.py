"""RWML triplets: collected from rollout records with the history the prompts showed, invalid and failed turns
dropped; split by task; the easy-triplet sampling; the JSONL store and its one-line errors."""
import dataclasses
import json

import numpy as np
import pytest

from paw_jax import triplets as T
from paw_jax.envs import Task, make
from paw_jax.rollout import Episode, Turn
from paw_jax.scratch import TASKS_PER_SEED, random_play


def played(episodes: int = 6):
  """Turn and Episode records of random FrozenLake play (one group per episode), and the history each turn saw."""
  env = make("frozenlake", size=3, max_steps=6)
  turns, records, seen = [], {}, {}
  for task_text, step, history, observation, _, action, next_observation in random_play(env, "train", episodes, 3):
    group = len(records) if step == 0 else len(records) - 1  # an episode starts at step 0
    if step == 0:
      records[group] = Episode(group, 0, Task("train", 3 * TASKS_PER_SEED + group), "frozenlake", task_text)
    invalid = len(turns) % 3 == 2  # pretend every third reply was malformed
    turns.append(Turn(group, 0, step, [1], np.zeros(1, np.int32), np.zeros(1), np.zeros(1), observation,
                      next_observation, 0.0, False, invalid, 0, action))
    seen[(group, step)] = history
  return turns, list(records.values()), seen


def test_collect_rebuilds_the_history_and_drops_invalid_and_failed_turns():
  turns, episodes, seen = played()
  turns[0] = dataclasses.replace(turns[0], next_observation="", invalid=False)  # an env failure: no real o_{t+1}
  triplets = T.collect(turns, episodes, "frozenlake", history=2)
  kept = [t for t in turns[1:] if not t.invalid]
  assert len(triplets) == len(kept) > 5
  for triplet, turn in zip(sorted(triplets, key=lambda t: (t.task_seed, t.step)), kept):
    assert (triplet.step, triplet.action, triplet.next_observation) == (turn.step, turn.action, turn.next_observation)
    assert triplet.history == tuple(seen[(turn.group_id, turn.step)][-2:])  # what random play's prompts held
    assert triplet.task == episodes[turn.group_id].task_text and triplet.env == "frozenlake"
  assert all(len(t.history) == min(t.step, 2) for t in triplets)
  assert {len(t.history) for t in T.collect(turns, episodes, "frozenlake", history=0)} == {0}


def synthetic(num_tasks: int, per_task: int = 3) -> list[T.Triplet]:
  return [T.Triplet("frozenlake", "train", task, 0, step, "t", (), "o", "a", "o2")
          for task in range(num_tasks) for step in range(per_task)]


def test_split_puts_no_task_in_both_halves():
  train, validation = T.split_by_task(synthetic(20), validation_share=0.1, seed=0)
  train_tasks, validation_tasks = {t.task_seed for t in train}, {t.task_seed for t in validation}
  assert not train_tasks & validation_tasks and len(validation_tasks) == 2 and len(train) + len(validation) == 60
  assert T.split_by_task(synthetic(20), 0.1, seed=0) == (train, validation)  # seeded
  assert {t.task_seed for t in T.split_by_task(synthetic(20), 0.1, seed=1)[1]} != validation_tasks
  assert T.split_by_task(synthetic(1), 0.1, seed=0)[1] == []  # one task: nothing to hold out


def test_keep_hard_keeps_every_hard_triplet_and_a_seeded_share_of_easy_ones():
  triplets = synthetic(500, per_task=2)
  easy_N = np.random.default_rng(0).random(len(triplets)) < 0.3
  kept, easy_share = T.keep_hard(triplets, easy_N, keep_easy=0.1, seed=7)
  kept_ids = {(t.task_seed, t.step) for t in kept}
  hard_ids = {(t.task_seed, t.step) for t, easy in zip(triplets, easy_N) if not easy}
  assert hard_ids <= kept_ids and easy_share == pytest.approx(easy_N.mean())
  kept_easy = len(kept_ids - hard_ids) / easy_N.sum()
  assert 0.05 < kept_easy < 0.15, kept_easy
  assert T.keep_hard(triplets, easy_N, keep_easy=0.1, seed=7)[0] == kept
  with pytest.raises(ValueError, match="3 easy flags for 1000 triplets"):
    T.keep_hard(triplets, easy_N[:3], 0.1, 0)


def test_store_round_trips_and_names_a_wrong_env_or_schema(tmp_path):
  turns, episodes, _ = played(3)
  triplets = T.collect(turns, episodes, "frozenlake", history=2)
  path = tmp_path / "triplets" / "train.jsonl"
  T.save(path, triplets, "frozenlake")
  assert T.load(path, "frozenlake") == triplets and not list(path.parent.glob("*.tmp"))
  with pytest.raises(ValueError, match=rf"triplets of env 'frozenlake', schema {T.SCHEMA_VERSION}; this run needs env 'sokoban'"):
    T.load(path, "sokoban")
  lines = path.read_text().splitlines()
  path.write_text("\n".join([json.dumps({"schema": 0, "env": "frozenlake"}), *lines[1:]]))
  with pytest.raises(ValueError, match=f"schema 0; this run needs env 'frozenlake', schema {T.SCHEMA_VERSION}"):
    T.load(path, "frozenlake")


def test_epoch_batches_visit_every_item_once_per_epoch_whatever_the_resume_point():
  batches = [T.epoch_batch(10, 4, index, seed=1) for index in range(5)]  # 20 draws: two epochs of 10
  drawn = np.concatenate(batches)
  assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:]) == list(range(10))
  assert not np.array_equal(drawn[:10], drawn[10:])  # each epoch has its own order
  np.testing.assert_array_equal(T.epoch_batch(10, 4, 3, seed=1), batches[3])  # a resumed run draws the same
  assert not np.array_equal(T.epoch_batch(10, 4, 0, seed=2), batches[0])
  with pytest.raises(ValueError, match="no items"):
    T.epoch_batch(0, 4, 0, seed=1)
