"""PaW selection, λ_g and per-row weights: hand-computed values, Eq. 11, the loss under micro-batching, the balance of
every optimizer step, and each named variant's WM loss (ECHO's per-token mean, the placebo's shuffle) against numpy."""
from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest

from paw_jax.algos import losses, paw

T = 12
# One row per turn: (group, traj, valid, action tokens, obs tokens, action entropy, episode return).
ROWS = [
    (0, 0, True, 3, 2, 2.0, 10.0),
    (0, 0, True, 2, 3, 1.0, 10.0),
    (0, 0, True, 2, 0, 5.0, 10.0),  # terminal step, empty o_T: not in the pool despite the top entropy
    (0, 1, True, 3, 2, 0.5, 0.0),  # ties with row 5 at the cut: the lower row index wins
    (1, 0, True, 2, 2, 1.5, -0.3),
    (1, 1, True, 4, 1, 0.5, -0.1),
    (2, 0, True, 2, 2, 3.0, 10.0),
    (2, 1, True, 3, 3, 0.2, 10.0),
    (3, 0, True, 2, 2, 2.5, 4.0),
    (3, 1, False, 3, 3, 9.0, 0.0),  # padding: out of the pool and out of group 3's mean return
]
# Pool: rows 0 1 3 4 5 6 7 8 (N = 8); k = ceil(0.75 · 8) = 6 → by entropy 6, 8, 0, 4, 1, then 3 (tie with 5).
SELECTED = {0, 1, 3, 4, 6, 8}
# λ_g = clip(1 − R̄_g / 10): g0 R̄ = (10 + 0) / 2 per trajectory (not per row) → 0.5; g1 R̄ < 0 → 1; g2 → 0; g3 → 0.6.
LAMBDA = {0: 0.5, 1: 1.0, 2: 0.0, 3: 0.6}
# G_wm = {0, 1, 2, 3} (group 2 is selected even though λ = 0); w = λ_g / (4 · |S ∩ g|).
WEIGHTS = [0.5 / 12, 0.5 / 12, 0, 0.5 / 12, 1 / 4, 0, 0, 0, 0.6 / 4, 0]


def _pool(seed: int = 0) -> dict[str, np.ndarray]:
  """Arrays of the update pool: rows laid out [prompt (2) | action | obs | pad]; random obs/action log-probs."""
  rng = np.random.default_rng(seed)
  n = len(ROWS)
  out = {"action_mask_BxT": np.zeros((n, T), bool), "obs_mask_BxT": np.zeros((n, T), bool),
         "token_entropy_BxT": np.full((n, T), 7.0, np.float32)}  # 7.0 outside the action: must be ignored
  for b, (_, _, _, n_act, n_obs, entropy, _) in enumerate(ROWS):
    out["action_mask_BxT"][b, 2:2 + n_act] = True
    out["obs_mask_BxT"][b, 2 + n_act:2 + n_act + n_obs] = True
    out["token_entropy_BxT"][b, 2:2 + n_act] = entropy
  group, traj, valid, _, _, _, ret = map(np.array, zip(*ROWS))
  out.update(group_id_B=group, traj_id_B=traj, valid_B=valid, episode_return_B=ret)
  out["logp_BxT"] = np.log(rng.uniform(0.01, 0.95, (n, T))).astype(np.float32)
  out["sampled_logp_BxT"] = out["logp_BxT"]
  return out


def _weights(pool, cfg=paw.PawConfig(alpha=0.75), step_B=None):
  """paw_weights of the pool; by default every row in one optimizer step (Eq. 11's weights as they are)."""
  keys = ("token_entropy_BxT", "sampled_logp_BxT", "action_mask_BxT", "obs_mask_BxT", "valid_B", "group_id_B",
          "traj_id_B", "episode_return_B")
  step_B = np.zeros(len(ROWS), int) if step_B is None else step_B
  return paw.paw_weights(cfg, 10.0, **{k: pool[k] for k in keys}, step_B=step_B)


def test_hand_built_weights_and_metrics():
  weight_B, metrics = _weights(_pool())
  np.testing.assert_allclose(weight_B, WEIGHTS, rtol=1e-6)
  assert metrics["paw/selected"] == 6 and metrics["paw/pool"] == 8 and metrics["paw/groups_wm"] == 4
  assert metrics["paw/lambda_mean"] == pytest.approx(np.mean(list(LAMBDA.values())))
  assert metrics["paw/action_entropy"] == pytest.approx(np.mean([r[5] for r in ROWS if r[2]]))


def test_non_adaptive_lambda_is_one():
  weight_B, metrics = _weights(_pool(), paw.PawConfig(alpha=0.75, adaptive=False))
  np.testing.assert_allclose(weight_B, [1 / 12, 1 / 12, 0, 1 / 12, 1 / 4, 0, 1 / 4, 0, 1 / 4, 0], rtol=1e-6)
  assert metrics["paw/lambda_mean"] == 1.0


def _eq11(row_loss: np.ndarray) -> float:
  """E_g[λ_g · mean_{selected r in g} ℓ_r] over groups with a selected row (Eq. 11's WM part)."""
  per_group = []
  for g in sorted({ROWS[r][0] for r in SELECTED}):
    members = [r for r in SELECTED if ROWS[r][0] == g]
    per_group.append(LAMBDA[g] * sum(row_loss[r] for r in members) / len(members))
  return sum(per_group) / len(per_group)


def test_weights_reproduce_eq11():
  weight_B, _ = _weights(_pool())
  row_loss = np.random.default_rng(1).uniform(0.0, 1.0, len(ROWS))
  assert float(np.dot(weight_B, row_loss)) == pytest.approx(_eq11(row_loss), rel=1e-6)


def test_loss_with_paw_weights_eq11_and_micro_batches():
  pool = _pool(2)
  weight_B, _ = _weights(pool)
  rng = np.random.default_rng(3)
  n = len(ROWS)
  batch = {"action_mask_BxT": pool["action_mask_BxT"] & pool["valid_B"][:, None], "obs_mask_BxT": pool["obs_mask_BxT"],
           "old_logp_BxT": pool["logp_BxT"] + rng.normal(0, 0.2, (n, T)).astype(np.float32),
           "ref_logp_BxT": pool["logp_BxT"] + rng.normal(0, 0.2, (n, T)).astype(np.float32),
           "advantage_B": rng.normal(0, 1, n).astype(np.float32), "wm_weight_B": weight_B}
  cfg = losses.LossConfig(kl_coef=0.01, rho=0.2)
  n_tokens = batch["action_mask_BxT"].sum()

  @functools.partial(jax.jit, static_argnames="wm_loss")
  def value_and_grad(logp_BxT, part, wm_loss):
    return jax.value_and_grad(lambda lp: losses.total_loss(lp, part, cfg, n_tokens, wm_loss=wm_loss)[0])(logp_BxT)

  def loss_and_grad(rows, wm_loss="cmae"):
    return value_and_grad(pool["logp_BxT"][rows], {k: v[rows] for k, v in batch.items()}, wm_loss)

  full, full_grad = loss_and_grad(np.arange(n))
  base, _ = loss_and_grad(np.arange(n), wm_loss=None)
  # WM part of the loss = Eq. 11 with a numpy CMAE per row.
  cmae = np.zeros(n)
  for b in range(n):
    p = np.exp(pool["logp_BxT"][b][pool["obs_mask_BxT"][b]].astype(np.float64))
    cmae[b] = np.sum((1 - p) * (p <= 0.2)) / max(len(p), 1)
  assert float(full) - float(base) == pytest.approx(_eq11(cmae), rel=1e-5)
  # Three micro-batches with the global denominator sum to the full batch.
  parts = [loss_and_grad(rows) for rows in (np.arange(0, 4), np.arange(4, 8), np.arange(8, n))]
  np.testing.assert_allclose(sum(float(p[0]) for p in parts), full, rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.concatenate([p[1] for p in parts]), full_grad, rtol=0, atol=1e-7)


@pytest.mark.parametrize("mode", ["full", "sampled"])
def test_action_entropy_matches_loops(mode):
  rng = np.random.default_rng(4)
  entropy = rng.uniform(0, 4, (3, 6))
  logp = np.log(rng.uniform(0.05, 1.0, (3, 6)))
  mask = np.array([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0] * 6], bool)
  expected = []
  for b in range(3):
    tokens = [entropy[b, t] if mode == "full" else -math.exp(logp[b, t]) * logp[b, t] for t in range(6) if mask[b, t]]
    expected.append(sum(tokens) / len(tokens) if tokens else 0.0)
  np.testing.assert_allclose(paw.action_entropy(entropy, logp, mask, mode), expected, rtol=1e-12)
  with pytest.raises(ValueError, match="paw.entropy"):
    paw.action_entropy(entropy, logp, mask, "topk")


@pytest.mark.parametrize("alpha,pool_size,k", [(0.75, 4, 3), (0.75, 5, 4), (0.7, 10, 7), (0.75, 1, 1), (0.0, 5, 0),
                                                (1.0, 7, 7), (0.75, 0, 0), (0.1, 3, 1)])
def test_num_selected_is_ceil(alpha, pool_size, k):
  assert paw.num_selected(alpha, pool_size) == k


def test_select_top_alpha_exclusions_and_ties():
  score = np.array([1.0, 3.0, 3.0, 9.0, 3.0, 0.0])
  eligible = np.array([True, True, True, False, True, True])
  # Pool of 5, α = 0.4 → 2 rows: row 3 (highest) is ineligible; rows 1, 2, 4 tie → 1 and 2.
  np.testing.assert_array_equal(paw.select_top_alpha(score, eligible, 0.4), [0, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(paw.select_top_alpha(score, eligible, 0.6), [0, 1, 1, 0, 1, 0])
  with pytest.raises(ValueError, match="finite"):
    paw.select_top_alpha(np.array([np.nan, 1.0]), np.array([True, True]), 0.5)
  with pytest.raises(ValueError, match="alpha"):
    paw.select_top_alpha(score, eligible, 1.5)


def test_group_lambda_clips_and_averages_per_trajectory():
  ret = np.array([-5.0, -5.0, 1.0, 12.0, 12.0, 0.0, 3.0])
  group = np.array([0, 0, 0, 1, 1, 1, 2])
  traj = np.array([0, 0, 1, 0, 0, 1, 0])
  valid = np.array([True, True, True, True, True, True, False])
  # g0: R̄ = (−5 + 1) / 2 = −2 → 1.2 → 1; g1: R̄ = (12 + 0) / 2 = 6 → 0.4; g2 has no valid row.
  assert paw.group_lambda(ret, group, traj, valid, 10.0, adaptive=True) == pytest.approx({0: 1.0, 1: 0.4})
  assert paw.group_lambda(np.array([15.0]), np.array([0]), np.array([0]), np.array([True]), 10.0, True) == {0: 0.0}
  assert paw.group_lambda(ret, group, traj, valid, 10.0, adaptive=False) == {0: 1.0, 1: 1.0}


def _numpy_row_loss(pool, wm_loss: str) -> np.ndarray:
  """ℓ per row: clipped MAE Σ 1[p ≤ 0.2] (1 − p) / |o| or CE mean −log p, over the row's observation tokens."""
  out = np.zeros(len(ROWS))
  for b in range(len(ROWS)):
    logp = pool["logp_BxT"][b][pool["obs_mask_BxT"][b]].astype(np.float64)
    if len(logp):
      p = np.exp(logp)
      out[b] = np.sum((1 - p) * (p <= 0.2)) / len(p) if wm_loss == "cmae" else -logp.mean()
  return out


STEP_B = np.array([0, 1, 0, 1, 1, 0, 0, 1, 1, 0])  # two optimizer steps with different action-token counts


def test_weights_are_scaled_by_the_step_share_of_action_tokens():
  pool = _pool()
  tokens = [r[3] if r[2] else 0 for r in ROWS]  # action tokens of the valid rows
  total = sum(tokens)
  per_step = [sum(t for t, s in zip(tokens, STEP_B) if s == m) for m in (0, 1)]
  assert per_step[0] != per_step[1]
  weight_B, _ = _weights(pool, step_B=STEP_B)
  np.testing.assert_allclose(weight_B, [w * total / per_step[s] for w, s in zip(WEIGHTS, STEP_B)], rtol=1e-6)


@pytest.mark.parametrize("name", ["on", "ce", "lambda1", "echo"])
def test_each_variant_wm_term_matches_numpy_in_every_step(name):
  cfg = paw.PawConfig(**paw.VARIANTS[name])
  pool = _pool(5)
  weight_B, metrics = _weights(pool, cfg, STEP_B)
  ell = _numpy_row_loss(pool, cfg.wm_loss)
  obs_tokens = [r[4] for r in ROWS]
  tokens = [r[3] if r[2] else 0 for r in ROWS]
  pool_rows = [b for b, r in enumerate(ROWS) if r[2] and r[4]]
  for m in (0, 1):
    rows = STEP_B == m
    got, _ = losses.wm_term(pool["logp_BxT"][rows], {"obs_mask_BxT": pool["obs_mask_BxT"][rows],
                                                    "wm_weight_B": weight_B[rows]}, losses.LossConfig(rho=0.2),
                            cfg.wm_loss)
    if name == "echo":  # 0.05 · mean of −log p over every observation token of the step's pool rows
      members = [b for b in pool_rows if STEP_B[b] == m]
      expected = 0.05 * sum(ell[b] * obs_tokens[b] for b in members) / sum(obs_tokens[b] for b in members)
    else:  # the step's rows' part of Eq. 11, times T / T_m
      lam = LAMBDA if cfg.adaptive else dict.fromkeys(LAMBDA, 1.0)
      groups = sorted({ROWS[r][0] for r in SELECTED})
      part = 0.0
      for g in groups:
        members = [r for r in SELECTED if ROWS[r][0] == g]
        part += lam[g] / len(groups) * sum(ell[r] for r in members if STEP_B[r] == m) / len(members)
      expected = part * sum(tokens) / sum(t for t, s in zip(tokens, STEP_B) if s == m)
    assert float(got) == pytest.approx(expected, rel=1e-5)
  assert metrics["paw/selected"] == (len(pool_rows) if name == "echo" else len(SELECTED))


def test_placebo_shuffle_keeps_the_observations_and_moves_them_between_rows():
  observations = [f"state {i}" for i in range(12)] + ["", "  "]  # two rows without a target (terminal steps)
  observations[3] = observations[7]  # a repeated observation
  shuffled = paw.shuffled_observations(observations, np.random.default_rng([0, 5, 1]))
  assert sorted(shuffled) == sorted(observations)
  assert shuffled[-2:] == ["", "  "]  # rows without a target keep none: the WM pool is the same rows
  assert sum(a != b for a, b in zip(shuffled, observations)) >= 6
  assert shuffled == paw.shuffled_observations(observations, np.random.default_rng([0, 5, 1]))  # seeded
  assert shuffled != paw.shuffled_observations(observations, np.random.default_rng([0, 6, 1]))


def test_variants_are_settings_of_one_config():
  for name, changes in paw.VARIANTS.items():
    cfg = paw.PawConfig(**changes)  # every variant is a PawConfig, none a separate code path
    assert cfg.enabled == (name != "off")
  echo = paw.PawConfig(**paw.VARIANTS["echo"])
  assert (echo.alpha, echo.adaptive, echo.wm_loss, echo.normalise, echo.wm_coef) == (1.0, False, "ce", "token", 0.05)
  with pytest.raises(ValueError, match="paw.normalise"):
    _weights(_pool(), paw.PawConfig(normalise="rows"))
