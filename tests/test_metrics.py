"""Metrics: JSONL/TensorBoard records exactly as written, a resumed log cut back to its checkpoint, the host
reduction of step sums, and the progress bar from the one METRICS list."""
import pathlib
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from etils import epath
from tensorboardX.proto import event_pb2

from paw_jax.metrics import METRICS, MetricsWriter, progress, read_metrics, reduce_step_metrics


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


@pytest.mark.parametrize("as_path", [pathlib.Path, epath.Path])  # epath: the workdir's type (gs://... too)
def test_a_resumed_log_is_cut_back_to_its_checkpoint(tmp_path, as_path):
  tmp_path = as_path(tmp_path)
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 2.0}\n{"step": 3, "loss": 3.0}\n{"step": 4, "lo')
  with MetricsWriter(tmp_path, keep_through=2, use_tensorboard=False) as writer:  # resumed from update 2's checkpoint
    writer.write(3, {"loss": 30.0})
    writer.write(3, {"eval/success": 0.5})  # a second record at the same step is kept
  assert path.read_text().splitlines() == ['{"step": 1, "loss": 1.0}', '{"step": 2, "loss": 2.0}',
                                           '{"step": 3, "loss": 30.0}', '{"step": 3, "eval/success": 0.5}']
  with MetricsWriter(tmp_path, keep_through=-1, use_tensorboard=False):  # a fresh start in the same workdir
    pass
  assert read_metrics(tmp_path) == []


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


def test_step_metrics_reduce_to_update_means_and_wm_ratios():
  steps = [{"loss": jnp.float32(1.0), "skipped": 0.0, "wm/loss_sum": 3.0, "wm/rows": 4, "wm/obs_tokens": 10,
            "wm/clipped_tokens": 1, "wm/weighted_loss": 0.3},
           {"loss": 2.0, "skipped": 1.0, "wm/loss_sum": 1.0, "wm/rows": 0, "wm/obs_tokens": 10,
            "wm/clipped_tokens": 4, "wm/weighted_loss": 0.0}]
  # Token means average over mini-batches; skipped steps add up; WM sums pool: (3 + 1) / (4 + 0), (1 + 4) / 20.
  assert reduce_step_metrics(steps, "train") == {"train/loss": 1.5, "train/skipped": 1.0, "paw/wm_loss": 1.0,
                                                 "paw/clipped_ratio": 0.25}
  assert reduce_step_metrics([], "critic") == {}


def test_progress_bar_shows_live_metrics(capsys):
  bar = progress(10, initial=3)
  bar.update({"rollout/success": 0.5, "train/loss": 0.123456})
  bar.update({"eval/success": 0.25})  # the rollout success shown before stays
  bar.close()
  last = capsys.readouterr().err.split("\r")[-1]
  assert "5/10" in last and "succ=0.5" in last and "eval=0.25" in last and "loss" not in last
  assert {m.bar for m in METRICS if m.bar} == {"succ", "eval", "reward", "wm"}
