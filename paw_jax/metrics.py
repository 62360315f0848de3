"""Metrics out of a run: JSONL + TensorBoard writer, host reduction of step sums, phase timer, progress bar.

Key names are '/'-grouped: `train/success`, `eval/success/<task type>`, `paw/lambda_mean`, `time/rollout`;
`paw_jax.plot` draws them.

Sums convention: a jitted step returns additive scalars so that mini-batches and devices can be added before
dividing. A mean is returned as the pair `<name>_sum`, `<name>_count`; `reduce_sums` turns the pair into `<name>`.
Any other key passes through (added up when several step dicts are given, so it must be additive there).
"""
from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import numbers
import pathlib
import time
from typing import Any, Iterator, Mapping, Sequence

import jax
import numpy as np
from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"
SUM_SUFFIX, COUNT_SUFFIX = "_sum", "_count"
# What the progress bar shows when present, under a short label.
POSTFIX_KEYS = {"train/success": "succ", "eval/success": "eval", "train/return": "ret", "loss": "loss",
                "paw/lambda_mean": "λ"}


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
  """Appends `{"step": s, **metrics}` lines to workdir/metrics.jsonl (and TensorBoard scalars to workdir/tb).

  Every line is flushed, so a killed run keeps what it logged. Only process 0 writes.
  """

  def __init__(self, workdir: str | pathlib.Path, use_tensorboard: bool = True):
    self.workdir = pathlib.Path(workdir)
    self._primary = jax.process_index() == 0
    self._file = None
    self._tb = None
    if not self._primary:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    path = self.workdir / METRICS_FILE
    ends_mid_line = _ends_mid_line(path)
    self._file = path.open("a", encoding="utf-8")
    if ends_mid_line:
      self._file.write("\n")  # a killed run left half a line: keep the next record on a line of its own
    if use_tensorboard:
      from tensorboardX import SummaryWriter  # slow import: only when asked for
      self._tb = SummaryWriter(logdir=str(self.workdir / "tb"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    if not self._primary:
      return
    if "step" in metrics:
      raise ValueError("MetricsWriter.write: 'step' is the record's own key; pass it as the step argument")
    record = {"step": int(step), **{name: _scalar(name, value) for name, value in metrics.items()}}
    self._file.write(json.dumps(record) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        if name != "step" and value is not None:
          self._tb.add_scalar(name, value, record["step"])
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()

  def __enter__(self) -> MetricsWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def _ends_mid_line(path: pathlib.Path) -> bool:
  if not path.is_file() or not path.stat().st_size:
    return False
  with path.open("rb") as f:
    f.seek(-1, 2)
    return f.read(1) != b"\n"


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
  """The records of workdir/metrics.jsonl in order, as one run would have written them.

  A resumed run re-logs the steps after its checkpoint: when the step goes back, the earlier records from that step
  on are dropped. Unreadable lines (half-written by a killed run) are skipped with a warning.
  """
  path = pathlib.Path(workdir) / METRICS_FILE
  if not path.is_file():
    raise FileNotFoundError(f"no {METRICS_FILE} in {workdir}")
  records, bad_lines = [], []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      step = int(record["step"])
    except (ValueError, KeyError, TypeError):
      bad_lines.append(number)
      continue
    if records and step < records[-1]["step"]:  # resumed from an earlier checkpoint: these steps are re-logged
      records = [r for r in records if r["step"] < step]
    records.append(record)
  if bad_lines:
    logging.warning("%s: skipped unreadable lines %s", path, bad_lines)
  return records


def reduce_sums(sums: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """Host means from a step's sums (or several steps' sums, added first): `x_sum / x_count` -> `x`.

  A mean over a zero count is left out (nothing to report, e.g. no world-model rows selected this step).
  """
  steps = [sums] if isinstance(sums, Mapping) else list(sums)
  totals: dict[str, float] = collections.defaultdict(float)
  for step_sums in jax.device_get(steps):  # one transfer for the whole list
    for name, value in step_sums.items():
      totals[name] += float(np.asarray(value))
  reduced = {}
  for name, value in totals.items():
    if name.endswith(SUM_SUFFIX):
      base = name[:-len(SUM_SUFFIX)]
      if base + COUNT_SUFFIX not in totals:
        raise KeyError(f"reduce_sums: '{name}' has no denominator '{base + COUNT_SUFFIX}'")
      if totals[base + COUNT_SUFFIX]:
        reduced[base] = value / totals[base + COUNT_SUFFIX]
    elif not (name.endswith(COUNT_SUFFIX) and name[:-len(COUNT_SUFFIX)] + SUM_SUFFIX in totals):
      reduced[name] = value
  return reduced


class Timer:
  """Wall time per phase: `with timer("rollout"): ...`; `timer.pop()` -> {"time/rollout": s, ...} and resets.

  JAX dispatch is asynchronous: block on the phase's outputs inside the `with` or its time lands in a later phase.
  """

  def __init__(self):
    self._seconds: dict[str, float] = collections.defaultdict(float)

  @contextlib.contextmanager
  def __call__(self, phase: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
      yield
    finally:
      self._seconds[phase] += time.perf_counter() - start

  def pop(self) -> dict[str, float]:
    seconds = {f"time/{phase}": s for phase, s in self._seconds.items()}
    self._seconds.clear()
    return seconds


class ProgressBar:
  """A tqdm bar over training steps whose postfix shows the latest success rate, return, loss and λ."""

  def __init__(self, total: int, initial: int = 0, desc: str = "train"):
    self._bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                     disable=jax.process_index() != 0)
    self._postfix: dict[str, str] = {}

  def update(self, metrics: Mapping[str, Any] | None = None, steps: int = 1) -> None:
    """Advances by `steps`; shows the POSTFIX_KEYS present in `metrics` (others keep their last value)."""
    for key, label in POSTFIX_KEYS.items():
      if metrics and metrics.get(key) is not None:
        self._postfix[label] = f"{float(metrics[key]):.3g}"
    self._bar.set_postfix(self._postfix, refresh=False)
    self._bar.update(steps)

  def close(self) -> None:
    self._bar.close()


def progress(total: int, initial: int = 0, desc: str = "train") -> ProgressBar:
  """A progress bar from step `initial` (e.g. the resumed step) to `total`."""
  return ProgressBar(total, initial, desc)
