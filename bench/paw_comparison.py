"""PaW vs its base algorithm vs PaW with CE instead of CMAE: eval success over updates, mean ± std over seeds.

  python bench/paw_comparison.py [--config configs/default.py[:variant]] [--variants paw,base,paw_ce] [--seeds 3]
                                 [--updates N] [--eval_every N] [--out runs/bench_paw]

Each (variant, seed) trains in OUT/<variant>/seed<k>, one after another in this process. A run whose metrics already
reach the final update is not trained again, and an unfinished one resumes from its checkpoint, so re-running the
command only prints (use a fresh --out when the config changes). Prints markdown tables and writes
OUT/success_vs_updates.png. Not a test: record the tables in bench/RESULTS.md with the device named.
"""
from __future__ import annotations

import argparse
import pathlib
from typing import Any

import jax
import numpy as np
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from paw_jax.config import from_configdict
from paw_jax.metrics import read_metrics
from paw_jax.plot import mean_std_by_step, plot_comparison
from paw_jax.train import train

VARIANTS = {"paw": dict(enabled=True, wm_loss="cmae"), "base": dict(enabled=False),
            "paw_ce": dict(enabled=True, wm_loss="ce")}


def run_config(args, variant: str, seed: int):
  c = ConfigFileFlagParser("config").parse(args.config)  # as `python -m paw_jax.main --config=...` loads it
  c.paw.update(VARIANTS[variant])
  c.seed = seed
  c.workdir = str(pathlib.Path(args.out) / variant / f"seed{seed}")
  c.train.export_hf = False
  c.train.updates = args.updates or c.train.updates
  c.train.eval_every = args.eval_every or c.train.eval_every
  return c


def label(variant: str, config) -> str:
  algo = config.algo.name
  return f"{variant}: {algo}, no PaW" if variant == "base" else f"{variant}: {algo} + PaW ({config.paw.wm_loss})"


def finished_records(workdir: str, updates: int) -> list[dict[str, Any]] | None:
  """The run's records up to `updates` when it got that far, else None."""
  try:
    records = [r for r in read_metrics(workdir) if r["step"] <= updates]
  except FileNotFoundError:
    return None
  return records if records and records[-1]["step"] == updates else None


def by_step(records, key: str) -> dict[int, str]:
  steps, mean, std, _ = mean_std_by_step(records, key)
  return {int(s): f"{m:.3f} ± {d:.3f}" for s, m, d in zip(steps, mean, std)}


def seconds_per_update(records, *keys: str) -> float:
  """Mean of the summed phase times over updates after the first, which compiles the step and the sampler (a
  one-update run has only that one)."""
  timed = [r for r in records if all(r.get(k) is not None for k in keys)]
  timed = [r for r in timed if r["step"] > 1] or timed
  return float(np.mean([sum(r[k] for k in keys) for r in timed])) if timed else float("nan")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/default.py", help="config file[:variant], as paw_jax.main takes")
  parser.add_argument("--variants", default=",".join(VARIANTS))
  parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1")
  parser.add_argument("--updates", type=int, default=0, help="0: the config's train.updates")
  parser.add_argument("--eval_every", type=int, default=0, help="0: the config's train.eval_every")
  parser.add_argument("--out", default="runs/bench_paw")
  args = parser.parse_args()
  variants = args.variants.split(",")
  unknown = set(variants) - set(VARIANTS)
  if unknown:
    parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")

  runs: dict[str, list[dict[str, Any]]] = {}
  for variant in variants:
    records = []
    for seed in range(args.seeds):
      config = run_config(args, variant, seed)
      run_records = finished_records(config.workdir, config.train.updates)
      if run_records is None:
        print(f"training {variant} seed {seed} in {config.workdir}", flush=True)
        train(from_configdict(config))
        run_records = finished_records(config.workdir, config.train.updates)
        if run_records is None:  # e.g. a final checkpoint whose metrics.jsonl was deleted: train() had nothing to do
          raise RuntimeError(f"{config.workdir} has no metrics up to update {config.train.updates}; remove it")
      records += run_records
    runs[label(variant, config)] = records

  c = config
  print(f"\n{args.config}: env {c.env.name}, {c.train.updates} updates of {c.algo.groups_per_update} x "
        f"{c.algo.group_size} episodes, eval on {c.train.eval_episodes} episodes every {c.train.eval_every}; "
        f"{args.seeds} seeds; device: {jax.devices()[0].device_kind}\n")
  evals = {name: by_step(records, "eval/success") for name, records in runs.items()}
  print("| update | " + " | ".join(runs) + " |")
  print("|---:|" + "---:|" * len(runs))
  for step in sorted({s for table in evals.values() for s in table}):
    print(f"| {step} | " + " | ".join(evals[name].get(step, "–") for name in runs) + " |")

  print("\n| variant | final eval success | final rollout success | s/update (rollout + train) | train s/update |")
  print("|---|---:|---:|---:|---:|")
  for name, records in runs.items():
    final_eval = by_step(records, "eval/success").get(c.train.updates, "–")
    final_rollout = by_step(records, "rollout/success").get(c.train.updates, "–")
    print(f"| {name} | {final_eval} | {final_rollout} | {seconds_per_update(records, 'time/rollout', 'time/train'):.2f}"
          f" | {seconds_per_update(records, 'time/train'):.2f} |")
  png = plot_comparison(runs, "eval/success", pathlib.Path(args.out) / "success_vs_updates.png",
                        title=f"eval success, mean ± std over {args.seeds} seeds ({c.env.name})")
  print(f"\nplot: {png}")


if __name__ == "__main__":
  main()
