"""Bootstrap intervals and the normalised AUC against numpy re-derivations (loops, exact enumeration, np.trapezoid)."""
import itertools

import numpy as np
import pytest

from paw_jax import stats


def test_bootstrap_mean_matches_a_loop_over_the_same_draws():
  values = np.array([0.2, 0.5, 0.45, 0.9])
  got = stats.bootstrap_mean(values, seed=3, num_resamples=500, level=0.9)
  rng = np.random.default_rng(3)
  index = rng.integers(0, 4, (500, 4))
  means = sorted(sum(values[j] for j in row) / 4 for row in index)
  # numpy's default percentile: linear interpolation between order statistics at position q * (R - 1)
  def percentile(q):
    position = q * (len(means) - 1)
    low = int(np.floor(position))
    return means[low] + (position - low) * (means[min(low + 1, len(means) - 1)] - means[low])
  assert got.estimate == pytest.approx(values.mean())
  assert got.low == pytest.approx(percentile(0.05))
  assert got.high == pytest.approx(percentile(0.95))


def test_bootstrap_mean_of_two_values_approaches_the_exact_distribution():
  # resampled means of [0, 1]: 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4, so the 2.5% and 97.5% points are 0 and 1
  got = stats.bootstrap_mean(np.array([0.0, 1.0]), num_resamples=20_000)
  assert (got.low, got.high) == (0.0, 1.0)
  # the exact distribution over all 3^3 equally likely resamples of three values
  values = np.array([0.1, 0.4, 0.7])
  exact = np.sort([values[list(i)].mean() for i in itertools.product(range(3), repeat=3)])
  got = stats.bootstrap_mean(values, num_resamples=200_000, level=0.5)
  assert got.low == pytest.approx(np.percentile(exact, 25), abs=0.02)
  assert got.high == pytest.approx(np.percentile(exact, 75), abs=0.02)


def test_paired_difference_is_the_bootstrap_of_the_seedwise_differences():
  a, b = np.array([0.6, 0.8, 0.7]), np.array([0.5, 0.55, 0.72])
  assert stats.bootstrap_difference(a, b, paired=True, seed=1) == stats.bootstrap_mean(a - b, seed=1)


def test_unpaired_difference_matches_a_loop_over_the_same_draws():
  a, b = np.array([0.6, 0.8, 0.7]), np.array([0.1, 0.3])
  got = stats.bootstrap_difference(a, b, paired=False, seed=2, num_resamples=300)
  rng = np.random.default_rng(2)
  index_a, index_b = rng.integers(0, 3, (300, 3)), rng.integers(0, 2, (300, 2))
  differences = [a[i].mean() - b[j].mean() for i, j in zip(index_a, index_b)]
  assert got.estimate == pytest.approx(0.7 - 0.2)
  assert (got.low, got.high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])))
  assert got.excludes_zero  # every resampled a-mean is >= 0.6, every b-mean <= 0.3


def test_excludes_zero_only_when_the_interval_does():
  assert not stats.Interval(0.1, -0.05, 0.2).excludes_zero
  assert stats.Interval(-0.1, -0.2, -0.01).excludes_zero
  assert stats.bootstrap_difference(np.array([0.5, 0.5]), np.array([0.5, 0.5]), paired=True).excludes_zero is False


def test_paired_difference_cell_tests_only_from_three_seeds():
  a, b = np.array([0.6, 0.8, 0.7]), np.array([0.5, 0.55, 0.72])
  d = stats.bootstrap_difference(a, b, paired=True)
  assert stats.paired_difference_cell(a, b) == f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] n.s."
  assert stats.paired_difference_cell(a + 1, b).endswith("**significant**")  # every seed's difference is > 0
  assert stats.paired_difference_cell(a[:2], b[:2]) == "+0.175 (2 seeds: no test)"
  assert stats.paired_difference_cell(a[:1], b[:1]) == "+0.100 (1 seed: no test)"


def test_normalized_auc_is_the_trapezoid_mean_level():
  steps, values = np.array([0, 5, 10, 20, 40]), np.array([0.1, 0.3, 0.2, 0.6, 0.8])
  assert stats.normalized_auc(steps, values) == pytest.approx(np.trapezoid(values, steps) / 40)
  assert stats.normalized_auc(np.array([0, 10]), np.array([0.5, 0.5])) == pytest.approx(0.5)


@pytest.mark.parametrize("call", [
    lambda: stats.bootstrap_mean(np.array([])),
    lambda: stats.bootstrap_mean(np.array([0.1, np.nan])),
    lambda: stats.bootstrap_difference(np.array([0.1, 0.2]), np.array([0.1]), paired=True),
    lambda: stats.normalized_auc(np.array([0, 0]), np.array([0.1, 0.2])),
    lambda: stats.normalized_auc(np.array([0]), np.array([0.1])),
])
def test_bad_input_is_one_clear_error(call):
  with pytest.raises(ValueError):
    call()
