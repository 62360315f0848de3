"""PaW host-side bookkeeping (numpy): action-entropy scores, top-α WM data selection, λ_g, per-row WM weights, the
placebo's shuffled targets, and the named variants (PaW, its ablations, ECHO, the placebo) as settings.

The jitted loss (`losses.total_loss`) adds Σ_rows w_row · ℓ_WM(row) with the weights made here (docs/PAW.md, the
Decision under Eq. 11): w_row = λ_g / (|G_wm| · |S_α ∩ g|) for a selected row of group g, 0 otherwise, so that
Σ_rows w_row ℓ_row = (1/|G_wm|) Σ_{g ∈ G_wm} λ_g · mean_{r ∈ S_α ∩ g} ℓ_r, Eq. 11's E_g[λ_g · L_WM(S_α ∩ g)];
then scaled for the optimizer step (mini-batch) each row trains in, so that every step keeps Eq. 11's RL : WM
balance (`step_balanced`).
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any, Sequence

import numpy as np

ENTROPY_MODES = ("full", "sampled")
NORMALISE_MODES = ("group", "token")
TARGET_MODES = ("true", "shuffled")


@dataclasses.dataclass(frozen=True)
class PawConfig:
  enabled: bool = True  # False: the base algorithm (rows end at the response, no WM term)
  alpha: float = 0.75  # share of the pool P kept for the WM loss; 1 keeps every row with an observation
  adaptive: bool = True  # λ_g = clip(1 − R̄_g / R_max, 0, 1); False: λ_g = 1 (the paper's ablation)
  entropy: str = "full"  # "full": full-vocabulary entropy per token; "sampled": −q log q of the sampled token
  wm_loss: str = "cmae"  # a name of losses.WM_LOSSES; "ce" is the paper's ablation
  # "group": Eq. 11, a mean over groups of each group's mean row loss; "token": a mean over the selected observation
  # tokens of the optimizer step (ECHO), each token weighted by its group's λ_g.
  normalise: str = "group"
  targets: str = "true"  # "shuffled": the placebo, next observations permuted across the update's rows
  wm_coef: float = 1.0  # the WM term's coefficient, in every variant (ECHO: 0.05)


# The named variants (`paw=NAME` in configs/): what each changes from full PaW, the defaults above.
VARIANTS: dict[str, dict[str, Any]] = {
    "on": {},  # full PaW
    "off": {"enabled": False},  # the base algorithm
    "ce": {"wm_loss": "ce"},  # ablation: cross-entropy instead of clipped MAE
    "lambda1": {"adaptive": False},  # ablation: λ_g = 1, no reward-adaptive weighting
    # ECHO (arXiv 2605.24517): CE on every observation token, a fixed coefficient, a mean over observation tokens.
    "echo": {"alpha": 1.0, "adaptive": False, "wm_loss": "ce", "normalise": "token", "wm_coef": 0.05},
    "placebo": {"targets": "shuffled"},  # full PaW on next observations shuffled across rows (actions unchanged)
}


def action_entropy(token_entropy_BxT: np.ndarray, sampled_logp_BxT: np.ndarray, action_mask_BxT: np.ndarray,
                   mode: str) -> np.ndarray:
  """H(a_t | h_t) per row (Eq. 4): mean over the action tokens of the per-token entropy; 0 without action tokens.

  mode "full" reads token_entropy_BxT (the sampler's full-vocabulary entropy); "sampled" uses −q log q with
  q = exp(sampled_logp_BxT), the paper's printed formula.
  """
  if mode == "full":
    h_BxT = token_entropy_BxT
  elif mode == "sampled":
    h_BxT = -np.exp(sampled_logp_BxT) * sampled_logp_BxT
  else:
    raise ValueError(f"paw.entropy must be one of {ENTROPY_MODES}, got '{mode}'")
  mask_BxT = action_mask_BxT.astype(bool)
  return np.where(mask_BxT, h_BxT, 0.0).sum(axis=1) / np.maximum(mask_BxT.sum(axis=1), 1)


def num_selected(alpha: float, pool_size: int) -> int:
  """k = ceil(α · N): never fewer than an α share, and at least one row from a non-empty pool when α > 0.

  α·N is rounded to 9 decimals first so float noise (0.7 · 10 = 7.000000000000001) does not add a row.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f"paw.alpha must be in [0, 1], got {alpha}")
  return math.ceil(round(alpha * pool_size, 9))


def select_top_alpha(score_B: np.ndarray, eligible_B: np.ndarray, alpha: float) -> np.ndarray:
  """S_α: the num_selected(α, N) eligible rows with the highest score; ties go to the lower row index."""
  pool = np.flatnonzero(eligible_B)
  if not np.all(np.isfinite(score_B[pool])):
    raise ValueError("select_top_alpha: eligible rows need finite scores")
  ranked = pool[np.argsort(-score_B[pool], kind="stable")]  # stable: equal scores keep row order
  selected_B = np.zeros(len(score_B), bool)
  selected_B[ranked[:num_selected(alpha, len(pool))]] = True
  return selected_B


def group_lambda(episode_return_B: np.ndarray, group_id_B: np.ndarray, traj_id_B: np.ndarray, valid_B: np.ndarray,
                 r_max: float, adaptive: bool) -> dict:
  """{group id: λ_g} over groups with a valid row; λ_g = clip(1 − R̄_g / R_max, 0, 1), R̄_g its mean episode return.

  R̄_g averages one return per trajectory (every row of a trajectory carries its episode's return), not per row.
  """
  if r_max <= 0:
    raise ValueError(f"r_max must be > 0, got {r_max}")
  traj_return = {(g, t): r for g, t, r, v in zip(group_id_B.tolist(), traj_id_B.tolist(), episode_return_B.tolist(),
                                                 valid_B.tolist()) if v}
  group_returns = collections.defaultdict(list)
  for (g, _), r in traj_return.items():
    group_returns[g].append(r)
  return {g: float(np.clip(1.0 - np.mean(rs) / r_max, 0.0, 1.0)) if adaptive else 1.0
          for g, rs in group_returns.items()}


def row_weights(selected_B: np.ndarray, group_id_B: np.ndarray, lambdas: dict) -> np.ndarray:
  """w_row = λ_g / (|G_wm| · |S_α ∩ g|) for selected rows, 0 otherwise."""
  group_S = group_id_B[selected_B].tolist()
  count = collections.Counter(group_S)
  weight_B = np.zeros(len(selected_B), np.float64)
  weight_B[selected_B] = [lambdas[g] / (len(count) * count[g]) for g in group_S]
  return weight_B


def step_balanced(weight_B: np.ndarray, action_tokens_B: np.ndarray, step_B: np.ndarray) -> np.ndarray:
  """Eq. 11's weights of the update, scaled for the optimizer step `step_B` each row trains in: × T / T_m.

  Each mini-batch m is its own optimizer step, and its L_RL is a token mean over its own T_m action tokens, i.e.
  T / T_m times its rows' part of the update's L_RL (T: the update's action tokens). Scaling its rows' WM weights by
  the same T / T_m makes step m's loss exactly T / T_m × (its rows' part of Eq. 11's L): the RL : WM balance of the
  update holds in every step, a partial last mini-batch (fewer rows, fewer tokens) included, and
  Σ_m (T_m / T) · L_m = L. (Scaling every row by the mini-batch count instead over-weights full mini-batches and
  under-weights a partial last one by its share of rows.)
  """
  tokens_M = np.bincount(step_B, weights=action_tokens_B)
  return weight_B * (action_tokens_B.sum() / np.maximum(tokens_M[step_B], 1))


def token_weights(selected_B: np.ndarray, obs_tokens_B: np.ndarray, lambda_B: np.ndarray,
                  step_B: np.ndarray) -> np.ndarray:
  """w_row = λ_g · |o_row| / Σ_{selected rows r of its step} |o_r|: with the row-mean ℓ of `losses.WM_LOSSES`,
  Σ_rows w_row ℓ_row is the mean over the step's selected observation tokens of λ_g · ℓ_token (ECHO's normalisation;
  a per-step mean, like the step's token-mean L_RL)."""
  tokens_B = np.where(selected_B, obs_tokens_B, 0).astype(np.float64)
  tokens_M = np.bincount(step_B, weights=tokens_B)
  return lambda_B * tokens_B / np.maximum(tokens_M[step_B], 1)


def shuffled_observations(observations: Sequence[str], rng: np.random.Generator) -> list[str]:
  """The placebo's targets: the non-empty observations permuted among their rows (the multiset kept, which row gets
  which changed); rows without one (a terminal step's empty o_T) keep none, so the WM pool stays the same rows."""
  out = list(observations)
  rows = [i for i, o in enumerate(out) if o.strip()]
  for row, source in zip(rows, rng.permutation(rows)):
    out[row] = observations[source]
  return out


def paw_weights(cfg: PawConfig, r_max: float, *, token_entropy_BxT: np.ndarray, sampled_logp_BxT: np.ndarray,
                action_mask_BxT: np.ndarray, obs_mask_BxT: np.ndarray, valid_B: np.ndarray, group_id_B: np.ndarray,
                traj_id_B: np.ndarray, episode_return_B: np.ndarray,
                step_B: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
  """Per-row WM weights wm_weight_B of one update pool (float32), and metrics.

  Pool P: valid rows that have observation tokens (a terminal step with an empty o_T has no WM target).
  `step_B`: the optimizer step (mini-batch index) each row trains in; the weights are balanced per step.
  """
  valid_B = valid_B.astype(bool)
  score_B = action_entropy(token_entropy_BxT, sampled_logp_BxT, action_mask_BxT, cfg.entropy)
  obs_tokens_B = obs_mask_BxT.astype(bool).sum(axis=1)
  eligible_B = valid_B & (obs_tokens_B > 0)
  selected_B = select_top_alpha(score_B, eligible_B, cfg.alpha)
  lambdas = group_lambda(episode_return_B, group_id_B, traj_id_B, valid_B, r_max, cfg.adaptive)
  if cfg.normalise == "group":
    action_tokens_B = np.where(valid_B, action_mask_BxT.astype(bool).sum(axis=1), 0)
    weight_B = step_balanced(row_weights(selected_B, group_id_B, lambdas), action_tokens_B, step_B)
  elif cfg.normalise == "token":
    lambda_B = np.array([lambdas[g] if s else 0.0 for g, s in zip(group_id_B.tolist(), selected_B)], np.float64)
    weight_B = token_weights(selected_B, obs_tokens_B, lambda_B, step_B)
  else:
    raise ValueError(f"paw.normalise must be one of {NORMALISE_MODES}, got '{cfg.normalise}'")
  metrics = {
      "paw/lambda_mean": float(np.mean(list(lambdas.values()))) if lambdas else 0.0,
      "paw/pool": float(eligible_B.sum()),
      "paw/selected": float(selected_B.sum()),
      "paw/groups_wm": float(len(set(group_id_B[selected_B].tolist()))),
      "paw/action_entropy": float(score_B[valid_B].mean()) if valid_B.any() else 0.0,
  }
  return (cfg.wm_coef * weight_B).astype(np.float32), metrics
