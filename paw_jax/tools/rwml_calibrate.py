"""RWML's τ for one env from evidence: `python -m paw_jax.tools.rwml_calibrate --env frozenlake --embedder minilm`.

RWML rewards a predicted next observation ŝ by 1[d(ŝ, s) < τ] (docs/RWML.md). Random play of the env gives real
next observations s; each is compared with three kinds of candidate: "near" (s after one small edit: a right
prediction worded a little differently), "other action" (what a different admissible action from the same state
led to: a wrong prediction that looks plausible) and "random" (the next observation of a turn of another episode).
The tool prints the 10/50/90th percentiles of d per kind and proposes a τ that accepts at least 90% of "near" and
rejects at least 90% of "other action", or says in one line that none does (exit status 0: that is an answer).
An unknown env or embedder, or a bad --env_kwargs, is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from typing import NamedTuple, Sequence

import numpy as np

from paw_jax.algos.rewards import SIMILARITY_REWARDS
from paw_jax.envs import EnvError, Task, TextEnv, make, tagged
from paw_jax.scratch import TASKS_PER_SEED, random_play
from paw_jax.tools.similarity import load_embedder, usage_error

TOOL = "rwml_calibrate"  # the name its one-line errors start with
KINDS = ("near", "other action", "random")
SPLIT = "train"  # random play's split; a replay must reset the same tasks


class PlayedTurn(NamedTuple):
  episode: int
  task_seed: int
  history: tuple[tuple[str, str], ...]  # (observation, action) pairs before this turn, oldest first
  observation: str
  admissible: tuple[str, ...]
  action: str
  next_observation: str


def play(env: TextEnv, episodes: int, seed: int) -> list[PlayedTurn]:
  """The turns of `scratch.random_play` whose next observation is not blank, with the task each came from."""
  turns, episode = [], -1
  for _, step, history, observation, admissible, action, next_observation in random_play(env, SPLIT, episodes, seed):
    episode += step == 0  # random_play starts every episode at step 0 and says nothing else about which it is in
    if next_observation.strip():
      turns.append(PlayedTurn(episode, seed * TASKS_PER_SEED + episode, tuple(history), observation,
                              tuple(admissible), action, next_observation))
  return turns


def near_edit(text: str, rng: random.Random) -> str | None:
  """`text` after one seeded edit, chosen among those that apply: drop one word, swap two adjacent different words,
  or add 1 to the first number inside one word. Words are whitespace-separated and the whitespace is kept (a grid
  keeps its lines). None when no edit applies (a text of one word without a digit)."""
  parts = re.split(r"(\s+)", text.strip())  # words at even indices, the whitespace between them at odd ones
  words = range(0, len(parts), 2)
  swaps = [i for i in words[:-1] if parts[i] != parts[i + 2]]
  numbers = [i for i in words if re.search(r"\d", parts[i])]
  edits = (["drop"] if len(words) > 1 else []) + (["swap"] if swaps else []) + (["number"] if numbers else [])
  if not edits:
    return None
  edit = rng.choice(edits)
  if edit == "drop":
    i = rng.choice(words)
    start = i if i + 1 < len(parts) else i - 1  # the word and one whitespace run next to it
    del parts[start:start + 2]
  elif edit == "swap":
    i = rng.choice(swaps)
    parts[i], parts[i + 2] = parts[i + 2], parts[i]
  else:
    i = rng.choice(numbers)
    parts[i] = re.sub(r"\d+", lambda number: str(int(number[0]) + 1), parts[i], count=1)
  return "".join(parts)


def replay(env: TextEnv, task_seed: int, history: Sequence[tuple[str, str]]) -> str:
  """Resets the task and re-applies the history's actions; returns the observation this leaves the env in."""
  observation, _ = env.reset(Task(SPLIT, task_seed))
  for _, action in history:
    observation = env.step(tagged(env.action_tags[0], action)).observation
  return observation


def other_action_observation(env: TextEnv, turn: PlayedTurn, rng: random.Random) -> str | None:
  """The next observation of a seeded admissible action other than the turn's, from the same state; None when there
  is no other action, when the replay does not reach the turn's observation (the env is not a function of task and
  actions) or when the other action leads to the same observation (a slip, a no-op: no wrong prediction to offer)."""
  others = [a for a in turn.admissible if a != turn.action]
  if not others:
    return None
  other = rng.choice(others)
  if replay(env, turn.task_seed, turn.history) != turn.observation:
    return None
  observation = env.step(tagged(env.action_tags[0], other)).observation
  return observation if observation.strip() and observation != turn.next_observation else None


def candidates(env: TextEnv, turns: Sequence[PlayedTurn], seed: int) -> dict[str, list[tuple[str, str]]]:
  """(real next observation, candidate) pairs per kind in KINDS; a turn without a candidate of a kind is left out of
  that kind."""
  rng = random.Random(seed)
  pairs = {kind: [] for kind in KINDS}
  for turn in turns:
    elsewhere = [t for t in turns if t.episode != turn.episode]
    found = {"near": near_edit(turn.next_observation, rng), "other action": other_action_observation(env, turn, rng),
             "random": rng.choice(elsewhere).next_observation if elsewhere else None}
    for kind, candidate in found.items():
      if candidate is not None:
        pairs[kind].append((turn.next_observation, candidate))
  return pairs


def distances(pairs: Sequence[tuple[str, str]], embedder=None) -> np.ndarray:
  """d of each (reference, candidate) pair, as the trainer's reward computes it: the cosine distance with the
  reference embedded as the query, or, without an embedder, the rouge_l distance (1 − ROUGE-L F1 in steps of 0.2)."""
  if not pairs:
    return np.zeros(0)
  references, predictions = [list(texts) for texts in zip(*pairs)]
  return SIMILARITY_REWARDS["rouge_l" if embedder is None else "cosine"].fn(predictions, references, embedder)


def percentiles(distance_N: np.ndarray) -> tuple[float, float, float]:
  """The 10th, 50th and 90th percentiles (NaN when empty)."""
  if not len(distance_N):
    return (float("nan"),) * 3
  return tuple(float(p) for p in np.percentile(distance_N, [10, 50, 90]))


def propose_tau(near_N: np.ndarray, other_N: np.ndarray) -> float | None:
  """The midpoint between near's 90th and other's 10th percentile when the first is below the second, else None.

  The percentiles are order statistics rounded outwards (near's up, other's down), so that r = 1[d < τ] accepts at
  least 90% of near and rejects at least 90% of other however few the samples (interpolated ones do not promise
  that: with 2 samples the interpolated 90th percentile lies below the larger one)."""
  if not len(near_N) or not len(other_N):
    return None
  near90 = float(np.percentile(near_N, 90, method="higher"))
  other10 = float(np.percentile(other_N, 10, method="lower"))
  return (near90 + other10) / 2 if near90 < other10 else None


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", required=True, help="env registry name")
  parser.add_argument("--embedder", default="minilm", help="'minilm', 'qwen3_embedding' or 'rouge_l'")
  parser.add_argument("--path", help="embedder checkpoint (default: the embedder's own)")
  parser.add_argument("--episodes", type=int, default=50, help="random episodes to play")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--env_kwargs", default="{}", help="JSON object of keyword arguments for the env")
  args = parser.parse_args(argv)
  try:
    env_kwargs = json.loads(args.env_kwargs)
  except json.JSONDecodeError as error:
    raise usage_error(TOOL, f"--env_kwargs is not JSON: {error}") from None
  if not isinstance(env_kwargs, dict):
    raise usage_error(TOOL, f"--env_kwargs must be a JSON object, got {args.env_kwargs!r}")
  embedder = load_embedder(TOOL, args.embedder, args.path)  # before playing: a bad name fails at once
  try:
    env = make(args.env, **env_kwargs)
  except (EnvError, TypeError, ValueError) as error:
    raise usage_error(TOOL, ' '.join(str(error).split())) from None
  try:
    turns = play(env, args.episodes, args.seed)
    pairs = candidates(env, turns, args.seed)
  finally:
    env.close()
  # One call for all kinds: each padded batch shape is compiled once, not once per kind.
  distance_all = distances([pair for kind in KINDS for pair in pairs[kind]], embedder)
  distance = dict(zip(KINDS, np.split(distance_all, np.cumsum([len(pairs[kind]) for kind in KINDS])[:-1])))

  print(f"{args.env}, {args.embedder}: {len(turns)} turns of {args.episodes} random episodes (seed {args.seed})")
  print(f"{'kind':<14}{'count':>6}{'d10':>8}{'d50':>8}{'d90':>8}")
  for kind in KINDS:
    print(f"{kind:<14}{len(distance[kind]):>6}" + "".join(f"{p:>8.3f}" for p in percentiles(distance[kind])))
  near, other = distance["near"], distance["other action"]
  if not len(near) or not len(other):
    print(f"no evidence: {len(near)} near and {len(other)} other-action candidates; play more --episodes")
    return
  tau = propose_tau(near, other)
  if tau is None:
    advice = "" if args.embedder == "rouge_l" else ": use rouge_l"
    print(f"{args.embedder} cannot separate right from wrong next observations for {args.env}{advice}")
    return
  print(f"proposed tau {tau:.3f}: r = 1[d < tau] accepts {np.mean(near < tau):.0%} of near, "
        f"rejects {np.mean(other >= tau):.0%} of other action, {np.mean(distance['random'] >= tau):.0%} of random")


if __name__ == "__main__":
  main()
