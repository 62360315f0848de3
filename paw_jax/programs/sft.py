"""SFT on a Learner: the warm-up of a from-scratch model on random play (paw_jax/scratch.py), and the SFT loop it
shares with RWML's filter model (`supervised`, `sft_step`).

Random actions carry no task signal, so the warm-up teaches the reply format and, with `train.format_warmup_wm_coef`,
the env's dynamics (CE on the appended next observation), never which action wins: that is left to RL. With
`train.format_warmup_next_state` it also teaches RWML's next-state format on the same transitions (the label is the
real next observation: dynamics again, no task signal).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from paw_jax.batch import TrainBatch, pack_rows
from paw_jax.learner import Learner, sft_loss
from paw_jax.metrics import progress
from paw_jax.next_state import sft_turns
from paw_jax.rollout import Turn
from paw_jax.run import Run
from paw_jax.scratch import warmup_turns
from paw_jax.triplets import random_play_triplets

WARMUP_PLAY_SEED_OFFSET = 1  # the warm-up's random play is seeded apart from the tokenizer corpus's (seed + 0)
MICRO_BATCHES_PER_STEP = 2  # small steps: the format is simple, many updates learn it fastest


def format_warmup(run: Run, params: Any) -> Any:
  """`train.format_warmup_steps` SFT steps from `params` on random-play rows; returns the warmed-up params."""
  c = run.config
  env = run.make_env()
  turns = warmup_turns(env, run.tokenizer, c.prompt, c.train.format_warmup_episodes,
                       seed=c.seed + WARMUP_PLAY_SEED_OFFSET)
  if c.train.format_warmup_next_state:  # the same transitions, posed as RWML's next-state task
    plays = random_play_triplets(env, c.env.name, "train", len(turns), c.prompt.history,
                                 seed=c.seed + WARMUP_PLAY_SEED_OFFSET)
    turns += sft_turns(run.tokenizer, c.prompt, c.rwml.instruction, plays, c.sampling.max_prompt_len,
                       c.batch.max_len)
  env.close()
  wm_coef = c.train.format_warmup_wm_coef
  params, metrics = supervised(run, params, turns, c.train.format_warmup_steps, c.train.format_warmup_lr, wm_coef,
                               "format warm-up")
  wm = f", next-observation CE {float(metrics['sft/wm']) / wm_coef:.3f}" if "sft/wm" in metrics else ""
  print(f"format warm-up: {c.train.format_warmup_steps} steps, final action NLL {float(metrics['sft/nll']):.3f}{wm}",
        flush=True)
  return params


def supervised(run: Run, params: Any, turns: Sequence[Turn], steps: int, learning_rate: float, wm_coef: float,
               desc: str) -> tuple[Any, dict[str, float]]:
  """`steps` SFT steps from `params` on seeded random choices of `turns` (NLL of the responses, plus with `wm_coef`
  the CE of the appended next observations); returns the params and the last step's metrics."""
  c = run.config
  micro = c.batch.micro_batch
  rows_per_step = micro * MICRO_BATCHES_PER_STEP
  batch = pack_rows(turns, run.tokenizer, c.batch, with_observation=bool(wm_coef))
  batch.wm_weight_B = batch.valid_B * np.float32(wm_coef / rows_per_step)  # the mean CE of a row
  learner = Learner(run.graphdef, params, dataclasses.replace(c.optim, learning_rate=learning_rate),
                    sft_loss("ce" if wm_coef else None), run.mesh, with_ref=False)
  rng = np.random.default_rng(c.seed)
  metrics = {}
  bar = progress(steps, desc=desc)
  for _ in range(steps):
    rows_B = rng.choice(len(turns), size=min(rows_per_step, len(turns)), replace=False)
    metrics = sft_step(learner, batch, rows_B, rows_per_step, micro)
    bar.update()
  bar.close()
  return learner.params, jax.device_get(metrics)


def sft_step(learner: Learner, batch: TrainBatch, rows_B: np.ndarray, rows_per_step: int,
             micro_batch: int) -> dict[str, jax.Array]:
  """One optimizer step on the rows `rows_B` of `batch` (padded with empty rows to `rows_per_step`)."""
  minibatch = next(batch.select(rows_B).mini_batches(rows_per_step, micro_batch, old_logp="sampler"))
  metrics, _ = learner.step(minibatch)
  return metrics
