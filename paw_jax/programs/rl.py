"""Task RL: GRPO, GiGPO, RLOO or PPO (`algo.name`), with or without PaW (docs/PAW.md).

One update: rollouts of `groups_per_update` tasks x `group_size` episodes with the current policy -> `batch.prepare`
(device passes, advantages, PaW weights) -> the learner's optimizer steps. Everything random in an update derives from
(seed, update index) and the tasks from the update index, so a run resumed from a checkpoint replays exactly what
the uninterrupted run would have done.

Several processes: each plays a contiguous block of the update's groups (and of the eval panel's tasks) in its own env
pool (`paw_jax/rollout.py`); the turns are then gathered, so every process prepares the same whole batch (advantages
per group, PaW's top-α over the whole update's pool) and feeds the devices of its own share of each step.
"""
from __future__ import annotations

import collections
import time
from typing import Any

import jax
from flax import nnx

from paw_jax import multihost
from paw_jax.algos.advantages import ADVANTAGES
from paw_jax.batch import prepare
from paw_jax.critic import CriticPlugin
from paw_jax.envs import Task
from paw_jax.envs.pool import EnvPool
from paw_jax.learner import Learner, rl_loss
from paw_jax.programs.sft import format_warmup
from paw_jax.rollout import Episode, episode_metrics, gather_rollouts, run_episodes
from paw_jax.run import Run
from paw_jax.wm_eval import WorldModelEval

EVAL_SEED_OFFSET = 7919  # evaluation samples with key(seed + this): a stream apart from the rollouts' fold_in(seed, u)


class RLProgram:
  def __init__(self, run: Run, pool: EnvPool):
    self.run, self.pool = run, pool
    self.learner: Learner | None = None
    self.wm_eval = WorldModelEval.for_run(run) if run.config.rwml.panel_size else None
    self._reported_errors: set[str] = set()

  def start(self) -> None:
    """A fresh run: the warm-up (if configured), then the learner from the warmed-up policy."""
    params = self.run.take_params()
    if self.run.config.train.format_warmup_steps:
      params = format_warmup(self.run, params)
    self.build(params)

  def build(self, params: Any = None) -> None:
    """The learner (policy state, KL reference, the critic for PPO) from `params` (default: the run's initial
    weights, e.g. as the shapes a checkpoint is restored onto)."""
    c, run = self.run.config, self.run
    params = run.take_params() if params is None else params
    plugins = ()
    if ADVANTAGES[c.algo.name].needs_critic:  # a copy of the policy with a value head, its own optimizer
      plugins = (CriticPlugin(nnx.merge(run.graphdef, params), c.optim, c.critic, run.mesh),)
    loss_fn = rl_loss(c.algo.loss, c.paw.wm_loss if c.paw.enabled else None)
    self.learner = Learner(run.graphdef, params, c.optim, loss_fn, run.mesh, with_ref=c.algo.loss.kl_coef != 0,
                           ref_dtype=c.model.ref_dtype, plugins=plugins)

  def update(self, update_index: int) -> dict[str, float]:
    """Rollouts, the batch, then an optimizer step per mini-batch (and the critic's, for PPO)."""
    c, run = self.run.config, self.run
    groups = c.algo.groups_per_update
    tasks = [Task(c.env.train_split, update_index * groups + g) for g in range(groups)]
    first_group, tasks = multihost.process_share(tasks)
    episode_keys = c.train.episode_keys or multihost.is_multiprocess()
    start = time.perf_counter()
    turns, episodes, stats = run_episodes(self.pool, run.env_cls, run.sampler, self.learner.params, run.tokenizer,
                                          tasks, c.algo.group_size, c.prompt, c.sampling,
                                          jax.random.fold_in(jax.random.key(c.seed), update_index),
                                          int(self.learner.state.step), worker_independent=episode_keys,
                                          first_group=first_group)
    timings = {"time/rollout": time.perf_counter() - start, "time/sample": stats.sample_s, "time/env": stats.env_s}
    self._report_errors(episodes, "rollout")
    if episode_keys:
      turns, episodes, stats = gather_rollouts(turns, episodes, stats)
    rollout_metrics = {**episode_metrics(episodes, "rollout"), "rollout/rows": float(len(turns)),
                       "rollout/response_tokens": stats.response_tokens / max(stats.turns, 1)}
    if not turns:  # every episode failed before its first action (e.g. the env crashed): the run goes on
      return {**rollout_metrics, **timings, "train/skipped": 1.0}
    start = time.perf_counter()
    batch, paw_metrics = prepare(
        turns, episodes, run.tokenizer, c, run.env_cls.r_max,
        lambda rows: self.learner.device_passes(rows, c.batch.micro_batch, trainer_logp=c.algo.old_logp == "trainer"),
        update_index)
    train_metrics = self.learner.update(batch, c.batch.mini_batch, c.batch.micro_batch, c.algo.old_logp,
                                        c.algo.epochs)
    timings["time/train"] = time.perf_counter() - start
    return {**rollout_metrics, **train_metrics, **paw_metrics, **timings}

  def evaluate(self) -> dict[str, float]:
    """One episode per task of the fixed eval panel (`eval_episodes`), at the eval temperature; and the world-model
    eval (paw_jax/wm_eval.py)."""
    c = self.run.config
    episodes = self.eval_episodes()
    metrics = episode_metrics(episodes, "eval")
    if self.wm_eval is not None:
      metrics.update(self.wm_eval(self.learner.params, jax.random.key(c.seed + EVAL_SEED_OFFSET)))
    return metrics

  def eval_episodes(self) -> list[Episode]:
    """Tasks 0 .. eval_episodes - 1 of the eval split, each episode sampled from its own key stream in sampler calls
    of a fixed size: the panel and each task's outcome do not depend on the number of env workers."""
    c, run = self.run.config, self.run
    first, tasks = multihost.process_share([Task(c.env.eval_split, i) for i in range(c.train.eval_episodes)])
    _, episodes, stats = run_episodes(
        self.pool, run.env_cls, run.sampler, self.learner.params, run.tokenizer, tasks, 1, c.prompt,
        c.sampling.for_eval(), jax.random.key(c.seed + EVAL_SEED_OFFSET), int(self.learner.state.step),
        worker_independent=True, first_group=first)
    self._report_errors(episodes, "eval")
    return gather_rollouts([], episodes, stats)[1] if multihost.is_multiprocess() else episodes

  def _report_errors(self, episodes: list[Episode], phase: str) -> None:
    """Prints each new kind of episode error once: such an episode counts as failed and the run goes on, but a
    misconfiguration must not hide behind a low success rate."""
    for error, count in collections.Counter(e.error for e in episodes if e.error is not None).items():
      if error not in self._reported_errors:
        self._reported_errors.add(error)
        where = f"process {jax.process_index()}: " if multihost.is_multiprocess() else ""
        print(f"warning: {where}{count} {phase} episode(s) ended as failed: {error}", flush=True)
