"""Policy, KL, entropy, value and world-model losses (jnp, inside the jitted step); policy and WM losses by name.

Layout: logp_BxT[b, t] = log π(tokens[b, t] | tokens[b, :t]), aligned with the batch's tokens, masks and old/ref
log-probs; values at positions outside a mask are ignored (they may be anything finite or not).

Micro-batch exactness: every token mean divides by a *global* denominator given by the caller (the number of action
tokens of the whole mini-batch), and the WM term is a per-row weighted sum with host-computed weights, so the sum of
`total_loss` over micro-batches (and of its gradients and metrics) equals the full-batch value. Every metric returned
here is additive over micro-batches in that way: means carry the global denominator, counts are plain sums.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import chex
import jax
import jax.numpy as jnp

LOG_RATIO_CLAMP = 20.0  # verl clamps log-ratios before exp for stability
KL_CLAMP = 10.0  # verl clamps the k3 estimate


@dataclasses.dataclass(frozen=True)
class LossConfig:
  policy_loss: str = "ppo_clip"
  clip_low: float = 0.2  # ratio ≥ 1 − clip_low
  clip_high: float = 0.2  # ratio ≤ 1 + clip_high; > clip_low is DAPO's clip-higher
  kl_coef: float = 0.01  # low_var_kl to the reference policy; 0 skips it (ref_logp_BxT unused)
  entropy_coef: float = 0.0  # entropy bonus; needs entropy_BxT when non-zero
  rho: float = 0.2  # CMAE: tokens with p > rho are masked out


def masked_sum(x: jax.Array, mask: jax.Array, axis: int | None = None) -> jax.Array:
  """Sum of x where mask, ignoring whatever x holds elsewhere (NaN/inf included)."""
  return jnp.sum(jnp.where(mask, x, 0.0), axis=axis)


def ppo_clip(logp_BxT: jax.Array, old_logp_BxT: jax.Array, advantage_B: jax.Array, mask_BxT: jax.Array,
             cfg: LossConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token PPO-clip surrogate max(−A·r, −A·clip(r, 1−ε_low, 1+ε_high)), r = exp(logp − old_logp).

  Returns per-token loss and per-token metrics: clip_frac (1 where the clipped branch is taken, so the token has no
  gradient) and approx_kl (old_logp − logp, verl's ppo_kl).
  """
  # Masked before exp so garbage outside the mask cannot overflow into a NaN gradient.
  log_ratio_BxT = jnp.where(mask_BxT, jnp.clip(logp_BxT - old_logp_BxT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP), 0.0)
  ratio_BxT = jnp.exp(log_ratio_BxT)
  adv_Bx1 = advantage_B[:, None]
  unclipped_BxT = -adv_Bx1 * ratio_BxT
  clipped_BxT = -adv_Bx1 * jnp.clip(ratio_BxT, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
  is_clipped_BxT = clipped_BxT > unclipped_BxT
  loss_BxT = jnp.where(is_clipped_BxT, clipped_BxT, unclipped_BxT)
  return loss_BxT, {"clip_frac": is_clipped_BxT.astype(jnp.float32), "approx_kl": -log_ratio_BxT}


def low_var_kl(logp_BxT: jax.Array, ref_logp_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  """k3 estimator of KL(π‖π_ref) per token: exp(ref − logp) − (ref − logp) − 1, clamped to [−10, 10] as verl."""
  d_BxT = jnp.where(mask_BxT, jnp.clip(ref_logp_BxT - logp_BxT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP), 0.0)
  return jnp.clip(jnp.exp(d_BxT) - d_BxT - 1.0, -KL_CLAMP, KL_CLAMP)


def logprobs_from_logits(logits_xV: jax.Array, tokens_x: jax.Array, temperature: float = 1.0,
                         with_entropy: bool = False) -> tuple[jax.Array, jax.Array | None]:
  """log softmax(logits / T) at `tokens` and, optionally, the full-vocabulary entropy of softmax(logits / T), for
  any leading shape (the trainer's [B, T], the sampler's [B]): one definition, so PPO's ratios start at exactly 1."""
  logits_xV = logits_xV.astype(jnp.float32)
  logp_xV = jax.nn.log_softmax(logits_xV if temperature == 1.0 else logits_xV / temperature, axis=-1)
  logp_x = jnp.take_along_axis(logp_xV, tokens_x[..., None], axis=-1)[..., 0]
  return logp_x, -jnp.sum(jnp.exp(logp_xV) * logp_xV, axis=-1) if with_entropy else None


# Positions per chunk of logits: [rows, 256, V] fp32 is the largest temporary of the log-probs (Qwen2.5's V = 152,064:
# 156 MB per row on a device), small next to a 7B layer's activations yet big enough to keep the LM-head matmul busy.
LOGITS_CHUNK = 256


def chunked_logprobs(logits_fn: Callable[[jax.Array], jax.Array], hidden_BxTxD: jax.Array, tokens_BxT: jax.Array,
                     where_BxT: jax.Array, with_entropy: bool = False,
                     chunk: int = LOGITS_CHUNK) -> tuple[jax.Array, jax.Array | None]:
  """`logprobs_from_logits(logits_fn(hidden_BxTxD), tokens_BxT, with_entropy=...)` at the positions `where_BxT` (0
  elsewhere), without ever holding the [B, T, V] logits. `hidden_BxTxD[b, t]` is the state that predicts
  `tokens_BxT[b, t]`; `logits_fn` maps [B, C, D] states to [B, C, V] logits.

  Each row's selected positions are moved to its front, in order, and their logits made `chunk` positions at a time
  (a scan); a chunk with no selected position in any row is skipped, so prompts cost no logits. The backward
  recomputes a chunk's logits (jax.checkpoint) instead of keeping every chunk's. Rows of at most `chunk` positions
  are one chunk as they are: nothing to skip, and the numbers of the unchunked computation to the bit.
  """
  batch, length = tokens_BxT.shape
  if length <= chunk:
    logp_BxT, entropy_BxT = logprobs_from_logits(logits_fn(hidden_BxTxD), tokens_BxT, with_entropy=with_entropy)
    return jnp.where(where_BxT, logp_BxT, 0.0), jnp.where(where_BxT, entropy_BxT, 0.0) if with_entropy else None
  num_chunks = -(-length // chunk)
  order_BxT = jnp.argsort(~where_BxT, axis=1, stable=True)  # selected positions first

  def chunked(x_BxT):  # [B, T, ...] in `order` -> [num_chunks, B, chunk, ...]
    x_BxT = jnp.take_along_axis(x_BxT, order_BxT.reshape(order_BxT.shape + (1,) * (x_BxT.ndim - 2)), axis=1)
    x_BxT = jnp.pad(x_BxT, [(0, 0), (0, num_chunks * chunk - length)] + [(0, 0)] * (x_BxT.ndim - 2))
    return jnp.moveaxis(x_BxT.reshape(batch, num_chunks, chunk, *x_BxT.shape[2:]), 1, 0)

  def unchunked(x_NxBxC: jax.Array) -> jax.Array:  # the inverse of `chunked`, zeros outside `where`
    x_BxT = jnp.moveaxis(x_NxBxC, 0, 1).reshape(batch, num_chunks * chunk)[:, :length]
    return jnp.where(where_BxT, jnp.take_along_axis(x_BxT, jnp.argsort(order_BxT, axis=1), axis=1), 0.0)

  def logprobs(hidden_BxCxD, tokens_BxC):
    return logprobs_from_logits(logits_fn(hidden_BxCxD), tokens_BxC, with_entropy=with_entropy)

  def skipped(hidden_BxCxD, tokens_BxC):
    zeros_BxC = jnp.zeros(tokens_BxC.shape, jnp.float32)
    return zeros_BxC, zeros_BxC if with_entropy else None

  @functools.partial(jax.checkpoint, prevent_cse=False)  # inside a scan CSE cannot merge the recomputation
  def one_chunk(carry, chunk_inputs):
    hidden_BxCxD, tokens_BxC, where_BxC = chunk_inputs
    return carry, jax.lax.cond(jnp.any(where_BxC), logprobs, skipped, hidden_BxCxD, tokens_BxC)

  _, (logp_NxBxC, entropy_NxBxC) = jax.lax.scan(
      one_chunk, None, (chunked(hidden_BxTxD), chunked(tokens_BxT), chunked(where_BxT)))
  return unchunked(logp_NxBxC), unchunked(entropy_NxBxC) if with_entropy else None


def cmae(logp_BxT: jax.Array, obs_mask_BxT: jax.Array, cfg: LossConfig) -> jax.Array:
  """Clipped MAE per row (docs/PAW.md, Eqs. 7–9): Σ_i m_i (1 − p_i) / |o_{t+1}|, m = stop_grad(1[p ≤ ρ]).

  The denominator counts all observation tokens of the row; a row without any gives 0.
  """
  p_BxT = jnp.exp(jnp.where(obs_mask_BxT, logp_BxT, 0.0))
  keep_BxT = obs_mask_BxT & jax.lax.stop_gradient(p_BxT <= cfg.rho)
  return masked_sum(1.0 - p_BxT, keep_BxT, axis=1) / jnp.maximum(obs_mask_BxT.sum(axis=1), 1)


def ce(logp_BxT: jax.Array, obs_mask_BxT: jax.Array, cfg: LossConfig) -> jax.Array:
  """Cross-entropy per row: mean of −log p over the row's observation tokens (0 for a row without any)."""
  del cfg  # CE has no options
  return masked_sum(-logp_BxT, obs_mask_BxT, axis=1) / jnp.maximum(obs_mask_BxT.sum(axis=1), 1)


def value_loss(value_B: jax.Array, old_value_B: jax.Array, return_B: jax.Array, mask_B: jax.Array, clip: float,
               n_rows: jax.Array | float) -> tuple[jax.Array, dict[str, jax.Array]]:
  """PPO critic loss (turn-level, one value per row): 0.5 · max((v − R)², (v_clip − R)²), mean over `n_rows` rows.

  v_clip = old_v + clip(v − old_v, −clip, clip), as verl. `n_rows` is the global row count (micro-batch exactness).
  """
  chex.assert_equal_shape([value_B, old_value_B, return_B, mask_B])
  v_clip_B = old_value_B + jnp.clip(value_B - old_value_B, -clip, clip)
  err_B, err_clip_B = (value_B - return_B)**2, (v_clip_B - return_B)**2
  denom = jnp.maximum(n_rows, 1)
  loss = masked_sum(0.5 * jnp.maximum(err_B, err_clip_B), mask_B) / denom
  clip_frac = masked_sum((err_clip_B > err_B).astype(jnp.float32), mask_B) / denom
  return loss, {"value_loss": loss, "value_clip_frac": clip_frac}


PolicyLossFn = Callable[[jax.Array, jax.Array, jax.Array, jax.Array, LossConfig],
                        tuple[jax.Array, dict[str, jax.Array]]]
WMLossFn = Callable[[jax.Array, jax.Array, LossConfig], jax.Array]
POLICY_LOSSES: dict[str, PolicyLossFn] = {"ppo_clip": ppo_clip}
WM_LOSSES: dict[str, WMLossFn] = {"cmae": cmae, "ce": ce}


def _lookup(registry: Mapping[str, Callable], name: str, what: str) -> Callable:
  if name not in registry:
    raise ValueError(f"unknown {what} '{name}'; known: {', '.join(registry)}")
  return registry[name]


def total_loss(logp_BxT: jax.Array, batch: Mapping[str, jax.Array], cfg: LossConfig, n_action_tokens: jax.Array | float,
               entropy_BxT: jax.Array | None = None,
               wm_loss: str | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L = L_RL + kl_coef · KL − entropy_coef · H + Σ_rows w_row · ℓ_WM(row), and additive metrics.

  batch: action_mask_BxT, obs_mask_BxT, old_logp_BxT, ref_logp_BxT (read only when kl_coef ≠ 0), advantage_B,
  wm_weight_B (read only with `wm_loss`, a name of WM_LOSSES; None: no WM term, the base algorithm).
  `n_action_tokens`: action tokens of the whole mini-batch, the denominator of every token mean. `entropy_BxT` (from
  `logprobs_from_logits`) is needed when entropy_coef ≠ 0 and is logged whenever given.
  """
  action_mask_BxT = batch["action_mask_BxT"].astype(bool)
  chex.assert_rank(logp_BxT, 2)
  chex.assert_equal_shape([logp_BxT, action_mask_BxT, batch["old_logp_BxT"]])
  chex.assert_shape(batch["advantage_B"], logp_BxT.shape[:1])
  logp_BxT = logp_BxT.astype(jnp.float32)
  denom = jnp.maximum(n_action_tokens, 1)

  def token_mean(x_BxT: jax.Array) -> jax.Array:
    return masked_sum(x_BxT, action_mask_BxT) / denom

  policy_fn = _lookup(POLICY_LOSSES, cfg.policy_loss, "policy loss")
  pg_BxT, pg_metrics = policy_fn(logp_BxT, batch["old_logp_BxT"].astype(jnp.float32),
                                 batch["advantage_B"].astype(jnp.float32), action_mask_BxT, cfg)
  loss = token_mean(pg_BxT)
  metrics = {"policy_loss": loss, **{k: token_mean(v) for k, v in pg_metrics.items()}}
  if cfg.kl_coef:
    chex.assert_equal_shape([logp_BxT, batch["ref_logp_BxT"]])
    kl = token_mean(low_var_kl(logp_BxT, batch["ref_logp_BxT"].astype(jnp.float32), action_mask_BxT))
    loss = loss + cfg.kl_coef * kl
    metrics["kl"] = kl
  if entropy_BxT is not None:
    chex.assert_equal_shape([logp_BxT, entropy_BxT])
    metrics["entropy"] = token_mean(entropy_BxT)
  if cfg.entropy_coef:
    if entropy_BxT is None:
      raise ValueError("total_loss: entropy_coef != 0 needs entropy_BxT")
    loss = loss - cfg.entropy_coef * metrics["entropy"]
  if wm_loss is not None:
    wm, wm_metrics = wm_term(logp_BxT, batch, cfg, wm_loss)
    loss = loss + wm
    metrics.update(wm_metrics)
  metrics["loss"] = loss
  return loss, metrics


def wm_term(logp_BxT: jax.Array, batch: Mapping[str, jax.Array], cfg: LossConfig,
            wm_loss: str) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Σ_rows w_row · ℓ_WM(row), and sums over the rows with w > 0 (selected rows of groups with λ_g > 0)."""
  obs_mask_BxT = batch["obs_mask_BxT"].astype(bool)
  weight_B = batch["wm_weight_B"].astype(jnp.float32)
  chex.assert_equal_shape([logp_BxT, obs_mask_BxT])
  chex.assert_shape(weight_B, logp_BxT.shape[:1])
  row_loss_B = _lookup(WM_LOSSES, wm_loss, "WM loss")(logp_BxT, obs_mask_BxT, cfg)
  weighted = jnp.sum(weight_B * row_loss_B)
  selected_B = weight_B > 0
  sel_obs_BxT = obs_mask_BxT & selected_B[:, None]
  return weighted, {
      "wm/weighted_loss": weighted,
      "wm/loss_sum": masked_sum(row_loss_B, selected_B),  # / wm/rows on the host: mean ℓ of a selected row
      "wm/rows": selected_B.sum(),
      "wm/obs_tokens": sel_obs_BxT.sum(),
      # / wm/obs_tokens on the host: the clipped-token ratio (share of obs tokens with p > ρ)
      "wm/clipped_tokens": (sel_obs_BxT & (jnp.exp(logp_BxT) > cfg.rho)).sum(),
  }
