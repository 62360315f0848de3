"""Metrics: JSONL/TensorBoard records exactly as written, resume-safe reading, host reduction of sums, timer,
progress bar, and learning-curve / comparison plots."""
import pathlib
import struct
import time

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import imread
from tensorboardX.proto import event_pb2

from paw_jax import plot
from paw_jax.metrics import MetricsWriter, Timer, progress, read_metrics, reduce_sums


def tensorboard_scalars(logdir: pathlib.Path) -> dict[tuple[str, int], float]:
  """{(tag, step): value} from the TFRecord event files (length, crc, Event proto, crc)."""
  scalars = {}
  for path in logdir.glob("events.out.tfevents.*"):
    data, pos = path.read_bytes(), 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      scalars.update({(v.tag, event.step): v.simple_value for v in event.summary.value})
  return scalars


def test_jsonl_and_tensorboard_hold_exactly_what_was_written(tmp_path):
  with MetricsWriter(tmp_path) as writer:
    writer.write(1, {"train/success": 0.5, "paw/selected": np.int32(12), "loss": jnp.float32(0.25)})
    writer.write(2, {"eval/success/pick": 1.0, "kl": float("nan"), "won": np.bool_(True)})
    # flushed per line: a reader sees both records before close
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
  assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
      '{"step": 1, "train/success": 0.5, "paw/selected": 12, "loss": 0.25}',
      '{"step": 2, "eval/success/pick": 1.0, "kl": null, "won": 1}',
  ]
  assert read_metrics(tmp_path) == [{"step": 1, "train/success": 0.5, "paw/selected": 12, "loss": 0.25},
                                    {"step": 2, "eval/success/pick": 1.0, "kl": None, "won": 1}]
  assert tensorboard_scalars(tmp_path / "tb") == {
      ("train/success", 1): 0.5, ("paw/selected", 1): 12.0, ("loss", 1): 0.25, ("eval/success/pick", 2): 1.0,
      ("won", 2): 1.0}  # NaN is not sent


def test_killed_and_resumed_run_reads_as_one_run(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "loss": 3.0}\n{"step": 4, "lo')
  with MetricsWriter(tmp_path, use_tensorboard=False) as writer:  # resumed from the checkpoint at step 1
    writer.write(2, {"loss": 20.0})
    writer.write(2, {"eval/success": 0.5})  # a second record at the same step is kept
    writer.write(3, {"loss": 30.0})
  assert path.read_text().splitlines()[3:] == ['{"step": 4, "lo', '{"step": 2, "loss": 20.0}',
                                               '{"step": 2, "eval/success": 0.5}', '{"step": 3, "loss": 30.0}']
  assert read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 20.0},
                                    {"step": 2, "eval/success": 0.5}, {"step": 3, "loss": 30.0}]


def test_bad_metrics_are_named(tmp_path):
  with MetricsWriter(tmp_path, use_tensorboard=False) as writer:
    with pytest.raises(TypeError, match="metric 'lengths' must be a real scalar"):
      writer.write(1, {"lengths": [3, 4]})
    with pytest.raises(TypeError, match="metric 'task' must be a real scalar"):
      writer.write(1, {"task": "pick"})
    with pytest.raises(ValueError, match="'step' is the record's own key"):
      writer.write(1, {"step": 3})
  with pytest.raises(FileNotFoundError, match="no metrics.jsonl"):
    read_metrics(tmp_path / "nowhere")


def test_reduce_sums_to_means():
  step = {"loss_sum": jnp.float32(6.0), "loss_count": jnp.int32(4), "grad_norm": 0.5,
          "wm/loss_sum": 0.0, "wm/loss_count": 0, "paw/selected_count": 7}
  assert reduce_sums(step) == {"loss": 1.5, "grad_norm": 0.5, "paw/selected_count": 7.0}
  # Pooled over mini-batches: (6 + 2) / (4 + 1) = 1.6, not the mean of means (1.5 + 2) / 2 = 1.75.
  assert reduce_sums([{"loss_sum": 6.0, "loss_count": 4, "rows": 2},
                      {"loss_sum": 2.0, "loss_count": 1, "rows": 3}]) == {"loss": 1.6, "rows": 5.0}
  with pytest.raises(KeyError, match="'kl_sum' has no denominator 'kl_count'"):
    reduce_sums({"kl_sum": 1.0})


def test_timer_accumulates_per_phase():
  timer = Timer()
  for _ in range(2):
    with timer("env"):
      time.sleep(0.05)
  with pytest.raises(RuntimeError), timer("train"):  # a failing phase still counts its time
    time.sleep(0.02)
    raise RuntimeError
  seconds = timer.pop()
  assert sorted(seconds) == ["time/env", "time/train"]
  assert 0.1 <= seconds["time/env"] < 0.5 and 0.02 <= seconds["time/train"] < 0.3
  assert timer.pop() == {}


def test_progress_bar_shows_live_metrics(capsys):
  bar = progress(10, initial=3)
  bar.update({"train/success": 0.5, "loss": 0.123456, "ignored": 1.0})
  bar.update({"eval/success": 0.25})  # the train success shown before stays
  bar.close()
  last = capsys.readouterr().err.split("\r")[-1]
  assert "5/10" in last and "succ=0.5" in last and "loss=0.123" in last and "eval=0.25" in last
  assert "ignored" not in last


def synthetic_run(workdir: pathlib.Path, steps: int = 60) -> None:
  rng = np.random.RandomState(0)
  with MetricsWriter(workdir, use_tensorboard=False) as writer:
    for step in range(steps):
      metrics = {"train/success": min(1.0, step / steps + 0.1 * rng.rand()), "policy_loss": rng.randn(),
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
      ("Success rate", ["eval/success", "train/success"]), ("Success by task type", ["eval/success/pick"]),
      ("Policy loss", ["policy_loss"]), ("PaW mean λ", ["paw/lambda_mean"]),
      ("Time per phase", ["time/rollout", "time/train"])]
  plot.main([str(tmp_path / "run"), "--out", str(tmp_path / "plots")])
  assert_png(tmp_path / "plots" / "learning_curves.png", (700, 1600))  # 2 rows x 3 columns of panels

  with MetricsWriter(tmp_path / "sparse", use_tensorboard=False) as writer:
    writer.write(0, {"eval/success": 0.0, "kl": float("nan")})  # a key whose only value is NaN draws nothing
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


def test_plot_comparison_writes_mean_and_band(tmp_path):
  synthetic_run(tmp_path / "a")
  synthetic_run(tmp_path / "b", steps=40)
  runs = {"PaW": read_metrics(tmp_path / "a") + read_metrics(tmp_path / "b"), "GRPO": read_metrics(tmp_path / "b")}
  assert_png(plot.plot_comparison(runs, "train/success", tmp_path / "cmp" / "success.png", smoothing=plot.SMOOTHING),
             (400, 600))
  with pytest.raises(ValueError, match="key 'paw/wm_loss' is in none of the runs"):
    plot.plot_comparison(runs, "paw/wm_loss", tmp_path / "x.png")
