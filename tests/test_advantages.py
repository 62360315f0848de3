"""Advantage estimators against plain-Python re-derivations (loops over groups, trajectories and steps)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from paw_jax.algos import advantages as adv

EPS = 1e-6


def _synthetic() -> adv.Trajectories:
  """Three groups; states repeat across trajectories of a group, and "s1" also appears in another group.

  group 0: 3 trajectories (4, 2, 3 steps); group 1: 2 trajectories (2, 1 steps); group 2: 1 trajectory (2 steps).
  Rows are shuffled so nothing may rely on row order.
  """
  episodes = [  # (group, traj, [(anchor, reward)], terminated)
      (0, 0, [("s0", -0.1), ("s1", 0.0), ("s2", 0.0), ("s3", 10.0)], True),
      (0, 1, [("s0", 0.0), ("s1", -0.1)], False),
      (0, 2, [("s0", 0.0), ("s4", 0.0), ("s1", 10.0)], True),
      (1, 0, [("t0", 0.0), ("s1", 1.0)], True),
      (1, 1, [("t0", -0.5)], True),
      (2, 0, [("u0", 0.0), ("u1", 3.0)], True),
  ]
  rows = []
  for group, traj, steps, terminated in episodes:
    for t, (anchor, reward) in enumerate(steps):
      rows.append((reward, terminated and t == len(steps) - 1, group, traj, t, anchor, 0.3 * t - 0.2 * group + 0.1))
  rows = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
  reward, done, group, traj, step, anchor, value = zip(*rows)
  return adv.Trajectories(
      reward_B=np.array(reward), done_B=np.array(done), group_id_B=np.array(group), traj_id_B=np.array(traj),
      step_B=np.array(step), anchor_B=np.array(anchor, dtype=object), value_B=np.array(value))


def _episodes(traj: adv.Trajectories) -> dict[tuple[int, int], list[int]]:
  """(group, traj) -> row indices in step order."""
  out: dict[tuple[int, int], list[int]] = {}
  for i in range(len(traj.reward_B)):
    out.setdefault((int(traj.group_id_B[i]), int(traj.traj_id_B[i])), []).append(i)
  return {k: sorted(v, key=lambda i: traj.step_B[i]) for k, v in out.items()}


def _normalize(values: list[float], norm_by_std: bool) -> list[float]:
  n = len(values)
  if n == 1:
    return [0.0]
  mean = sum(values) / n
  std = math.sqrt(sum((v - mean)**2 for v in values) / (n - 1))
  return [(v - mean) / (std + EPS) if norm_by_std else v - mean for v in values]


def _ref_episode_adv(traj: adv.Trajectories, norm_by_std: bool, cross_steps: bool) -> np.ndarray:
  episodes = _episodes(traj)
  ret = {k: sum(traj.reward_B[i] for i in rows) for k, rows in episodes.items()}
  out = np.zeros(len(traj.reward_B))
  for g in {k[0] for k in episodes}:
    if cross_steps:
      rows = [i for k, r in episodes.items() if k[0] == g for i in r]
      for i, a in zip(rows, _normalize([ret[(g, int(traj.traj_id_B[i]))] for i in rows], norm_by_std)):
        out[i] = a
    else:
      keys = [k for k in episodes if k[0] == g]
      for k, a in zip(keys, _normalize([ret[k] for k in keys], norm_by_std)):
        out[episodes[k]] = a
  return out


@pytest.mark.parametrize("norm_by_std", [True, False])
@pytest.mark.parametrize("cross_steps", [False, True])
def test_grpo_matches_loops(norm_by_std, cross_steps):
  traj = _synthetic()
  cfg = adv.AdvantageConfig(norm_by_std=norm_by_std, cross_steps=cross_steps)
  out = adv.compute_advantages("grpo", traj, cfg)
  np.testing.assert_allclose(out.advantage_B, _ref_episode_adv(traj, norm_by_std, cross_steps), rtol=1e-5, atol=1e-6)
  assert out.return_B is None
  assert out.advantage_B.dtype == np.float32


def test_grpo_hand_values():
  # Returns 1, 2, 3 in one group: mean 2, unbiased std 1; a lone trajectory in another group gets 0.
  traj = adv.Trajectories(reward_B=np.array([1.0, 0.5, 1.5, 3.0, 7.0]), done_B=np.ones(5, bool),
                          group_id_B=np.array([0, 0, 0, 0, 1]), traj_id_B=np.array([0, 1, 1, 2, 0]),
                          step_B=np.array([0, 0, 1, 0, 0]))
  expected = np.array([-1.0, 0.0, 0.0, 1.0, 0.0]) / (1.0 + EPS)
  np.testing.assert_allclose(adv.grpo(traj, adv.AdvantageConfig()).advantage_B, expected, rtol=1e-6)


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_gigpo_matches_loops(norm_by_std):
  traj = _synthetic()
  gamma, omega = 0.95, 0.7
  cfg = adv.AdvantageConfig(norm_by_std=norm_by_std, step_gamma=gamma, step_weight=omega)
  episodes = _episodes(traj)
  step_return = np.zeros(len(traj.reward_B))
  for rows in episodes.values():
    for t, i in enumerate(rows):  # forward double sum, independent of the estimator's backward recursion
      step_return[i] = sum(gamma**k * traj.reward_B[rows[t + k]] for k in range(len(rows) - t))
  step_groups: dict[tuple[int, str], list[int]] = {}
  for i in range(len(traj.reward_B)):
    step_groups.setdefault((int(traj.group_id_B[i]), traj.anchor_B[i]), []).append(i)
  step_adv = np.zeros(len(traj.reward_B))
  for rows in step_groups.values():
    step_adv[rows] = _normalize([step_return[i] for i in rows], norm_by_std)
  expected = _ref_episode_adv(traj, norm_by_std, cross_steps=False) + omega * step_adv
  np.testing.assert_allclose(adv.gigpo(traj, cfg).advantage_B, expected, rtol=1e-5, atol=1e-6)


def test_gigpo_anchor_groups_stay_within_rollout_group():
  traj = _synthetic()
  cfg = adv.AdvantageConfig()
  gigpo_B = adv.gigpo(traj, cfg).advantage_B
  grpo_B = adv.grpo(traj, cfg).advantage_B
  # Singleton step groups add nothing: group 1's "s1" must not join group 0's three "s1" rows.
  lone = (traj.group_id_B == 1) & (traj.anchor_B == "s1")
  np.testing.assert_array_equal(gigpo_B[lone], grpo_B[lone])
  # Group 0's "s0" rows are a step group of 3, so their step advantage is not 0.
  shared = (traj.group_id_B == 0) & (traj.anchor_B == "s0")
  assert np.all(np.abs(gigpo_B[shared] - grpo_B[shared]) > 1e-3)


def test_gigpo_needs_anchors():
  traj = _synthetic()
  with pytest.raises(ValueError, match="anchor_B"):
    adv.gigpo(adv.Trajectories(traj.reward_B, traj.done_B, traj.group_id_B, traj.traj_id_B, traj.step_B),
              adv.AdvantageConfig())


def test_rloo_matches_loops():
  traj = _synthetic()
  episodes = _episodes(traj)
  ret = {k: sum(traj.reward_B[i] for i in rows) for k, rows in episodes.items()}
  expected = np.zeros(len(traj.reward_B))
  for k, rows in episodes.items():
    others = [r for j, r in ret.items() if j[0] == k[0] and j != k]
    expected[rows] = ret[k] - sum(others) / len(others) if others else 0.0
  np.testing.assert_allclose(adv.rloo(traj, adv.AdvantageConfig()).advantage_B, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("whiten", [False, True])
def test_gae_matches_loops(whiten):
  traj = _synthetic()
  gamma, lam = 0.9, 0.8
  cfg = adv.AdvantageConfig(gae_gamma=gamma, gae_lambda=lam, gae_whiten=whiten)
  expected_adv, expected_ret = np.zeros(len(traj.reward_B)), np.zeros(len(traj.reward_B))
  for rows in _episodes(traj).values():
    deltas = []
    for t, i in enumerate(rows):
      v_next = traj.value_B[rows[t + 1]] if t + 1 < len(rows) and not traj.done_B[i] else 0.0
      deltas.append(traj.reward_B[i] + gamma * v_next - traj.value_B[i])
    for t, i in enumerate(rows):
      expected_adv[i] = sum((gamma * lam)**k * deltas[t + k] for k in range(len(rows) - t))
      expected_ret[i] = expected_adv[i] + traj.value_B[i]
  if whiten:
    expected_adv = (expected_adv - expected_adv.mean()) / np.sqrt(expected_adv.var(ddof=1) + 1e-8)
  out = adv.compute_advantages("ppo", traj, cfg)
  np.testing.assert_allclose(out.advantage_B, expected_adv, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(out.return_B, expected_ret, rtol=1e-5, atol=1e-6)


def test_gae_hand_values():
  # r = (0, 0, 1), V = 0.5 everywhere, γ = λ = 1, terminal at the end: δ = (0, 0, 0.5), A = 0.5, returns = 1.
  # A second, truncated trajectory (done=False) bootstraps from 0 after its last row: δ = 2 − 0.5.
  # A third has `done` on its first row: no bootstrap and no accumulation across it, δ = (1 − 0.5, 2 − 0.5).
  traj = adv.Trajectories(reward_B=[0.0, 0.0, 1.0, 2.0, 1.0, 2.0],
                          done_B=[False, False, True, False, True, False], group_id_B=[0, 0, 0, 0, 0, 0],
                          traj_id_B=[0, 0, 0, 1, 2, 2], step_B=[0, 1, 2, 0, 0, 1], value_B=np.full(6, 0.5))
  out = adv.gae(traj, adv.AdvantageConfig(gae_whiten=False))
  np.testing.assert_allclose(out.advantage_B, [0.5, 0.5, 0.5, 1.5, 0.5, 1.5])
  np.testing.assert_allclose(out.return_B, [1.0, 1.0, 1.0, 2.0, 1.0, 2.0])


def test_bad_input_is_named():
  traj = _synthetic()
  with pytest.raises(ValueError, match="unknown algorithm 'dpo'; known: grpo, gigpo, rloo, ppo"):
    adv.compute_advantages("dpo", traj)
  with pytest.raises(ValueError, match="value_B"):
    adv.gae(adv.Trajectories(traj.reward_B, traj.done_B, traj.group_id_B, traj.traj_id_B, traj.step_B),
            adv.AdvantageConfig())
  with pytest.raises(ValueError, match="done_B has 2 rows"):
    adv.Trajectories(traj.reward_B, traj.done_B[:2], traj.group_id_B, traj.traj_id_B, traj.step_B)
  with pytest.raises(ValueError, match="unique"):
    adv.Trajectories(np.zeros(2), np.zeros(2, bool), np.zeros(2, int), np.zeros(2, int), np.zeros(2, int))


@pytest.mark.parametrize("threshold,clusters,same_as_exact", [(0.9, ["k", "k", "g", "g", "k", "k"], False),
                                                              (0.99, ["k", "k3", "g1", "g2", "k", "k"], True)])
def test_gigpo_similarity_grouping(threshold, clusters, same_as_exact):
  # difflib ratios: kitchen texts 0.981 apart, garden texts 0.975, kitchen vs garden ≈ 0.7.
  kitchen = "You are in the kitchen. You see a mug 1 and a cup {}."
  garden = "You are in the garden. You see a rose {}."
  anchors = [kitchen.format(2), kitchen.format(3), garden.format(1), garden.format(2), kitchen.format(2),
             kitchen.format(2)]
  rows = dict(reward_B=[1.0, 0.0, 2.0, 5.0, 3.0, 1.0], done_B=[True] * 6, group_id_B=[0, 0, 0, 0, 0, 1],
              traj_id_B=[0, 1, 2, 3, 4, 0], step_B=[0] * 6)
  similar = adv.gigpo(adv.Trajectories(**rows, anchor_B=np.array(anchors, dtype=object)),
                      adv.AdvantageConfig(step_similarity=threshold))
  # The same as exact grouping of anchors relabelled by hand (group 1's kitchen row stays out of group 0's).
  relabelled = adv.gigpo(adv.Trajectories(**rows, anchor_B=np.array(clusters, dtype=object)), adv.AdvantageConfig())
  np.testing.assert_array_equal(similar.advantage_B, relabelled.advantage_B)
  exact = adv.gigpo(adv.Trajectories(**rows, anchor_B=np.array(anchors, dtype=object)), adv.AdvantageConfig())
  assert np.array_equal(similar.advantage_B, exact.advantage_B) == same_as_exact
