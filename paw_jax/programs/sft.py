"""SFT on a Learner: the warm-up of a from-scratch model on random play (paw_jax/scratch.py).

Random actions carry no task signal, so the warm-up teaches the reply format and, with `train.format_warmup_wm_coef`,
the env's dynamics (CE on the appended next observation), never which action wins: that is left to RL.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from paw_jax.batch import pack_rows
from paw_jax.learner import Learner, sft_loss
from paw_jax.metrics import progress
from paw_jax.run import Run
from paw_jax.scratch import warmup_turns

WARMUP_PLAY_SEED_OFFSET = 1  # the warm-up's random play is seeded apart from the tokenizer corpus's (seed + 0)
MICRO_BATCHES_PER_STEP = 2  # small steps: the format is simple, many updates learn it fastest


def format_warmup(run: Run, params: Any) -> Any:
  """`train.format_warmup_steps` SFT steps from `params` on random-play rows; returns the warmed-up params."""
  c = run.config
  env = run.make_env()
  turns = warmup_turns(env, run.tokenizer, c.prompt, c.train.format_warmup_episodes,
                       seed=c.seed + WARMUP_PLAY_SEED_OFFSET)
  env.close()
  wm_coef = c.train.format_warmup_wm_coef
  micro = c.batch.micro_batch
  rows_per_step = micro * MICRO_BATCHES_PER_STEP
  batch = pack_rows(turns, run.tokenizer, c.batch, with_observation=bool(wm_coef))
  batch.wm_weight_B = batch.valid_B * np.float32(wm_coef / rows_per_step)  # the mean CE of a row
  learner = Learner(run.graphdef, params, dataclasses.replace(c.optim, learning_rate=c.train.format_warmup_lr),
                    sft_loss("ce" if wm_coef else None), run.mesh, with_ref=False)
  rng = np.random.default_rng(c.seed)
  bar = progress(c.train.format_warmup_steps, desc="format warm-up")
  for _ in range(c.train.format_warmup_steps):
    rows = rng.choice(len(turns), size=min(rows_per_step, len(turns)), replace=False)
    step_rows = batch.select(rows)
    metrics, _ = learner.step(next(step_rows.mini_batches(rows_per_step, micro, old_logp="sampler")))
    bar.update()
  bar.close()
  wm = f", next-observation CE {float(metrics['sft/wm']) / wm_coef:.3f}" if "sft/wm" in metrics else ""
  print(f"format warm-up: {c.train.format_warmup_steps} steps, final action NLL {float(metrics['sft/nll']):.3f}{wm}",
        flush=True)
  return learner.params
