"""RWML (docs/RWML.md): the policy learns to predict the next observations of its own transitions, rewarded by their
similarity to what really happened, with GRPO.

A fresh start: the format warm-up (from-scratch models; `train.format_warmup_next_state` adds the next-state format)
-> collect (the policy plays train tasks at temperature 1;
the valid turns become triplets, split into train / validation by task) -> next-state SFT on the validation triplets
(`rwml.sft_steps`: the filter model) -> the too-easy filter -> the learner. The collected and the filtered triplets
are files in the workdir, and a stage whose file is there is skipped, so a killed run resumes where it stopped.

One update: `rwml.triplets_per_update` triplets (seeded passes over the filtered ones) x G = `algo.group_size`
predictions -> rewards, embedded in batches on the accelerator right after the sampler call -> `batch.prepare` with
each triplet a group of one-turn episodes (GRPO's advantages) -> the learner's steps, with the KL loss to the
initial policy.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Any, Sequence

import jax
import numpy as np

from paw_jax import multihost
from paw_jax import triplets as triplet_store
from paw_jax.batch import prepare
from paw_jax.config import ConfigError
from paw_jax.envs import Task
from paw_jax.envs.pool import EnvPool
from paw_jax.learner import Learner, rl_loss
from paw_jax.next_state import Judge, prompt_ids, sample, sft_turns
from paw_jax.programs.rl import EVAL_SEED_OFFSET
from paw_jax.programs.sft import format_warmup, supervised
from paw_jax.rollout import Episode, Turn, run_episodes
from paw_jax.run import Run
from paw_jax.triplets import Triplet
from paw_jax.wm_eval import WorldModelEval

TRAIN_FILE, VALIDATION_FILE = "triplets_train.jsonl", "triplets_validation.jsonl"
FILTERED_FILE, FILTER_REPORT = "triplets_filtered.jsonl", "filter.json"
COLLECT_SEED_OFFSET = 4  # the collection's sampling key: apart from the updates' fold_in(seed, u) and the eval's
FILTER_SEED_OFFSET = 5
TASK_OFFSET = 1_000_000  # collected tasks are train-split seeds from here: apart from the tasks RL updates draw


def collected(run: Run, pool: EnvPool, params: Any) -> tuple[list[Triplet], list[Triplet]]:
  """(train, validation) triplets: the workdir's, or collected by `params` playing `rwml.collect_tasks` train tasks
  `rwml.collect_group_size` times each at temperature 1, and saved."""
  c, env = run.config, run.config.env.name
  train_path, validation_path = run.workdir / TRAIN_FILE, run.workdir / VALIDATION_FILE
  if train_path.is_file() and validation_path.is_file():
    return triplet_store.load(train_path, env), triplet_store.load(validation_path, env)
  tasks = [Task(c.env.train_split, TASK_OFFSET + i) for i in range(c.rwml.collect_tasks)]
  turns, episodes, _ = run_episodes(pool, run.env_cls, run.sampler, params, run.tokenizer, tasks,
                                    c.rwml.collect_group_size, c.prompt,
                                    dataclasses.replace(c.sampling, temperature=1.0),
                                    jax.random.key(c.seed + COLLECT_SEED_OFFSET))
  triplets = triplet_store.collect(turns, episodes, env, c.prompt.history)
  train, validation = triplet_store.split_by_task(triplets, c.rwml.validation_share, c.seed)
  if not train:
    raise RuntimeError(f"collect: {len(turns)} turns of {len(episodes)} episodes gave no train triplet (every action "
                       "invalid?): nothing to learn from")
  print(f"collect: {len(turns)} turns -> {len(triplets)} triplets with a valid action: {len(train)} train, "
        f"{len(validation)} validation ({len(tasks)} tasks)", flush=True)
  triplet_store.save(validation_path, validation, env)
  triplet_store.save(train_path, train, env)  # last: its presence marks the stage done
  return train, validation


def next_state_sft(run: Run, params: Any, triplets: Sequence[Triplet]) -> Any:
  """`rwml.sft_steps` next-state SFT steps on `triplets` (the validation split): the filter model."""
  c = run.config
  turns = sft_turns(run.tokenizer, c.prompt, c.rwml.instruction, triplets, c.sampling.max_prompt_len,
                    c.batch.max_len)
  params, metrics = supervised(run, params, turns, c.rwml.sft_steps, c.train.format_warmup_lr, 0.0,
                               "next-state SFT")
  print(f"next-state SFT: {c.rwml.sft_steps} steps on {len(turns)} validation triplets, final NLL "
        f"{float(metrics['sft/nll']):.3f}", flush=True)
  return params


def filtered(run: Run, judge: Judge, params: Any, train: Sequence[Triplet]) -> list[Triplet]:
  """The train triplets without most of the too-easy ones: the workdir's, or filtered with `params` and saved.

  Easy: one of `rwml.filter_samples` predictions (temperature 1) is rewarded 1 under `rwml.filter_tau`; an easy
  triplet is kept with probability `rwml.keep_easy` (seeded). Triplets whose prompt cannot fit are dropped."""
  c, env = run.config, run.config.env.name
  path = run.workdir / FILTERED_FILE
  if path.is_file():
    return triplet_store.load(path, env)
  r = c.rwml
  prompts = [prompt_ids(run.tokenizer, c.prompt, r.instruction, t, c.sampling.max_prompt_len) for t in train]
  fitting = [t for t, p in zip(train, prompts) if p is not None]
  easy_N = np.zeros(len(fitting), bool)
  if r.filter_samples:
    start = time.perf_counter()
    predictions = sample(run.sampler, params, run.tokenizer, [p for p in prompts if p is not None], r.filter_samples,
                         jax.random.key(c.seed + FILTER_SEED_OFFSET),
                         dataclasses.replace(c.sampling, temperature=1.0, max_new_tokens=r.max_new_tokens),
                         wave=c.env.num_envs)
    references = [t.next_observation for t in fitting for _ in range(r.filter_samples)]
    reward_N, _ = judge(predictions.replies, references, r.filter_tau)
    easy_N = reward_N.reshape(len(fitting), r.filter_samples).max(axis=1) > 0
    print(f"filter: {r.filter_samples} predictions per triplet in {time.perf_counter() - start:.0f} s", flush=True)
  kept, easy_share = triplet_store.keep_hard(fitting, easy_N, r.keep_easy, c.seed + FILTER_SEED_OFFSET)
  report = {"train": len(train), "fitting": len(fitting), "easy": int(easy_N.sum()), "easy_share": easy_share,
            "kept": len(kept)}
  print(f"filter: {report['easy']} of {len(fitting)} train triplets easy ({easy_share:.0%}); kept {len(kept)}",
        flush=True)
  (run.workdir / FILTER_REPORT).write_text(json.dumps(report))
  triplet_store.save(path, kept, env)
  return kept


def one_turn_episodes(triplets: Sequence[Triplet], prompts: Sequence[list[int]], samples: Sequence[dict],
                      reward_N: np.ndarray, group_size: int, params_version: int) -> tuple[list[Turn], list[Episode]]:
  """Each triplet a group of `group_size` one-turn episodes whose reward is its prediction's: GRPO's input."""
  turns, episodes = [], []
  for n, (prompt, out, reward) in enumerate(zip(prompts, samples, reward_N)):
    group, traj = divmod(n, group_size)
    t = triplets[group]
    turns.append(Turn(group, traj, 0, prompt, out["tokens"], out["logprobs"], out["entropy"], t.observation, "",
                      float(reward), True, False, params_version, ""))
    episodes.append(Episode(group, traj, Task(t.split, t.task_seed), "", t.task, float(reward), reward > 0, 1))
  return turns, episodes


class RWMLProgram:
  def __init__(self, run: Run, pool: EnvPool):
    if multihost.is_multiprocess():
      raise ConfigError("stages: the rwml stage runs in one process (its collect, filter and sampling are not split "
                        "across processes); run it alone, then the rl stage on several")
    self.run, self.pool = run, pool
    c = run.config
    self.judge = Judge.load(c.rwml.similarity, c.rwml.embedder, c.rwml.embedder_path, run.tokenizer,
                            c.rwml.max_prediction_tokens)
    self.wm_eval = WorldModelEval.for_run(run, self.judge)
    self.learner: Learner | None = None
    self.triplets: list[Triplet] | None = None
    self.easy_share = float("nan")

  def start(self) -> None:
    """Warm-up, collect, (SFT,) filter, then the learner."""
    c, run = self.run.config, self.run
    params = run.take_params()
    if c.train.format_warmup_steps:
      params = format_warmup(run, params)
    train, validation = collected(run, self.pool, params)
    filter_params = params
    if c.rwml.sft_steps and not (run.workdir / FILTERED_FILE).is_file():
      filter_params = next_state_sft(run, params, validation)
    self.triplets = filtered(run, self.judge, filter_params, train)
    self.build(params)

  def build(self, params: Any = None) -> None:
    """The learner (policy and the frozen initial policy for the KL loss) and the filtered triplets."""
    c, run = self.run.config, self.run
    if self.triplets is None:  # a resumed run: its data stages are done
      self.triplets = triplet_store.load(run.workdir / FILTERED_FILE, c.env.name)
    report = run.workdir / FILTER_REPORT
    self.easy_share = json.loads(report.read_text())["easy_share"] if report.is_file() else float("nan")
    self.learner = Learner(run.graphdef, run.take_params() if params is None else params, c.optim,
                           rl_loss(c.algo.loss, None), run.mesh, with_ref=c.algo.loss.kl_coef != 0)

  def update(self, update_index: int) -> dict[str, float]:
    """G predictions of each of the update's triplets, their rewards, a GRPO update."""
    c, run, r = self.run.config, self.run, self.run.config.rwml
    chosen = triplet_store.epoch_batch(len(self.triplets), r.triplets_per_update, update_index, c.seed)
    triplets = [self.triplets[i] for i in chosen]
    prompts = [prompt_ids(run.tokenizer, c.prompt, r.instruction, t, c.sampling.max_prompt_len) for t in triplets]
    triplets = [t for t, p in zip(triplets, prompts) if p is not None]  # the filter kept fitting ones only
    start = time.perf_counter()
    predictions = sample(run.sampler, self.learner.params, run.tokenizer, [p for p in prompts if p is not None],
                         c.algo.group_size, jax.random.fold_in(jax.random.key(c.seed), update_index),
                         dataclasses.replace(c.sampling, max_new_tokens=r.max_new_tokens), wave=c.env.num_envs)
    timings = {"time/sample": time.perf_counter() - start}
    start = time.perf_counter()
    references = [t.next_observation for t in triplets for _ in range(c.algo.group_size)]
    reward_N, stats = self.judge(predictions.replies, references, r.tau)
    timings["time/reward"] = time.perf_counter() - start
    turns, episodes = one_turn_episodes(triplets, predictions.prompts, predictions.samples, reward_N,
                                        c.algo.group_size, int(self.learner.state.step))
    start = time.perf_counter()
    batch, _ = prepare(
        turns, episodes, run.tokenizer, c, 1.0,
        lambda rows: self.learner.device_passes(rows, c.batch.micro_batch, trainer_logp=c.algo.old_logp == "trainer"),
        update_index)
    train_metrics = self.learner.update(batch, c.batch.mini_batch, c.batch.micro_batch, c.algo.old_logp,
                                        c.algo.epochs)
    timings["time/train"] = time.perf_counter() - start
    rwml_metrics = {"rwml/reward": float(reward_N.mean()), "rwml/parse_rate": stats["parse_rate"],
                    "rwml/similarity": stats[f"mean_{r.similarity}"], "rwml/nan_count": float(stats["nan_count"]),
                    "rwml/response_tokens": float(np.mean([len(s["tokens"]) for s in predictions.samples])),
                    "rwml/easy_share": self.easy_share}
    return {**rwml_metrics, **train_metrics, **timings}

  def evaluate(self) -> dict[str, float]:
    """The world-model eval on the held-out panel."""
    return self.wm_eval(self.learner.params, jax.random.key(self.run.config.seed + EVAL_SEED_OFFSET))
