"""Next-state SFT (the paper's "WM SFT", RWML's baseline; docs/RWML.md): supervised learning of the real next
observation on the same collected triplets, label `<think></think><next_state>s</next_state>`.

A fresh start: the format warm-up (from-scratch models), then collect (paw_jax/programs/rwml.py; skipped when the
workdir holds the triplets). One update: one optimizer step on `rwml.triplets_per_update` train triplets (seeded
passes over all of them: no filter, the filter is RWML's).
"""
from __future__ import annotations

from typing import Any

import jax

from paw_jax import triplets as triplet_store
from paw_jax.batch import pack_rows
from paw_jax.envs.pool import EnvPool
from paw_jax.learner import Learner, sft_loss
from paw_jax.metrics import reduce_step_metrics
from paw_jax.next_state import sft_turns
from paw_jax.programs.rl import EVAL_SEED_OFFSET
from paw_jax.programs.rwml import TRAIN_FILE, collected
from paw_jax.programs.sft import format_warmup, sft_step
from paw_jax.run import Run
from paw_jax.wm_eval import WorldModelEval


class NextStateSFTProgram:
  def __init__(self, run: Run, pool: EnvPool):
    self.run, self.pool = run, pool
    self.wm_eval = WorldModelEval.for_run(run)
    self.learner: Learner | None = None
    self.batch = None

  def start(self) -> None:
    params = self.run.take_params()
    if self.run.config.train.format_warmup_steps:
      params = format_warmup(self.run, params)
    collected(self.run, self.pool, params)
    self.build(params)

  def build(self, params: Any = None) -> None:
    """The learner and the SFT rows of every train triplet."""
    c, run = self.run.config, self.run
    train = triplet_store.load(run.workdir / TRAIN_FILE, c.env.name)
    turns = sft_turns(run.tokenizer, c.prompt, c.rwml.instruction, train, c.sampling.max_prompt_len, c.batch.max_len)
    self.batch = pack_rows(turns, run.tokenizer, c.batch, with_observation=False)
    self.learner = Learner(run.graphdef, run.take_params() if params is None else params, c.optim, sft_loss(),
                           run.mesh, with_ref=False)

  def update(self, update_index: int) -> dict[str, float]:
    c = self.run.config
    micro = c.batch.micro_batch
    rows_per_step = -(-c.rwml.triplets_per_update // micro) * micro
    rows_B = triplet_store.epoch_batch(int(self.batch.valid_B.sum()), c.rwml.triplets_per_update, update_index,
                                       c.seed)
    metrics = sft_step(self.learner, self.batch, rows_B, rows_per_step, micro)
    return reduce_step_metrics([jax.device_get(metrics)], "train")

  def evaluate(self) -> dict[str, float]:
    return self.wm_eval(self.learner.params, jax.random.key(self.run.config.seed + EVAL_SEED_OFFSET))
