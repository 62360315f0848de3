"""Seed statistics for learning-curve comparisons: percentile-bootstrap confidence intervals of a mean and of a
difference of means, and the area under a success curve.

With a handful of seeds a bootstrap interval is coarse (3 seeds give only 10 distinct resamples), so an interval
that excludes 0 is the least a difference must show before it is called significant, not proof of one.
"""
from __future__ import annotations

import dataclasses

import numpy as np

NUM_RESAMPLES = 10_000
LEVEL = 0.95
MIN_SEEDS_FOR_SIGNIFICANCE = 3  # below, a bootstrap interval is [min, max] of one or two differences: no test


@dataclasses.dataclass(frozen=True)
class Interval:
  """A point estimate with its confidence interval [low, high]."""
  estimate: float
  low: float
  high: float

  @property
  def excludes_zero(self) -> bool:
    return self.low > 0 or self.high < 0

  def __str__(self) -> str:
    return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _percentile_interval(estimate: float, resampled_R: np.ndarray, level: float) -> Interval:
  tail = 100 * (1 - level) / 2
  low, high = np.percentile(resampled_R, [tail, 100 - tail])
  return Interval(float(estimate), float(low), float(high))


def _check(values_S: np.ndarray, name: str) -> np.ndarray:
  values_S = np.asarray(values_S, float)
  if values_S.ndim != 1 or not len(values_S) or not np.isfinite(values_S).all():
    raise ValueError(f"{name} must be a non-empty 1-D array of finite values, got {values_S!r}")
  return values_S


def bootstrap_mean(values_S: np.ndarray, seed: int = 0, num_resamples: int = NUM_RESAMPLES,
                   level: float = LEVEL) -> Interval:
  """The mean over seeds with its percentile-bootstrap CI: resample the S values with replacement."""
  values_S = _check(values_S, "values_S")
  index_RxS = np.random.default_rng(seed).integers(0, len(values_S), (num_resamples, len(values_S)))
  return _percentile_interval(values_S.mean(), values_S[index_RxS].mean(axis=1), level)


def bootstrap_difference(a_S: np.ndarray, b_S: np.ndarray, paired: bool, seed: int = 0,
                         num_resamples: int = NUM_RESAMPLES, level: float = LEVEL) -> Interval:
  """mean(a) - mean(b) with its percentile-bootstrap CI.

  paired: a_S[i] and b_S[i] share seed i (the same warm-up and eval panel), so whole pairs are resampled and the
  seed's own level cancels; else each arm is resampled on its own.
  """
  a_S, b_S = _check(a_S, "a_S"), _check(b_S, "b_S")
  if paired:
    if len(a_S) != len(b_S):
      raise ValueError(f"paired arms need as many values each, got {len(a_S)} and {len(b_S)}")
    return bootstrap_mean(a_S - b_S, seed, num_resamples, level)
  rng = np.random.default_rng(seed)
  index_a_RxS = rng.integers(0, len(a_S), (num_resamples, len(a_S)))
  index_b_RxS = rng.integers(0, len(b_S), (num_resamples, len(b_S)))
  resampled_R = a_S[index_a_RxS].mean(axis=1) - b_S[index_b_RxS].mean(axis=1)
  return _percentile_interval(a_S.mean() - b_S.mean(), resampled_R, level)


def paired_difference_cell(a_S: np.ndarray, b_S: np.ndarray) -> str:
  """A results-table cell for mean(a) - mean(b) over paired seeds: the difference, its 95% CI and whether the
  interval excludes 0; with fewer than MIN_SEEDS_FOR_SIGNIFICANCE seeds, the difference alone."""
  d = bootstrap_difference(a_S, b_S, paired=True)
  if len(a_S) < MIN_SEEDS_FOR_SIGNIFICANCE:
    return f"{d.estimate:+.3f} ({len(a_S)} seed{'s' * (len(a_S) > 1)}: no test)"
  verdict = "**significant**" if d.excludes_zero else "n.s."
  return f"{d.estimate:+.3f} [{d.low:+.3f}, {d.high:+.3f}] {verdict}"


def normalized_auc(steps_N: np.ndarray, values_N: np.ndarray) -> float:
  """Trapezoid area under the curve divided by the step range: the curve's mean level over training, in the
  values' units (a success curve's lies in [0, 1])."""
  steps_N, values_N = _check(steps_N, "steps_N"), _check(values_N, "values_N")
  if len(steps_N) != len(values_N) or len(steps_N) < 2 or (np.diff(steps_N) <= 0).any():
    raise ValueError(f"normalized_auc needs >= 2 increasing steps with one value each, got steps {steps_N.tolist()} "
                     f"and {len(values_N)} values")
  area = ((values_N[1:] + values_N[:-1]) / 2 * np.diff(steps_N)).sum()
  return float(area / (steps_N[-1] - steps_N[0]))
