"""The metrics contract of a run: which names the loop emits, the progress bar shows and the plot draws (`METRICS`),
the JSONL + TensorBoard writer, and the host reduction of a step's sums.

Key names are '/'-grouped: `rollout/success`, `eval/success/<task type>`, `train/policy_loss`, `paw/lambda_mean`,
`critic/value_loss`, `time/rollout`. A jitted step returns additive scalars (token means already divided by the
mini-batch's count, WM sums as sums) so that micro-batches add up; `reduce_step_metrics` averages them over an update's
mini-batches on the host.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from etils import epath
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"


@dataclasses.dataclass(frozen=True)
class Panel:
  title: str
  ylabel: str
  unit_interval: bool = False  # rates: the y axis is fixed to [0, 1] so runs compare at a glance


@dataclasses.dataclass(frozen=True)
class Metric:
  pattern: str  # the key, or an fnmatch pattern for a family (one key per task type, per phase)
  panel: Panel  # where the plot draws it
  when: str = ""  # '' always emitted; else what makes the loop emit it: paw, ppo, kl, entropy, rwml (the rwml
  # program), wm_samples (rwml.panel_samples > 0)
  bar: str = ""  # the progress bar's label for it ('' not shown)


_SUCCESS = Panel("Success rate", "success rate", unit_interval=True)
_RETURN = Panel("Episode return", "return")
_KL = Panel("KL to reference", "KL")
_ENTROPY = Panel("Action entropy", "nats / token")
_WM_CE = Panel("World model: held-out next-observation CE", "nats / token")
_WM_ACC = Panel("World model: held-out next-observation accuracy", "token accuracy", unit_interval=True)
_WM_REWARD = Panel("World model: similarity reward", "reward", unit_interval=True)
_WM_PARSED = Panel("Predictions with a <next_state> block", "share", unit_interval=True)
METRICS: tuple[Metric, ...] = (
    Metric("rollout/success", _SUCCESS, bar="succ"),
    Metric("eval/success", _SUCCESS, bar="eval"),
    Metric("*/success/*", Panel("Success by task type", "success rate", unit_interval=True)),
    Metric("rollout/return", _RETURN),
    Metric("eval/return", _RETURN),
    Metric("train/policy_loss", Panel("Policy loss", "loss")),
    Metric("train/approx_kl", _KL),
    Metric("train/kl", _KL, when="kl"),
    Metric("train/clip_frac", Panel("PPO clip fraction", "fraction of tokens")),
    Metric("critic/value_loss", Panel("Critic value loss", "loss"), when="ppo"),
    Metric("paw/lambda_mean", Panel("PaW mean λ", "λ"), when="paw"),
    Metric("paw/wm_loss", Panel("World-model loss", "loss"), when="paw"),
    Metric("paw/clipped_ratio", Panel("Clipped-token ratio (p > ρ)", "fraction of obs tokens"), when="paw"),
    Metric("paw/selected", Panel("WM rows selected", "rows"), when="paw"),
    Metric("paw/action_entropy", _ENTROPY, when="paw"),
    Metric("train/entropy", _ENTROPY, when="entropy"),
    Metric("*/invalid_rate", Panel("Invalid-action rate", "rate", unit_interval=True)),
    Metric("rollout/response_tokens", Panel("Response length", "tokens")),
    Metric("eval/wm_ce", _WM_CE),
    Metric("eval/wm_ns_ce", _WM_CE),
    Metric("eval/wm_acc", _WM_ACC),
    Metric("eval/wm_ns_acc", _WM_ACC),
    Metric("rwml/reward", _WM_REWARD, when="rwml", bar="reward"),
    Metric("eval/wm_reward", _WM_REWARD, when="wm_samples", bar="wm"),
    Metric("rwml/parse_rate", _WM_PARSED, when="rwml"),
    Metric("eval/wm_parse_rate", _WM_PARSED, when="wm_samples"),
    Metric("rwml/easy_share", Panel("Too-easy triplets (before filtering)", "share", unit_interval=True), when="rwml"),
    Metric("rwml/response_tokens", Panel("Prediction length", "tokens"), when="rwml"),
    Metric("time/*", Panel("Time per phase", "seconds")),
)
PANELS: tuple[Panel, ...] = tuple(dict.fromkeys(m.panel for m in METRICS))


def reduce_step_metrics(step_metrics: Sequence[Mapping[str, Any]], prefix: str) -> dict[str, float]:
  """An update's metrics from its mini-batch steps' (host) sums: token means are averaged over the mini-batches
  under `prefix/`; PaW's WM sums become `paw/wm_loss` (mean ℓ of a selected row) and `paw/clipped_ratio`."""
  if not step_metrics:
    return {}
  summed = {k: float(sum(np.asarray(m[k]) for m in step_metrics)) for k in step_metrics[0]}
  out = {f"{prefix}/{k}": v / len(step_metrics) for k, v in summed.items() if not k.startswith("wm/")}
  out[f"{prefix}/skipped"] = summed["skipped"]
  if "wm/rows" in summed:
    out["paw/wm_loss"] = summed["wm/loss_sum"] / max(summed["wm/rows"], 1)
    out["paw/clipped_ratio"] = summed["wm/clipped_tokens"] / max(summed["wm/obs_tokens"], 1)
  return out


def _scalar(name: str, value: Any) -> int | float | None:
  """A JSON number from a Python/numpy/jax scalar; None for NaN/inf (strict JSON has no such numbers)."""
  array = np.asarray(value)
  if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
    raise TypeError(f"metric '{name}' must be a real scalar, got {type(value).__name__} {array.dtype}{array.shape}")
  item = array.item()
  if isinstance(item, numbers.Integral):
    return int(item)
  return item if math.isfinite(item) else None


class MetricsWriter:
  """Writes `{"step": s, **metrics}` lines to workdir/metrics.jsonl (and TensorBoard scalars to workdir/tb).

  The file is rewritten whole at every record, to a temporary file renamed into place: object stores (gs://) have no
  append, and a killed run keeps what it logged. `keep_through`: the step a run resumes after (its checkpoint's);
  records of later steps, logged by the killed run after that checkpoint, are dropped, so the file holds each step
  once. Only process 0 writes.
  """

  def __init__(self, workdir: str | os.PathLike, keep_through: int | None = None, use_tensorboard: bool = True):
    self.workdir = epath.Path(workdir)
    self._primary = jax.process_index() == 0
    self._lines: list[str] = []
    self._tb = None
    if not self._primary:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    path = self.workdir / METRICS_FILE
    if path.is_file():
      self._lines = [json.dumps(r) + "\n" for r in _records(path) if keep_through is None or r["step"] <= keep_through]
      self._save()
    if use_tensorboard:
      from tensorboardX import SummaryWriter  # slow import: only when asked for
      self._tb = SummaryWriter(logdir=str(self.workdir / "tb"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self._primary:
      return
    if "step" in metrics:
      raise ValueError("MetricsWriter.write: 'step' is the record's own key; pass it as the step argument")
    record = {"step": int(step), **{name: _scalar(name, value) for name, value in metrics.items()}}
    self._lines.append(json.dumps(record) + "\n")
    self._save()
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and value is not None:
          self._tb.add_scalar(name, value, record["step"])
      self._tb.flush()

  def _save(self) -> None:
    path = self.workdir / METRICS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(self._lines), encoding="utf-8")
    tmp.replace(path)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _records(path: epath.Path) -> list[dict[str, Any]]:
  records, bad_lines = [], []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      record["step"] = int(record["step"])
    except (ValueError, KeyError, TypeError):
      bad_lines.append(number)
      continue
    records.append(record)
  if bad_lines:
    logging.warning("%s: skipped unreadable lines %s", path, bad_lines)
  return records


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of workdir/metrics.jsonl in order; unreadable lines (half-written by a killed run) are skipped."""
  path = epath.Path(workdir) / METRICS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no {METRICS_FILE} in {workdir}")
  return _records(path)


class ProgressBar:
  """A tqdm bar over training steps whose postfix shows the METRICS that have a `bar` label (latest values)."""

  def __init__(self, total: int, initial: int = 0, desc: str = "train"):
    self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                     disable=jax.process_index() != 0)
    self._postfix: dict[str, str] = {}

  def update(self, metrics: Mapping[str, Any] | None = None, steps: int = 1) -> None:
    """Advances by `steps`; shows the bar's metrics present in `metrics` (others keep their last value)."""
    for metric in METRICS:
      if metric.bar and metrics and metrics.get(metric.pattern) is not None:
        self._postfix[metric.bar] = f"{float(metrics[metric.pattern]):.3g}"
    self._bar.set_postfix(self._postfix, refresh=False)
    self._bar.update(steps)

  def close(self) -> None:
    self._bar.close()


def progress(total: int, initial: int = 0, desc: str = "train") -> ProgressBar:
  """A progress bar from step `initial` (e.g. the resumed step) to `total`."""
  return ProgressBar(total, initial, desc)
