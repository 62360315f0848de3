"""Losses against per-token numpy loops: values and gradients (jax.grad vs analytic derivatives)."""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from paw_jax.algos import losses

B, T = 4, 9


def _batch(seed: int = 0) -> dict[str, np.ndarray]:
  """Random rows laid out [prompt | action | obs | pad] with distinct lengths; row 3 has no obs tokens."""
  rng = np.random.default_rng(seed)
  spans = [(2, 4, 2), (1, 5, 3), (3, 2, 4), (2, 3, 0)]  # (prompt, action, obs) lengths
  action, obs = np.zeros((B, T), bool), np.zeros((B, T), bool)
  for b, (p, a, o) in enumerate(spans):
    action[b, p:p + a] = True
    obs[b, p + a:p + a + o] = True
  old = rng.uniform(-3.0, -0.3, (B, T)).astype(np.float32)
  # Log-ratios spread over [log 0.5, log 1.6] so both PPO branches occur; none on a clip boundary.
  log_ratio = np.log(rng.choice([0.5, 0.7, 0.9, 1.05, 1.1, 1.25, 1.6], (B, T))).astype(np.float32)
  return {
      "logp_BxT": old + log_ratio,
      "old_logp_BxT": old,
      "ref_logp_BxT": old + rng.normal(0.0, 0.5, (B, T)).astype(np.float32),
      "action_mask_BxT": action,
      "obs_mask_BxT": obs,
      "advantage_B": np.array([1.5, -0.8, 0.6, -2.0], np.float32),
      "wm_weight_B": np.array([0.25, 0.0, 0.5, 0.125], np.float32),
      "entropy_BxT": rng.uniform(0.0, 3.0, (B, T)).astype(np.float32),
  }


@functools.partial(jax.jit, static_argnames=("cfg", "wm_loss"))
def _loss_and_grad(logp_BxT, batch, cfg, n_action_tokens, entropy_BxT=None, wm_loss="cmae"):
  """((loss, metrics), d loss / d logp) of `total_loss`, jitted once per shape and config."""
  return jax.value_and_grad(losses.total_loss, has_aux=True)(logp_BxT, batch, cfg, n_action_tokens, entropy_BxT,
                                                            wm_loss)


def _ppo_ref(batch, clip_low, clip_high):
  """Loop over tokens: token-mean loss, its gradient w.r.t. logp, clip fraction, approx KL."""
  n = batch["action_mask_BxT"].sum()
  loss, clipped, kl, grad = 0.0, 0.0, 0.0, np.zeros((B, T))
  for b in range(B):
    a = float(batch["advantage_B"][b])
    for t in range(T):
      if not batch["action_mask_BxT"][b, t]:
        continue
      log_r = float(batch["logp_BxT"][b, t]) - float(batch["old_logp_BxT"][b, t])
      r = math.exp(log_r)
      unclipped, clip_branch = -a * r, -a * min(max(r, 1 - clip_low), 1 + clip_high)
      is_clipped = clip_branch > unclipped
      loss += clip_branch if is_clipped else unclipped
      clipped += is_clipped
      kl -= log_r
      grad[b, t] = 0.0 if is_clipped else -a * r / n  # d(−A·exp(logp − old))/dlogp
  return loss / n, grad, clipped / n, kl / n


def _policy_only(**kw) -> losses.LossConfig:
  return losses.LossConfig(kl_coef=0.0, entropy_coef=0.0, **kw)


@pytest.mark.parametrize("clip_high", [0.2, 0.28])
def test_ppo_clip_value_and_grad(clip_high):
  batch = _batch()
  cfg = _policy_only(clip_high=clip_high)
  n = batch["action_mask_BxT"].sum()
  (loss, metrics), grad = _loss_and_grad(batch["logp_BxT"], batch, cfg, n, wm_loss=None)
  ref_loss, ref_grad, ref_clip, ref_kl = _ppo_ref(batch, 0.2, clip_high)
  assert 0.1 < ref_clip < 0.9  # both branches are exercised
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics["clip_frac"], ref_clip, rtol=1e-6)
  np.testing.assert_allclose(metrics["approx_kl"], ref_kl, rtol=1e-5, atol=1e-7)
  clipped_tokens = batch["action_mask_BxT"] & (ref_grad == 0)
  assert np.all(np.asarray(grad)[clipped_tokens] == 0.0)


def test_clip_higher_changes_only_the_upper_bound():
  # Ratio 1.25 with A > 0: clipped at ε_high = 0.2, not at ε_high = 0.28.
  mask = jnp.ones((1, 1), bool)
  for clip_high, expected_clip in [(0.2, 1.0), (0.28, 0.0)]:
    _, m = losses.ppo_clip(jnp.log(jnp.array([[1.25]])), jnp.zeros((1, 1)), jnp.ones(1), mask,
                           losses.LossConfig(clip_high=clip_high))
    assert float(m["clip_frac"][0, 0]) == expected_clip


def test_garbage_outside_masks_changes_nothing():
  batch = _batch()
  dirty = dict(batch)
  outside = ~(batch["action_mask_BxT"] | batch["obs_mask_BxT"])
  for key, fill in [("logp_BxT", -np.inf), ("old_logp_BxT", np.nan), ("ref_logp_BxT", np.inf),
                    ("entropy_BxT", np.nan)]:
    dirty[key] = np.where(outside, fill, batch[key]).astype(np.float32)
  cfg = losses.LossConfig(kl_coef=0.1, entropy_coef=0.01)

  def run(b):
    (loss, _), grad = _loss_and_grad(b["logp_BxT"], b, cfg, b["action_mask_BxT"].sum(), b["entropy_BxT"])
    return loss, grad

  (clean, clean_grad), (loss, grad) = run(batch), run(dirty)
  assert np.isfinite(loss) and np.all(np.isfinite(grad))
  np.testing.assert_array_equal(loss, clean)
  np.testing.assert_array_equal(grad, clean_grad)


def test_low_var_kl_value_and_grad():
  logp = np.array([[-1.0, -2.0, -0.5, -20.0]], np.float32)
  ref = np.array([[-1.5, -1.0, -0.5, -5.0]], np.float32)  # last token: d = 15, k3 ≈ 3.3e6 → clamped to 10
  mask = np.array([[True, True, True, True]])
  fn = lambda lp: jnp.sum(losses.low_var_kl(lp, jnp.asarray(ref), jnp.asarray(mask)))
  value, grad = jax.jit(jax.value_and_grad(fn))(jnp.asarray(logp))
  d = (ref - logp).astype(np.float64)[0]
  k3 = [min(math.exp(x) - x - 1, 10.0) for x in d]
  np.testing.assert_allclose(value, sum(k3), rtol=1e-6)
  np.testing.assert_allclose(grad[0], [1 - math.exp(x) if x < 10 else 0.0 for x in d], rtol=1e-5)
  assert k3[2] == 0.0 and k3[3] == 10.0


def test_entropy_from_logits_value_and_grad():
  logits = np.random.default_rng(1).normal(0, 2, (2, 3, 5)).astype(np.float32)
  w = np.random.default_rng(2).normal(size=(2, 3)).astype(np.float32)
  entropy = lambda z: losses.logprobs_from_logits(z, jnp.zeros((2, 3), jnp.int32), with_entropy=True)[1]  # noqa: E731
  value, grad = jax.jit(jax.value_and_grad(lambda z: jnp.sum(w * entropy(z))))(logits)
  ref_value, ref_grad = 0.0, np.zeros_like(logits, np.float64)
  for b in range(2):
    for t in range(3):
      z = logits[b, t].astype(np.float64)
      p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
      h = -sum(pi * math.log(pi) for pi in p)
      ref_value += w[b, t] * h
      ref_grad[b, t] = w[b, t] * (-p * (np.log(p) + h))  # dH/dz_j = −p_j (log p_j + H)
  np.testing.assert_allclose(value, ref_value, rtol=1e-5)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)


def _full_logprobs(hidden_BxTxD, head_DxV, tokens_BxT, where_BxT):
  """The unchunked definition: every position's logits, one log-softmax, then masked."""
  logp_BxT, entropy_BxT = losses.logprobs_from_logits(hidden_BxTxD @ head_DxV, tokens_BxT, with_entropy=True)
  return jnp.where(where_BxT, logp_BxT, 0.0), jnp.where(where_BxT, entropy_BxT, 0.0)


@pytest.mark.parametrize("chunk", [4, 7, 64])
def test_chunked_logprobs_equal_full_logits_value_and_grad(chunk):
  """Rows with their selected positions in different places (one row none, one all): several chunks, a last partial
  one and skipped ones; values and gradients (hidden states and LM head) equal the full [B, T, V] computation."""
  rng = np.random.default_rng(0)
  b, t, d, v = 4, 29, 16, 50
  hidden_BxTxD = rng.normal(size=(b, t, d)).astype(np.float32)
  head_DxV = rng.normal(0, 0.5, (d, v)).astype(np.float32)
  tokens_BxT = rng.integers(0, v, (b, t)).astype(np.int32)
  where_BxT = np.zeros((b, t), bool)
  where_BxT[0, 3:9] = where_BxT[0, 15:19] = True
  where_BxT[2] = True
  where_BxT[3] = rng.random(t) < 0.4
  weight_BxT, entropy_weight_BxT = rng.normal(size=(2, b, t)).astype(np.float32)

  def chunked(hidden, head):
    return losses.chunked_logprobs(lambda h_BxCxD: h_BxCxD @ head, hidden, tokens_BxT, where_BxT, True, chunk)

  def full(hidden, head):
    return _full_logprobs(hidden, head, tokens_BxT, where_BxT)

  def value_and_grad(fn):
    def scalar(hidden, head):
      logp_BxT, entropy_BxT = fn(hidden, head)
      return jnp.sum(weight_BxT * logp_BxT + entropy_weight_BxT * entropy_BxT)
    return jax.jit(fn)(hidden_BxTxD, head_DxV), jax.jit(jax.grad(scalar, argnums=(0, 1)))(hidden_BxTxD, head_DxV)

  (values, grads), (ref_values, ref_grads) = value_and_grad(chunked), value_and_grad(full)
  for value, ref in zip(values + grads, ref_values + ref_grads, strict=True):  # 1e-6 of each array's scale: the
    # chunks sum the head's gradient in another order, which moves an fp32 sum of ~100 terms by a few ulps
    np.testing.assert_allclose(value, ref, rtol=1e-6, atol=1e-6 * max(1.0, np.abs(ref).max()))
  assert not np.asarray(values[0])[~where_BxT].any() and not np.asarray(grads[0])[1].any()  # row 1: nothing read
  # jitted like `values`: eager op-by-op dispatch may round differently on some CPUs
  no_entropy = jax.jit(lambda hidden, head: losses.chunked_logprobs(lambda h: h @ head, hidden, tokens_BxT, where_BxT,
                                                                    False, chunk))(hidden_BxTxD, head_DxV)
  assert no_entropy[1] is None and np.array_equal(no_entropy[0], values[0])


def test_cmae_value_grad_boundary_and_denominator():
  # Row 0: four obs tokens, p = (ρ exactly, 0.05, 0.6, 0.9) → only the first two are in; denominator 4.
  # Row 1: no obs tokens → 0 and no NaN. Position 4 of row 0 is not an obs token (and holds -inf).
  logp_at_rho = np.float32(-1.6)
  rho = float(jnp.exp(jnp.float32(logp_at_rho)))  # the float32 p the loss will see for that token
  logp = np.array([[logp_at_rho, math.log(0.05), math.log(0.6), math.log(0.9), -np.inf],
                   [-1.0, -2.0, -3.0, -4.0, -5.0]], np.float32)
  obs = np.array([[True, True, True, True, False], [False] * 5])
  cfg = losses.LossConfig(rho=rho)
  value, grad = jax.jit(jax.value_and_grad(lambda lp: losses.cmae(lp, jnp.asarray(obs), cfg).sum()))(logp)
  row = losses.cmae(jnp.asarray(logp), jnp.asarray(obs), cfg)
  p = np.exp(logp[0, :4].astype(np.float64))
  p[0] = rho
  np.testing.assert_allclose(row, [((1 - p[0]) + (1 - p[1])) / 4, 0.0], rtol=1e-6)
  np.testing.assert_allclose(value, row.sum(), rtol=1e-6)
  # d(1 − exp(logp))/dlogp = −p for masked-in tokens; masked-out tokens (p > ρ) and non-obs positions get 0.
  np.testing.assert_allclose(grad, [[-p[0] / 4, -p[1] / 4, 0, 0, 0], [0] * 5], rtol=1e-5, atol=1e-8)
  # Just below p the boundary token drops out.
  below = losses.LossConfig(rho=float(np.nextafter(np.float32(rho), np.float32(0))))
  np.testing.assert_allclose(losses.cmae(jnp.asarray(logp), jnp.asarray(obs), below)[0], (1 - p[1]) / 4, rtol=1e-6)


def test_ce_value_and_grad():
  logp = np.array([[-0.5, -2.0, -1.0, -np.inf], [-1.0, -2.0, -3.0, -4.0]], np.float32)
  obs = np.array([[True, True, True, False], [False] * 4])
  value, grad = jax.jit(jax.value_and_grad(lambda lp: losses.ce(lp, jnp.asarray(obs), losses.LossConfig()).sum()))(
      logp)
  np.testing.assert_allclose(value, (0.5 + 2.0 + 1.0) / 3, rtol=1e-6)
  np.testing.assert_allclose(grad, [[-1 / 3, -1 / 3, -1 / 3, 0], [0] * 4], rtol=1e-6)


def _ref_total(batch, cfg: losses.LossConfig, wm_loss: str) -> float:
  """Numpy composition: PPO token mean + kl_coef · k3 mean − entropy_coef · H mean + Σ w · ℓ_WM."""
  ppo, _, _, _ = _ppo_ref(batch, cfg.clip_low, cfg.clip_high)
  act = batch["action_mask_BxT"]
  d = (batch["ref_logp_BxT"] - batch["logp_BxT"]).astype(np.float64)[act]
  kl = np.clip(np.exp(d) - d - 1, -10, 10).mean()
  wm = 0.0
  for b in range(B):
    lp = batch["logp_BxT"][b][batch["obs_mask_BxT"][b]].astype(np.float64)
    if len(lp):
      p = np.exp(lp)
      wm += batch["wm_weight_B"][b] * (np.sum((1 - p) * (p <= cfg.rho)) / len(lp) if wm_loss == "cmae"
                                       else -lp.mean())
  return ppo + cfg.kl_coef * kl - cfg.entropy_coef * batch["entropy_BxT"][act].mean() + wm


@pytest.mark.parametrize("wm_loss", ["cmae", "ce"])
def test_total_loss_composition(wm_loss):
  batch = _batch(3)
  cfg = losses.LossConfig(kl_coef=0.05, entropy_coef=0.01, rho=0.3)
  (loss, metrics), _ = _loss_and_grad(batch["logp_BxT"], batch, cfg, batch["action_mask_BxT"].sum(),
                                      batch["entropy_BxT"], wm_loss)
  np.testing.assert_allclose(loss, _ref_total(batch, cfg, wm_loss), rtol=1e-5)
  selected = batch["wm_weight_B"] > 0
  obs_sel = batch["obs_mask_BxT"] & selected[:, None]
  assert int(metrics["wm/rows"]) == selected.sum() and int(metrics["wm/obs_tokens"]) == obs_sel.sum()
  assert int(metrics["wm/clipped_tokens"]) == (obs_sel & (np.exp(batch["logp_BxT"]) > 0.3)).sum()


def test_micro_batches_sum_to_full_batch():
  batch = _batch(4)
  cfg = losses.LossConfig(kl_coef=0.05, entropy_coef=0.01, clip_high=0.28)
  n = batch["action_mask_BxT"].sum()

  def loss_and_grad(rows):
    part = {k: v[rows] for k, v in batch.items()}
    (loss, metrics), grad = _loss_and_grad(part["logp_BxT"], part, cfg, n, part["entropy_BxT"])
    return loss, metrics, np.asarray(grad)

  full_loss, full_metrics, full_grad = loss_and_grad(np.arange(B))
  parts = [loss_and_grad(rows) for rows in (np.array([0, 1]), np.array([2, 3]))]
  np.testing.assert_allclose(sum(p[0] for p in parts), full_loss, rtol=0, atol=1e-6)
  np.testing.assert_allclose(np.concatenate([p[2] for p in parts]), full_grad, rtol=0, atol=1e-7)
  for key, value in full_metrics.items():
    np.testing.assert_allclose(sum(p[1][key] for p in parts), value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_zero_wm_weights_are_bitwise_the_base_loss():
  batch = dict(_batch(5), wm_weight_B=np.zeros(B, np.float32))
  n = batch["action_mask_BxT"].sum()

  def run(wm_loss):
    (loss, _), grad = _loss_and_grad(batch["logp_BxT"], batch, losses.LossConfig(kl_coef=0.01), n, wm_loss=wm_loss)
    return loss, grad

  (base, base_grad), (paw, paw_grad) = run(None), run("cmae")
  assert np.asarray(base).tobytes() == np.asarray(paw).tobytes()
  assert np.asarray(base_grad).tobytes() == np.asarray(paw_grad).tobytes()


def test_value_loss_value_and_grad():
  v = np.array([1.0, 0.0, 2.5, -1.0], np.float32)
  old = np.array([0.5, 0.5, 2.0, 3.0], np.float32)
  ret = np.array([2.0, 0.2, 2.2, 0.0], np.float32)
  mask = np.array([True, True, True, False])
  clip, n = 0.2, 5
  (loss, metrics), grad = jax.jit(jax.value_and_grad(losses.value_loss, has_aux=True), static_argnums=4)(
      v, old, ret, mask, clip, n)
  ref, ref_grad, ref_clip = 0.0, np.zeros(4), 0.0
  for i in range(3):
    v_clip = old[i] + min(max(v[i] - old[i], -clip), clip)
    e, e_clip = (v[i] - ret[i])**2, (v_clip - ret[i])**2
    ref += 0.5 * max(e, e_clip) / n
    ref_clip += (e_clip > e) / n
    # The clipped branch has a gradient only while v − old is inside the clip range.
    ref_grad[i] = (v[i] - ret[i]) / n if e >= e_clip else (v_clip - ret[i]) * (abs(v[i] - old[i]) < clip) / n
  np.testing.assert_allclose(loss, ref, rtol=1e-6)
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(metrics["value_clip_frac"], ref_clip, rtol=1e-6)
  assert 0 < ref_clip < 3 / n


def test_unknown_loss_names_are_named():
  batch = _batch()
  with pytest.raises(ValueError, match="unknown policy loss 'ppo'"):
    losses.total_loss(jnp.asarray(batch["logp_BxT"]), batch, losses.LossConfig(policy_loss="ppo"), 10)
  with pytest.raises(ValueError, match="unknown WM loss 'mse'"):
    losses.total_loss(jnp.asarray(batch["logp_BxT"]), batch, losses.LossConfig(), 10, wm_loss="mse")
