"""Learning curves from a run's metrics.jsonl, and run-vs-run comparisons (seed mean with a std or CI band).

  python -m paw_jax.plot WORKDIR [--out DIR]   # writes DIR/learning_curves.png (DIR defaults to WORKDIR)
"""
from __future__ import annotations

import argparse
import fnmatch
import math
import pathlib
import sys
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure  # object API: renders with Agg, no pyplot state or display needed

from paw_jax import stats
from paw_jax.metrics import METRICS, PANELS, Panel, read_metrics

SMOOTHING = 0.6  # TensorBoard-style EMA weight for noisy curves
MIN_POINTS_TO_SMOOTH = 30  # sparse curves (e.g. eval every N steps) are drawn as they are
BANDS = ("std", "ci")  # plot_comparison's band around the seed mean


def series(records: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the records that have a finite value for `key`."""
  points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
  steps, values = zip(*points) if points else ((), ())
  return np.asarray(steps, float), np.asarray(values, float)


def smooth(values: np.ndarray, weight: float = SMOOTHING) -> np.ndarray:
  """Debiased exponential moving average (TensorBoard's smoothing); short curves are returned unchanged."""
  if len(values) < MIN_POINTS_TO_SMOOTH or weight <= 0:
    return values
  out, ema = np.empty_like(values), 0.0
  for i, value in enumerate(values):
    ema = weight * ema + (1 - weight) * value
    out[i] = ema / (1 - weight ** (i + 1))
  return out


def mean_std_by_step(records: Sequence[Mapping[str, Any]],
                     key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, population std, count) of `key` over the records logged at each step (e.g. several seeds')."""
  steps, values = series(records, key)
  unique = np.unique(steps)
  groups = [values[steps == s] for s in unique]
  return (unique, np.array([g.mean() for g in groups]), np.array([g.std() for g in groups]),
          np.array([len(g) for g in groups]))


def _matches(key: str, panel: Panel) -> bool:
  return any(fnmatch.fnmatchcase(key, m.pattern) for m in METRICS if m.panel == panel)


def panels_with_data(records: Sequence[Mapping[str, Any]]) -> list[tuple[Panel, list[str]]]:
  """Each panel of the metrics contract with the keys it draws that have a finite value; panels with none are left
  out."""
  keys = sorted({k for r in records for k in r if k != "step"})
  panels = []
  for panel in PANELS:
    found = [k for k in keys if _matches(k, panel) and len(series(records, k)[0])]
    if found:
      panels.append((panel, found))
  return panels


def _style(ax, title: str, ylabel: str, unit_interval: bool) -> None:
  ax.set_title(title, fontsize=10)
  ax.set_xlabel("update")
  ax.set_ylabel(ylabel)
  ax.grid(alpha=0.3)
  if unit_interval:
    ax.set_ylim(-0.03, 1.03)


def _draw(ax, steps: np.ndarray, values: np.ndarray, label: str) -> None:
  """The smoothed curve, over the raw one drawn faintly in the same colour when smoothing changed it."""
  smoothed = smooth(values)
  (line,) = ax.plot(steps, smoothed, label=label, linewidth=1.6, marker="o" if len(steps) < 20 else None,
                    markersize=3)
  if smoothed is not values:
    ax.plot(steps, values, color=line.get_color(), alpha=0.25, linewidth=0.8)


def plot_run(workdir: str | pathlib.Path, out_dir: str | pathlib.Path | None = None) -> pathlib.Path:
  """Writes learning_curves.png: one panel per metrics.PANELS entry that has data; missing keys are skipped."""
  records = read_metrics(workdir)
  panels = panels_with_data(records)
  if not panels:
    raise ValueError(f"nothing to plot in {workdir}: no metric with a value matches a panel")
  cols = min(3, len(panels))
  rows = math.ceil(len(panels) / cols)
  fig = Figure(figsize=(5 * cols, 3.4 * rows), layout="constrained")
  fig.suptitle(pathlib.Path(workdir).absolute().name)
  for ax, (panel, found) in zip(fig.subplots(rows, cols, squeeze=False).flat, panels):
    for key in found:
      _draw(ax, *series(records, key), label=key)
    _style(ax, panel.title, panel.ylabel, panel.unit_interval)
    ax.legend(fontsize=7)
  for ax in fig.axes[len(panels):]:
    ax.set_visible(False)
  out = pathlib.Path(out_dir if out_dir is not None else workdir) / "learning_curves.png"
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  return out


def seed_band(records: Sequence[Mapping[str, Any]], key: str,
              band: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(steps, mean, low, high, count) of `key` over the records logged at each step (e.g. several seeds'): the band is
  mean ± population std (band='std') or the mean's 95% percentile-bootstrap interval (band='ci', stats.py)."""
  if band not in BANDS:
    raise ValueError(f"band must be one of {BANDS}, got {band!r}")
  steps, mean, std, count = mean_std_by_step(records, key)
  if band == "std":
    return steps, mean, mean - std, mean + std, count
  all_steps, values = series(records, key)
  intervals = [stats.bootstrap_mean(values[all_steps == s]) for s in steps]
  return (steps, mean, np.array([i.low for i in intervals]), np.array([i.high for i in intervals]), count)


def plot_comparison(runs: Mapping[str, Sequence[Mapping[str, Any]]], key: str, out_png: str | pathlib.Path,
                    title: str | None = None, smoothing: float = 0.0, band: str = "std") -> pathlib.Path:
  """One curve per run name: the mean over the records it holds (e.g. all seeds' records concatenated) in a band,
  mean ± std or the 95% bootstrap interval of the mean (`seed_band`).

  The seed mean is already less noisy, so smoothing is off unless asked for (e.g. SMOOTHING for per-step curves).
  """
  if not any(len(series(records, key)[0]) for records in runs.values()):
    raise ValueError(f"plot_comparison: key '{key}' is in none of the runs {list(runs)}")
  fig = Figure(figsize=(6.5, 4.2), layout="constrained")
  ax = fig.subplots()
  for name, records in runs.items():
    steps, mean, low, high, count = seed_band(records, key, band)
    if not len(steps):
      continue
    mean, low, high = smooth(mean, smoothing), smooth(low, smoothing), smooth(high, smoothing)
    (line,) = ax.plot(steps, mean, label=f"{name} (n={count.max()})", linewidth=1.8,
                      marker="o" if len(steps) < 20 else None, markersize=3)
    ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
  panel = next((p for p in PANELS if _matches(key, p)), None)
  _style(ax, title or key, panel.ylabel if panel else key.rsplit("/", 1)[-1], bool(panel and panel.unit_interval))
  ax.legend()
  out_png = pathlib.Path(out_png)
  out_png.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out_png, dpi=110)
  return out_png


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog="python -m paw_jax.plot", description=__doc__.splitlines()[0])
  parser.add_argument("workdir", help="run directory holding metrics.jsonl")
  parser.add_argument("--out", default=None, help="where to write the PNG (default: WORKDIR)")
  args = parser.parse_args(argv)
  try:
    print(plot_run(args.workdir, args.out))
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f"paw_jax.plot: {e}")


if __name__ == "__main__":
  main()
