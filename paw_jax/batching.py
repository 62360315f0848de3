"""Turns -> padded training rows `[prompt h_t | response a_t | header + next observation o_{t+1}]` and per-row weights.

Masks are aligned with the tokens: `action_mask_BxT[b, t]` marks a response token, `obs_mask_BxT` an appended
observation token (the header is context: no loss), `mask_BxT` any real token. The loss reads
`logp_BxT[b, t] = log p(tokens[b, t] | tokens[b, :t])`, so causal attention makes the action logits independent of
the appended observation. Advantages and PaW's WM weights are computed here on the host (numpy), once per update,
over the whole update pool; the jitted step then only sees per-row numbers.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from paw_jax.algos.advantages import AdvantageConfig, Trajectories, compute_advantages
from paw_jax.algos.paw import PawConfig, paw_weights
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.rollout import Episode, Turn
from paw_jax.sampling import power_of_two_buckets


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  max_len: int = 1024  # row length bucket cap: prompt + response + observation
  with_observation: bool = True  # append o_{t+1} (PaW's WM target); without PaW rows end at the response
  max_obs_tokens: int = 256  # PaW: o_{t+1} is truncated to this many tokens
  obs_header: str = "\nObservation: "
  micro_batch: int = 8  # rows per micro-batch (gradient accumulation inside the jitted step)


def observation_ids(tokenizer: Tokenizer, observation: str, cfg: BatchConfig) -> list[int]:
  """Header + o_{t+1} tokens, truncated to `max_obs_tokens` observation tokens; [] for an empty observation."""
  if not cfg.with_observation or not observation.strip():
    return []
  return tokenizer.encode(cfg.obs_header) + tokenizer.encode(observation)[:cfg.max_obs_tokens]


def pack_rows(turns: Sequence[Turn], tokenizer: Tokenizer, cfg: BatchConfig) -> dict[str, np.ndarray]:
  """Right-padded rows; the row count is padded to a multiple of `micro_batch` with empty rows (all masks 0)."""
  rows = []
  header_len = len(tokenizer.encode(cfg.obs_header))
  for turn in turns:
    obs = observation_ids(tokenizer, turn.next_observation, cfg)
    room = cfg.max_len - len(turn.prompt_ids) - len(turn.response_ids)
    if room < 0:
      raise ValueError(f"prompt {len(turn.prompt_ids)} + response {len(turn.response_ids)} tokens exceed "
                       f"batch.max_len={cfg.max_len}")
    obs = obs[:room] if room > header_len else []
    rows.append((turn, obs, header_len if obs else 0))
  longest = max(len(t.prompt_ids) + len(t.response_ids) + len(o) for t, o, _ in rows)
  length = next(b for b in power_of_two_buckets(min(64, cfg.max_len), cfg.max_len) if b >= longest)
  num_rows = -(-len(rows) // cfg.micro_batch) * cfg.micro_batch
  batch = {
      "tokens_BxT": np.full((num_rows, length), tokenizer.pad_token_id, np.int32),
      "mask_BxT": np.zeros((num_rows, length), bool),
      "action_mask_BxT": np.zeros((num_rows, length), bool),
      "obs_mask_BxT": np.zeros((num_rows, length), bool),
      "old_logp_BxT": np.zeros((num_rows, length), np.float32),
      "entropy_BxT": np.zeros((num_rows, length), np.float32),
      "valid_B": np.zeros((num_rows,), bool),
  }
  for b, (turn, obs, header_len) in enumerate(rows):
    p, a = len(turn.prompt_ids), len(turn.response_ids)
    batch["tokens_BxT"][b, :p + a + len(obs)] = np.concatenate([turn.prompt_ids, turn.response_ids, obs])
    batch["mask_BxT"][b, :p + a + len(obs)] = True
    batch["action_mask_BxT"][b, p:p + a] = True
    batch["obs_mask_BxT"][b, p + a + header_len:p + a + len(obs)] = True
    batch["old_logp_BxT"][b, p:p + a] = turn.logprobs
    batch["entropy_BxT"][b, p:p + a] = turn.entropy
    batch["valid_B"][b] = True
  return batch


def trajectories(turns: Sequence[Turn], values_B: np.ndarray | None = None) -> Trajectories:
  """Episode bookkeeping of the real rows (the first len(turns) of the batch)."""
  return Trajectories(
      reward_B=np.array([t.reward for t in turns], np.float64),
      done_B=np.array([t.done for t in turns]),
      group_id_B=np.array([t.group_id for t in turns]),
      traj_id_B=np.array([t.traj_id for t in turns]),
      step_B=np.array([t.step for t in turns]),
      anchor_B=np.array([t.observation for t in turns], dtype=object),
      value_B=values_B)


def build_batch(turns: Sequence[Turn], episodes: Sequence[Episode], tokenizer: Tokenizer, cfg: BatchConfig,
                advantage: str, advantage_cfg: AdvantageConfig, paw: PawConfig | None, r_max: float,
                values_fn: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None,
                ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
  """The update's rows with `advantage_B` (and, for GAE, `return_B` and the critic's `old_value_B`) and
  `wm_weight_B` (zeros without PaW). `values_fn(rows) -> value_B`: the critic, needed by GAE."""
  batch = pack_rows(turns, tokenizer, cfg)
  num_rows, n = len(batch["valid_B"]), len(turns)
  if values_fn is not None:
    batch["old_value_B"] = np.where(batch["valid_B"], values_fn(batch), 0.0).astype(np.float32)
  values_B = batch["old_value_B"][:n] if values_fn is not None else None
  result = compute_advantages(advantage, trajectories(turns, values_B), advantage_cfg)
  batch["advantage_B"] = np.zeros(num_rows, np.float32)
  batch["advantage_B"][:n] = result.advantage_B
  if result.return_B is not None:
    batch["return_B"] = np.zeros(num_rows, np.float32)
    batch["return_B"][:n] = result.return_B
  batch["wm_weight_B"] = np.zeros(num_rows, np.float32)
  metrics: dict[str, float] = {}
  if paw is not None:
    return_of = {(e.group_id, e.traj_id): e.episode_return for e in episodes}
    group_B = np.full(num_rows, -1)
    traj_B = np.full(num_rows, -1)
    return_B = np.zeros(num_rows)
    group_B[:n] = [t.group_id for t in turns]
    traj_B[:n] = [t.traj_id for t in turns]
    return_B[:n] = [return_of[(t.group_id, t.traj_id)] for t in turns]
    batch["wm_weight_B"], metrics = paw_weights(
        paw, r_max, token_entropy_BxT=batch["entropy_BxT"], sampled_logp_BxT=batch["old_logp_BxT"],
        action_mask_BxT=batch["action_mask_BxT"], obs_mask_BxT=batch["obs_mask_BxT"], valid_B=batch["valid_B"],
        group_id_B=group_B, traj_id_B=traj_B, episode_return_B=return_B)
  return batch, metrics


def micro_batches(batch: dict[str, np.ndarray], micro_batch: int) -> dict[str, np.ndarray]:
  """[B, ...] -> [B / micro_batch, micro_batch, ...] for the step's scan over micro-batches."""
  num_rows = len(batch["valid_B"])
  if num_rows % micro_batch:
    raise ValueError(f"{num_rows} rows are not a multiple of micro_batch={micro_batch}")
  return {k: v.reshape(num_rows // micro_batch, micro_batch, *v.shape[1:]) for k, v in batch.items()}
