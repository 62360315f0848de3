"""Plots from the metrics contract: learning curves with one panel per metrics.PANELS entry that has data, EMA
smoothing, seed statistics and run-vs-run comparisons."""
import pathlib

import numpy as np
import pytest
from matplotlib.image import imread

from paw_jax import plot, stats
from paw_jax.metrics import MetricsWriter, read_metrics


def synthetic_run(workdir: pathlib.Path, steps: int = 60) -> None:
  rng = np.random.RandomState(0)
  with MetricsWriter(workdir, use_tensorboard=False) as writer:
    for step in range(steps):
      metrics = {"rollout/success": min(1.0, step / steps + 0.1 * rng.rand()), "train/policy_loss": rng.randn(),
                 "paw/lambda_mean": 0.5 + 0.1 * rng.randn(), "time/rollout": 2.0, "time/train": 1.0}
      if step % 10 == 0:
        metrics.update({"eval/success": step / steps, "eval/success/pick": step / steps / 2})
      writer.write(step, metrics)


def assert_png(path: pathlib.Path, min_shape: tuple[int, int]) -> None:
  image = imread(path)
  assert image.shape[0] >= min_shape[0] and image.shape[1] >= min_shape[1]
  assert image[..., :3].std() > 0.05  # something was drawn


def test_plot_run_draws_present_panels_and_skips_missing_keys(tmp_path):
  synthetic_run(tmp_path / "run")
  panels = plot.panels_with_data(read_metrics(tmp_path / "run"))
  assert [(p.title, keys) for p, keys in panels] == [
      ("Success rate", ["eval/success", "rollout/success"]), ("Success by task type", ["eval/success/pick"]),
      ("Policy loss", ["train/policy_loss"]), ("PaW mean λ", ["paw/lambda_mean"]),
      ("Time per phase", ["time/rollout", "time/train"])]
  plot.main([str(tmp_path / "run"), "--out", str(tmp_path / "plots")])
  assert_png(tmp_path / "plots" / "learning_curves.png", (700, 1600))  # 2 rows x 3 columns of panels

  with MetricsWriter(tmp_path / "sparse", use_tensorboard=False) as writer:
    writer.write(0, {"eval/success": 0.0, "train/kl": float("nan")})  # a key whose only value is NaN draws nothing
    writer.write(5, {"eval/success": 0.5})
  assert [p.title for p, _ in plot.panels_with_data(read_metrics(tmp_path / "sparse"))] == ["Success rate"]
  assert_png(plot.plot_run(tmp_path / "sparse"), (300, 500))


def test_smoothing_and_seed_statistics():
  np.testing.assert_allclose(plot.smooth(np.arange(30.0), weight=0.5)[:8],
                             [0, 2 / 3, 10 / 7, 34 / 15, 98 / 31, 258 / 63, 642 / 127, 1538 / 255])
  values = np.random.RandomState(0).randn(30)  # debiased EMA = average with weights w^(age)
  expected = [np.average(values[:i + 1], weights=0.6 ** np.arange(i, -1, -1)) for i in range(30)]
  np.testing.assert_allclose(plot.smooth(values, weight=0.6), expected)
  short = np.array([1.0, 5.0])
  assert plot.smooth(short) is short
  seeds = [{"step": 0, "acc": 0.2}, {"step": 10, "acc": 0.5}, {"step": 0, "acc": 0.4}, {"step": 10, "acc": None},
           {"step": 10, "loss": 1.0}]
  steps, mean, std, count = plot.mean_std_by_step(seeds, "acc")
  np.testing.assert_allclose(steps, [0, 10])
  np.testing.assert_allclose(mean, [0.3, 0.5])
  np.testing.assert_allclose(std, [0.1, 0.0])
  np.testing.assert_array_equal(count, [2, 1])


def test_seed_band_is_mean_std_or_the_bootstrap_interval_per_step():
  seeds = [{"step": 0, "acc": 0.2}, {"step": 10, "acc": 0.5}, {"step": 0, "acc": 0.4}, {"step": 10, "acc": 0.9},
           {"step": 0, "acc": 0.3}]
  steps, mean, low, high, count = plot.seed_band(seeds, "acc", "std")
  np.testing.assert_allclose(mean - low, [np.std([0.2, 0.4, 0.3]), 0.2])
  np.testing.assert_allclose(high - mean, mean - low)
  steps, mean, low, high, count = plot.seed_band(seeds, "acc", "ci")
  expected = [stats.bootstrap_mean(np.array([0.2, 0.4, 0.3])), stats.bootstrap_mean(np.array([0.5, 0.9]))]
  np.testing.assert_allclose(mean, [e.estimate for e in expected])
  np.testing.assert_allclose(low, [e.low for e in expected])
  np.testing.assert_allclose(high, [e.high for e in expected])
  np.testing.assert_array_equal(count, [3, 2])
  with pytest.raises(ValueError, match="band must be one of"):
    plot.seed_band(seeds, "acc", "sem")


def test_plot_comparison_writes_mean_and_band(tmp_path):
  synthetic_run(tmp_path / "a")
  synthetic_run(tmp_path / "b", steps=40)
  runs = {"PaW": read_metrics(tmp_path / "a") + read_metrics(tmp_path / "b"), "GRPO": read_metrics(tmp_path / "b")}
  assert_png(plot.plot_comparison(runs, "rollout/success", tmp_path / "cmp" / "success.png", smoothing=plot.SMOOTHING),
             (400, 600))
  assert_png(plot.plot_comparison(runs, "eval/success", tmp_path / "cmp" / "eval.png", band="ci"), (400, 600))
  with pytest.raises(ValueError, match="key 'paw/wm_loss' is in none of the runs"):
    plot.plot_comparison(runs, "paw/wm_loss", tmp_path / "x.png")
