"""Multi-turn rollouts on the host: prompts -> one batched sampler call per turn -> env pool -> Turn records.

G rollouts per task form a group (same Task, so the same initial state); every active episode of the update is
generated in one sampler call per turn, whatever its group. Each Turn keeps what training needs: the prompt and
response tokens, sampler log-probs and entropies, the raw next observation (PaW's WM target), reward, done, ids, the
current observation (GiGPO's anchor) and the params version that produced it.

Several processes: each plays its own share of the tasks (`multihost.process_share`) in its own env pool, and every
sampler call is one collective call over every process's prompts (each row with its own key), so decoding is split
over all devices and never repeated; `gather_rollouts` then gives every process the whole update's turns.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from paw_jax import multihost
from paw_jax.envs.base import Task, TextEnv, parse_action
from paw_jax.envs.pool import EnvPool
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.prompts import PromptConfig, fitted_prompt_ids, render_turn
from paw_jax.sampling import Sampler, SamplingConfig


@dataclasses.dataclass
class Turn:
  group_id: int
  traj_id: int
  step: int
  prompt_ids: list[int]
  response_ids: np.ndarray
  logprobs: np.ndarray  # sampler log-probs of response_ids
  entropy: np.ndarray  # full-vocabulary entropy at each response token
  observation: str  # o_t, the anchor state of GiGPO
  next_observation: str  # o_{t+1}, the WM target ('' when the episode failed in the env)
  reward: float
  done: bool
  invalid: bool
  params_version: int
  action: str = ""  # the parsed action (the reply's tail when none parses): what the history shows later turns
  admissible: list[str] | None = None  # the actions the prompt listed


@dataclasses.dataclass
class Episode:
  group_id: int
  traj_id: int
  task: Task
  task_type: str
  task_text: str = ""  # the env's task description (the prompt may reword it)
  episode_return: float = 0.0
  won: bool = False
  length: int = 0
  invalid_count: int = 0
  error: str | None = None


@dataclasses.dataclass
class _Live:
  """An episode in progress."""
  slot: int
  episode: Episode
  observation: str
  admissible: list[str] | None
  history: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RolloutStats:
  sample_s: float = 0.0
  env_s: float = 0.0
  turns: int = 0
  response_tokens: int = 0


def build_prompt(tokenizer: Tokenizer, env_cls: type[TextEnv], cfg: PromptConfig, live: _Live,
                 max_prompt_len: int) -> list[int] | None:
  """Prompt tokens for the live episode's next turn; drops the oldest history pairs when too long (None: no fit)."""
  return fitted_prompt_ids(
      tokenizer, cfg, lambda history: render_turn(env_cls, cfg, live.episode.task_text, live.episode.length, history,
                                                  live.observation, live.admissible),
      live.history, max_prompt_len)


def run_episodes(pool: EnvPool, env_cls: type[TextEnv], sampler: Sampler, params: Any, tokenizer: Tokenizer,
                 tasks: Sequence[Task], group_size: int, prompt_cfg: PromptConfig, sampling_cfg: SamplingConfig,
                 rng: jax.Array, params_version: int = 0, worker_independent: bool = False,
                 first_group: int = 0) -> tuple[list[Turn], list[Episode], RolloutStats]:
  """Plays `group_size` episodes of every task (in waves of at most `pool.num_envs`); returns turns and episodes.
  Task i is group `first_group + i` (a process's share of the update's groups keeps the groups' global ids).

  Sampling keys: one per sampler call, split from `rng` wave by wave. `worker_independent` (evaluation panels): a key
  per episode and turn (`turn_keys`) and sampler calls of one fixed size (`sampling_cfg.eval_rows`, or the number of
  episodes when fewer), so an episode's draws and tokens, and so its outcome, do not depend on the waves (the pool's
  size) nor on which other episodes share a sampler call.

  With several processes every process must call this together (its own tasks, possibly none), `worker_independent`
  (one key per row: the rows of all processes share each sampler call).
  """
  if multihost.is_multiprocess() and not worker_independent:
    raise ValueError("run_episodes: several processes share each sampler call, so worker_independent must be set")
  specs = [(first_group + g, i, task) for g, task in enumerate(tasks) for i in range(group_size)]
  total_episodes = sum(multihost.gather_objects(len(specs)))
  turns: list[Turn] = []
  episodes: list[Episode] = []
  stats = RolloutStats()
  episode_rng = rng
  for start in range(0, len(specs), pool.num_envs):
    wave = specs[start:start + pool.num_envs]
    rng, wave_rng = jax.random.split(rng)
    wave_turns, wave_episodes = _run_wave(pool, env_cls, sampler, params, tokenizer, wave, prompt_cfg, sampling_cfg,
                                          episode_rng if worker_independent else wave_rng, params_version, stats,
                                          min(total_episodes, sampling_cfg.eval_rows) if worker_independent else 0)
    turns += wave_turns
    episodes += wave_episodes
  while _sample(sampler, params, [], None, sampling_cfg, min(total_episodes, sampling_cfg.eval_rows))[1]:
    pass  # this process is done: it joins the other processes' sampler calls until they are too
  return turns, episodes, stats


def _sample(sampler: Sampler, params: Any, prompts: list[list[int]], rng: jax.Array | None, cfg: SamplingConfig,
            rows: int) -> tuple[list[dict[str, np.ndarray]], bool]:
  """(this process's samples, whether any process had prompts). One process: the sampler's call. Several: one call
  over every process's prompts and keys (gathered), each process taking back its own rows."""
  if not multihost.is_multiprocess():
    return sampler(params, prompts, rng, cfg, rows=rows), bool(prompts)
  keys = None if rng is None else np.asarray(jax.random.key_data(rng))
  every = multihost.gather_objects((prompts, keys))
  all_prompts = [p for process_prompts, _ in every for p in process_prompts]
  if not all_prompts:
    return [], False
  all_keys = jax.random.wrap_key_data(np.concatenate([k for p, k in every if p]))
  samples = sampler(params, all_prompts, all_keys, cfg, rows=rows)
  start = sum(len(p) for p, _ in every[:jax.process_index()])
  return samples[start:start + len(prompts)], True


def gather_rollouts(turns: list[Turn], episodes: list[Episode],
                    stats: RolloutStats) -> tuple[list[Turn], list[Episode], RolloutStats]:
  """Every process's turns and episodes (all of them in each process), in (group, trajectory, turn) order, and the
  stats summed; with one process, the same rows reordered."""
  every = multihost.gather_objects((turns, episodes, stats))
  turns = sorted((t for p_turns, _, _ in every for t in p_turns), key=lambda t: (t.group_id, t.traj_id, t.step))
  episodes = sorted((e for _, p_episodes, _ in every for e in p_episodes), key=lambda e: (e.group_id, e.traj_id))
  total = RolloutStats(**{f.name: sum(getattr(s, f.name) for _, _, s in every)
                          for f in dataclasses.fields(RolloutStats)})
  return turns, episodes, total


def turn_keys(rng: jax.Array, group_B: Sequence[int], traj_B: Sequence[int], step_B: Sequence[int]) -> jax.Array:
  """One sampling key per row: fold_in(rng, group, trajectory, turn)."""
  def key(group, traj, step):
    return jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(rng, group), traj), step)
  return jax.vmap(key)(*(jnp.asarray(x, jnp.uint32) for x in (group_B, traj_B, step_B)))


def _run_wave(pool, env_cls, sampler, params, tokenizer, wave, prompt_cfg, sampling_cfg, rng, params_version,
              stats, fixed_rows: int) -> tuple[list[Turn], list[Episode]]:
  """`fixed_rows` > 0: every sampler call has that many rows, with a key per episode and turn."""
  start = time.perf_counter()
  resets = pool.reset([(slot, task) for slot, (_, _, task) in enumerate(wave)])
  stats.env_s += time.perf_counter() - start
  episodes, live = [], []
  for slot, ((group_id, traj_id, task), (observation, info)) in enumerate(zip(wave, resets)):
    episode = Episode(group_id, traj_id, task, str(info.get("task_type", "")), str(info.get("task", "")))
    episodes.append(episode)
    if "error" in info:
      episode.error = info["error"]
      continue
    live.append(_Live(slot, episode, observation, info.get("admissible_actions")))

  turns: list[Turn] = []
  while live:
    prompts, playable = [], []
    for episode in live:
      ids = build_prompt(tokenizer, env_cls, prompt_cfg, episode, sampler.max_prompt_len)
      if ids is None:
        episode.episode.error = f"prompt longer than max_prompt_len={sampler.max_prompt_len} even without history"
        continue
      prompts.append(ids)
      playable.append(episode)
    if not playable:
      break
    if fixed_rows:
      turn_rng = turn_keys(rng, *zip(*((e.episode.group_id, e.episode.traj_id, e.episode.length) for e in playable)))
    else:
      rng, turn_rng = jax.random.split(rng)
    start = time.perf_counter()
    samples, _ = _sample(sampler, params, prompts, turn_rng, sampling_cfg, fixed_rows)
    stats.sample_s += time.perf_counter() - start
    replies = [tokenizer.decode(s["tokens"].tolist(), skip_special_tokens=True) for s in samples]
    start = time.perf_counter()
    results = pool.step([(episode.slot, reply) for episode, reply in zip(playable, replies)])
    stats.env_s += time.perf_counter() - start
    live = []
    for episode, prompt, sample, reply, result in zip(playable, prompts, samples, replies, results):
      action = action_text(env_cls, reply)
      turns.append(Turn(episode.episode.group_id, episode.episode.traj_id, episode.episode.length, prompt,
                        sample["tokens"], sample["logprobs"], sample["entropy"], episode.observation,
                        result.observation, result.reward, result.done, bool(result.info.get("invalid")),
                        params_version, action, episode.admissible))
      stats.turns += 1
      stats.response_tokens += len(sample["tokens"])
      _advance(episode, action, result)
      if not result.done:
        live.append(episode)
  return turns, episodes


def action_text(env_cls: type[TextEnv], reply: str) -> str:
  """The action a reply took, as later prompts' history shows it: the parsed action, else the reply's tail."""
  action = parse_action(reply, env_cls.action_tags, env_cls.max_reply_chars)
  return action.text if action else reply[-200:]


def _advance(live: _Live, action: str, result) -> None:
  episode = live.episode
  episode.length += 1
  episode.episode_return += result.reward
  episode.invalid_count = int(result.info.get("invalid_count", episode.invalid_count))
  episode.won = episode.won or bool(result.info.get("won"))
  if "error" in result.info:
    episode.error = result.info["error"]
  live.history.append((live.observation, action))
  live.observation = result.observation
  live.admissible = result.info.get("admissible_actions")


def episode_metrics(episodes: Sequence[Episode], prefix: str) -> dict[str, float]:
  """Success rate (overall and per task type), mean return, mean turns, invalid-action rate, env failures."""
  if not episodes:
    return {}
  turns = sum(e.length for e in episodes)
  metrics = {
      f"{prefix}/success": float(np.mean([e.won for e in episodes])),
      f"{prefix}/return": float(np.mean([e.episode_return for e in episodes])),
      f"{prefix}/turns": turns / len(episodes),
      f"{prefix}/invalid_rate": sum(e.invalid_count for e in episodes) / max(turns, 1),
      f"{prefix}/env_errors": float(sum(e.error is not None for e in episodes)),
  }
  for task_type in sorted({e.task_type for e in episodes if e.task_type}):
    of_type = [e.won for e in episodes if e.task_type == task_type]
    metrics[f"{prefix}/success/{task_type}"] = float(np.mean(of_type))
  return metrics
