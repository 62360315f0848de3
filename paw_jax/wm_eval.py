"""The world-model eval, the same for every program: how well the policy predicts the real next observation on a
fixed panel of held-out transitions.

The panel is random play on the env's eval split (seeded; saved in the workdir as JSONL), so it depends on the env,
the seed and the history length only: every variant of a run — task RL with or without PaW, RWML, next-state SFT —
is measured on the same transitions, none of which any of them trained on. Metrics (`eval/wm_*`):
  ce, acc        teacher-forced cross-entropy (nats / token) and greedy token accuracy of the next observation in
                 PaW's row: [turn prompt | action reply | header + next observation] (docs/PAW.md)
  ns_ce, ns_acc  the same in RWML's next-state format: [next-state prompt | <think></think><next_state> + next obs]
  reward, parse_rate, similarity
                 with `rwml.panel_samples` > 0: RWML's reward (and its parts) of predictions sampled at the eval
                 temperature
"""
from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from flax import nnx

from paw_jax import multihost
from paw_jax import triplets as triplet_store
from paw_jax.batch import observation_ids
from paw_jax.config import Config
from paw_jax.envs.base import TextEnv, tagged
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.next_state import Judge, prompt_ids, sample
from paw_jax.prompts import NEXT_STATE_TAG, fitted_prompt_ids, render_turn
from paw_jax.run import Run
from paw_jax.sampling import Sampler, power_of_two_buckets
from paw_jax.scratch import reply_text
from paw_jax.triplets import Triplet

PANEL_FILE = "wm_panel.jsonl"
PANEL_SEED_OFFSET = 3  # random play seeded apart from the tokenizer corpus (+0) and the warm-up (+1)
NEXT_STATE_PREFIX = tagged("think", "") + f"<{NEXT_STATE_TAG}>"  # what a next-state reply holds before the state


def load_or_build_panel(config: Config, env: TextEnv, workdir: epath.Path) -> list[Triplet]:
  """The workdir's panel, or a new one (seeded: the same in every process) saved there by process 0."""
  path = workdir / PANEL_FILE
  if path.is_file():
    return triplet_store.load(path, config.env.name)
  panel = triplet_store.random_play_triplets(env, config.env.name, config.env.eval_split, config.rwml.panel_size,
                               config.prompt.history, config.seed + PANEL_SEED_OFFSET)
  if multihost.is_main():
    triplet_store.save(path, panel, config.env.name)
  return panel


@dataclasses.dataclass
class TargetRows:
  """Teacher-forced rows [prefix | target]: the loss reads the target tokens only."""
  tokens_BxT: np.ndarray
  mask_BxT: np.ndarray
  target_mask_BxT: np.ndarray


def target_rows(prefixes: Sequence[list[int]], targets: Sequence[list[int]], pad_id: int, rows_multiple: int) -> TargetRows:
  """Right-padded rows in a power-of-two length; the row count padded to a multiple of `rows_multiple`."""
  longest = max(len(p) + len(t) for p, t in zip(prefixes, targets))
  length = next(b for b in power_of_two_buckets(64, max(longest, 64)) if b >= longest)
  num_rows = -(-len(prefixes) // rows_multiple) * rows_multiple
  rows = TargetRows(np.full((num_rows, length), pad_id, np.int32), np.zeros((num_rows, length), bool),
                    np.zeros((num_rows, length), bool))
  for b, (prefix, target) in enumerate(zip(prefixes, targets)):
    rows.tokens_BxT[b, :len(prefix) + len(target)] = prefix + target
    rows.mask_BxT[b, :len(prefix) + len(target)] = True
    rows.target_mask_BxT[b, len(prefix):len(prefix) + len(target)] = True
  return rows


@functools.partial(jax.jit, static_argnums=0)
def _target_sums(graphdef: nnx.GraphDef, params: Any, tokens_BxT: jax.Array, mask_BxT: jax.Array,
                 target_mask_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(Σ −log p, Σ 1[argmax = token]) over the target tokens."""
  model = nnx.merge(graphdef, params)
  positions_BxT = jnp.broadcast_to(jnp.arange(tokens_BxT.shape[1]), tokens_BxT.shape)
  logits_BxTxV, _ = model(tokens_BxT[:, :-1], positions_BxT[:, :-1], mask_BxT[:, :-1])
  logp_BxTxV = jax.nn.log_softmax(logits_BxTxV.astype(jnp.float32), axis=-1)
  target_BxT, read_BxT = tokens_BxT[:, 1:], target_mask_BxT[:, 1:]
  logp_BxT = jnp.take_along_axis(logp_BxTxV, target_BxT[..., None], axis=-1)[..., 0]
  correct_BxT = jnp.argmax(logp_BxTxV, axis=-1) == target_BxT
  return jnp.sum(jnp.where(read_BxT, -logp_BxT, 0.0)), jnp.sum(read_BxT & correct_BxT)


class WorldModelEval:
  """The panel's teacher-forced rows in both formats, built once; `__call__(params)` gives the `eval/wm_*` metrics."""

  def __init__(self, config: Config, panel: Sequence[Triplet], env_cls: type[TextEnv], tokenizer: Tokenizer,
               graphdef: nnx.GraphDef, sampler: Sampler, judge: Judge | None):
    self.config, self.panel, self.graphdef, self.sampler, self.judge = config, list(panel), graphdef, sampler, judge
    self.tokenizer = tokenizer
    c, unlimited = config, sys.maxsize  # teacher forcing has no sampler: a panel row may be as long as it is
    turn_prefixes, ns_prefixes, self._ns_prompts, row_targets, ns_targets = [], [], [], [], []
    for t in self.panel:
      turn = fitted_prompt_ids(tokenizer, c.prompt, lambda history, t=t: render_turn(
          env_cls, c.prompt, t.task, t.step, history, t.observation, None if t.admissible is None else
          list(t.admissible)), list(t.history), unlimited)
      ns = prompt_ids(tokenizer, c.prompt, c.rwml.instruction, t, unlimited)
      if judge is not None and c.rwml.panel_samples and len(ns) > c.sampling.max_prompt_len:
        raise ValueError(f"world-model panel: a next-state prompt of {c.env.name} has {len(ns)} tokens, more than "
                         f"sampling.max_prompt_len={c.sampling.max_prompt_len} (raise it or set rwml.panel_samples=0)")
      obs = observation_ids(tokenizer, t.next_observation, c.batch)
      header = len(obs) - len(tokenizer.encode(t.next_observation)[:c.batch.max_obs_tokens])
      reply = tokenizer.encode(reply_text(env_cls, t.action)) + [tokenizer.eos_token_id]
      turn_prefixes.append(turn + reply + obs[:header])
      row_targets.append(obs[header:])
      ns_prefixes.append(ns + tokenizer.encode(NEXT_STATE_PREFIX))
      ns_targets.append(tokenizer.encode(t.next_observation.strip())[:c.batch.max_obs_tokens])
      self._ns_prompts.append(ns)
    micro = c.batch.micro_batch
    self._rows = {"": target_rows(turn_prefixes, row_targets, tokenizer.pad_token_id, micro),
                  "ns_": target_rows(ns_prefixes, ns_targets, tokenizer.pad_token_id, micro)}

  @classmethod
  def for_run(cls, run: Run, judge: Judge | None = None) -> WorldModelEval:
    """The run's panel (the workdir's, or built and saved); `judge` scores sampled predictions (default: loaded
    from `rwml` when `rwml.panel_samples` asks for them)."""
    c = run.config
    env = run.make_env()
    try:
      panel = load_or_build_panel(c, env, run.workdir)
    finally:
      env.close()
    if judge is None and c.rwml.panel_samples:
      judge = Judge.load(c.rwml.similarity, c.rwml.embedder, c.rwml.embedder_path, run.tokenizer,
                         c.rwml.max_prediction_tokens)
    return cls(c, panel, run.env_cls, run.tokenizer, run.graphdef, run.sampler, judge)

  def __call__(self, params: Any, rng: jax.Array) -> dict[str, float]:
    metrics = {}
    micro = self.config.batch.micro_batch
    for prefix, rows in self._rows.items():
      sums = [_target_sums(self.graphdef, params, rows.tokens_BxT[s:s + micro], rows.mask_BxT[s:s + micro],
                           rows.target_mask_BxT[s:s + micro]) for s in range(0, len(rows.tokens_BxT), micro)]
      nll, correct = np.sum(jax.device_get(sums), axis=0)
      count = max(int(rows.target_mask_BxT.sum()), 1)
      metrics[f"eval/wm_{prefix}ce"] = float(nll) / count
      metrics[f"eval/wm_{prefix}acc"] = float(correct) / count
    samples = self.config.rwml.panel_samples
    if samples and self.judge is not None:
      c = self.config
      predictions = sample(self.sampler, params, self.tokenizer, self._ns_prompts, samples, rng,
                           dataclasses.replace(c.sampling.for_eval(), max_new_tokens=c.rwml.max_new_tokens),
                           wave=c.env.num_envs)
      references = [t.next_observation for t in self.panel for _ in range(samples)]
      reward_N, stats = self.judge(predictions.replies, references, c.rwml.tau)
      metrics.update({"eval/wm_reward": float(reward_N.mean()), "eval/wm_parse_rate": stats["parse_rate"],
                      "eval/wm_similarity": stats[f"mean_{c.rwml.similarity}"]})
    return metrics
