"""An update's training rows and the one stage that prepares them: `prepare(turns, ...) -> TrainBatch`.

A row is `[prompt h_t | response a_t | header + next observation o_{t+1}]` (docs/PAW.md). Masks are aligned with the
tokens: `action_mask_BxT[b, t]` marks a response token, `obs_mask_BxT` an appended observation token (the header is
context: no loss), `mask_BxT` any real token. The loss reads `logp_BxT[b, t] = log p(tokens[b, t] | tokens[b, :t])`, so
causal attention keeps the action logits independent of the appended observation.

`prepare` runs in one fixed order: turns (the placebo's shuffled targets) -> rows -> device passes (trainer and
reference log-probs, critic values) -> advantages -> PaW weights, balanced for the mini-batch each row will train in
-> shuffle. Advantages and PaW weights are host numpy over the whole update; the jitted step then sees per-row
numbers only (`TrainBatch.mini_batches`).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterator, Sequence

import numpy as np

from paw_jax.algos.advantages import Trajectories, compute_advantages
from paw_jax.algos.paw import paw_weights, shuffled_observations
from paw_jax.config import BatchConfig, Config
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.rollout import Episode, Turn
from paw_jax.sampling import power_of_two_buckets

PLACEBO_STREAM = 1  # the placebo's shuffle draws from rng([seed, update, this]), apart from the row shuffle's stream


@dataclasses.dataclass
class TrainBatch:
  """The rows of one update, padded with empty rows (all masks 0) to a multiple of `micro_batch`.

  Filled in stages: `pack_rows` sets the rows, the learner's device passes the log-probs and values, `prepare` the
  credit. `old_logp_BxT`, what PPO's ratio divides by, is chosen from the sampler's or the trainer's log-probs.
  """
  tokens_BxT: np.ndarray  # int32, right-padded
  mask_BxT: np.ndarray  # bool: a real token
  action_mask_BxT: np.ndarray  # bool: a response token (RL loss)
  obs_mask_BxT: np.ndarray  # bool: an appended next-observation token (WM loss)
  valid_B: np.ndarray  # bool: a real row
  sampler_logp_BxT: np.ndarray  # float32 log-probs the sampler drew the response with
  entropy_BxT: np.ndarray  # host only: full-vocabulary entropy at each response token (PaW's selection)
  trainer_logp_BxT: np.ndarray | None = None  # the trainer's log-probs of the same tokens (algo.old_logp='trainer')
  ref_logp_BxT: np.ndarray | None = None  # the reference policy's, for the KL loss
  old_value_B: np.ndarray | None = None  # the critic's value before the update (PPO)
  advantage_B: np.ndarray | None = None
  return_B: np.ndarray | None = None  # the critic's target (PPO)
  wm_weight_B: np.ndarray | None = None  # PaW: w_row of Eq. 11, zeros without PaW

  HOST_ONLY = ("entropy_BxT", "sampler_logp_BxT", "trainer_logp_BxT")

  @property
  def num_rows(self) -> int:
    return len(self.valid_B)

  def select(self, rows_B: np.ndarray) -> TrainBatch:
    """The rows `rows_B` (indices), in that order."""
    return TrainBatch(**{k: None if v is None else v[rows_B] for k, v in self._fields().items()})

  def step_inputs(self, old_logp: str) -> dict[str, np.ndarray]:
    """What the jitted step reads: the device fields, with `old_logp_BxT` the sampler's or the trainer's."""
    inputs = {k: v for k, v in self._fields().items() if v is not None and k not in self.HOST_ONLY}
    inputs["old_logp_BxT"] = self.trainer_logp_BxT if old_logp == "trainer" else self.sampler_logp_BxT
    return inputs

  def mini_batches(self, mini_batch: int, micro_batch: int, old_logp: str) -> Iterator[dict[str, np.ndarray]]:
    """Consecutive mini-batches of exactly `mini_batch` rows (the last padded with empty rows: static shapes), each
    shaped [mini_batch / micro_batch, micro_batch, ...] for the step's scan over micro-batches."""
    inputs = self.step_inputs(old_logp)
    padded = -(-self.num_rows // mini_batch) * mini_batch
    inputs = {k: np.concatenate([v, np.zeros((padded - self.num_rows, *v.shape[1:]), v.dtype)])
              for k, v in inputs.items()}
    for start in range(0, padded, mini_batch):
      yield micro_batches({k: v[start:start + mini_batch] for k, v in inputs.items()}, micro_batch)

  def _fields(self) -> dict[str, np.ndarray | None]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def micro_batches(rows: dict[str, np.ndarray], micro_batch: int) -> dict[str, np.ndarray]:
  """[B, ...] -> [B / micro_batch, micro_batch, ...] for the step's scan over micro-batches."""
  num_rows = len(rows["valid_B"])
  if num_rows % micro_batch:
    raise ValueError(f"{num_rows} rows are not a multiple of micro_batch={micro_batch}")
  return {k: v.reshape(num_rows // micro_batch, micro_batch, *v.shape[1:]) for k, v in rows.items()}


def observation_ids(tokenizer: Tokenizer, observation: str, cfg: BatchConfig) -> list[int]:
  """Header + o_{t+1} tokens, truncated to `max_obs_tokens` observation tokens; [] for an empty observation."""
  if not observation.strip():
    return []
  return tokenizer.encode(cfg.obs_header) + tokenizer.encode(observation)[:cfg.max_obs_tokens]


def pack_rows(turns: Sequence[Turn], tokenizer: Tokenizer, cfg: BatchConfig, with_observation: bool) -> TrainBatch:
  """Right-padded rows in a power-of-two length bucket; `with_observation` appends o_{t+1} (PaW's WM target)."""
  rows = []
  header_len = len(tokenizer.encode(cfg.obs_header))
  for turn in turns:
    obs = observation_ids(tokenizer, turn.next_observation, cfg) if with_observation else []
    room = cfg.max_len - len(turn.prompt_ids) - len(turn.response_ids)
    if room < 0:
      raise ValueError(f"prompt {len(turn.prompt_ids)} + response {len(turn.response_ids)} tokens exceed "
                       f"batch.max_len={cfg.max_len}")
    obs = obs[:room] if room > header_len else []
    rows.append((turn, obs, header_len if obs else 0))
  longest = max(len(t.prompt_ids) + len(t.response_ids) + len(o) for t, o, _ in rows)
  length = next(b for b in power_of_two_buckets(min(64, cfg.max_len), cfg.max_len) if b >= longest)
  num_rows = -(-len(rows) // cfg.micro_batch) * cfg.micro_batch
  batch = TrainBatch(
      tokens_BxT=np.full((num_rows, length), tokenizer.pad_token_id, np.int32),
      mask_BxT=np.zeros((num_rows, length), bool), action_mask_BxT=np.zeros((num_rows, length), bool),
      obs_mask_BxT=np.zeros((num_rows, length), bool), valid_B=np.zeros((num_rows,), bool),
      sampler_logp_BxT=np.zeros((num_rows, length), np.float32), entropy_BxT=np.zeros((num_rows, length), np.float32))
  for b, (turn, obs, header_len) in enumerate(rows):
    p, a = len(turn.prompt_ids), len(turn.response_ids)
    batch.tokens_BxT[b, :p + a + len(obs)] = np.concatenate([turn.prompt_ids, turn.response_ids, obs])
    batch.mask_BxT[b, :p + a + len(obs)] = True
    batch.action_mask_BxT[b, p:p + a] = True
    batch.obs_mask_BxT[b, p + a + header_len:p + a + len(obs)] = True
    batch.sampler_logp_BxT[b, p:p + a] = turn.logprobs
    batch.entropy_BxT[b, p:p + a] = turn.entropy
    batch.valid_B[b] = True
  return batch


def trajectories(turns: Sequence[Turn], value_B: np.ndarray | None = None) -> Trajectories:
  """Episode bookkeeping of the real rows (the first len(turns) of the batch)."""
  return Trajectories(
      reward_B=np.array([t.reward for t in turns], np.float64),
      done_B=np.array([t.done for t in turns]),
      group_id_B=np.array([t.group_id for t in turns]),
      traj_id_B=np.array([t.traj_id for t in turns]),
      step_B=np.array([t.step for t in turns]),
      anchor_B=np.array([t.observation for t in turns], dtype=object),
      value_B=value_B)


def _padded(values: Sequence | np.ndarray, num_rows: int, fill=0, dtype=np.float32) -> np.ndarray:
  out = np.full(num_rows, fill, dtype)
  out[:len(values)] = values
  return out


def prepare(turns: Sequence[Turn], episodes: Sequence[Episode], tokenizer: Tokenizer, config: Config, r_max: float,
            device_passes: Callable[[TrainBatch], None], update_index: int) -> tuple[TrainBatch, dict[str, float]]:
  """An update's TrainBatch from its turns, ready for `mini_batches`, and the PaW metrics.

  `device_passes(batch)` fills the trainer's and reference log-probs and the critic's values (the learner's).
  """
  if config.paw.enabled and config.paw.targets == "shuffled":  # the placebo: same actions, another row's o_{t+1}
    observations = shuffled_observations([t.next_observation for t in turns],
                                         np.random.default_rng([config.seed, update_index, PLACEBO_STREAM]))
    turns = [dataclasses.replace(t, next_observation=o) for t, o in zip(turns, observations)]
  batch = pack_rows(turns, tokenizer, config.batch, with_observation=config.paw.enabled)
  device_passes(batch)
  n, num_rows = len(turns), batch.num_rows
  values_B = batch.old_value_B[:n] if batch.old_value_B is not None else None
  credit = compute_advantages(config.algo.name, trajectories(turns, values_B), config.algo.adv)
  batch.advantage_B = _padded(credit.advantage_B, num_rows)
  if credit.return_B is not None:
    batch.return_B = _padded(credit.return_B, num_rows)
  # Rows come grouped by turn index; shuffled (seeded by the update), each mini-batch mixes turns and groups.
  order_B = np.random.default_rng([config.seed, update_index]).permutation(num_rows)
  batch.wm_weight_B, metrics = np.zeros(num_rows, np.float32), {}
  if config.paw.enabled:
    return_of = {(e.group_id, e.traj_id): e.episode_return for e in episodes}
    batch.wm_weight_B, metrics = paw_weights(
        config.paw, r_max, token_entropy_BxT=batch.entropy_BxT, sampled_logp_BxT=batch.sampler_logp_BxT,
        action_mask_BxT=batch.action_mask_BxT, obs_mask_BxT=batch.obs_mask_BxT, valid_B=batch.valid_B,
        group_id_B=_padded([t.group_id for t in turns], num_rows, -1, int),
        traj_id_B=_padded([t.traj_id for t in turns], num_rows, -1, int),
        episode_return_B=_padded([return_of[(t.group_id, t.traj_id)] for t in turns], num_rows, 0, float),
        step_B=mini_batch_index(order_B, config.batch.mini_batch))
  return batch.select(order_B), metrics


def mini_batch_index(order_B: np.ndarray, mini_batch: int) -> np.ndarray:
  """The mini-batch (optimizer step) each row trains in once the rows are put in `order_B`: `mini_batches` takes
  consecutive runs of `mini_batch` rows, so row order_B[i] lands in mini-batch i // mini_batch."""
  step_B = np.empty(len(order_B), np.int64)
  step_B[order_B] = np.arange(len(order_B)) // mini_batch
  return step_B
