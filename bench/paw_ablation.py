"""The PaW ablation: eval success of PaW's variants (algos.paw.VARIANTS) on the CPU settings of configs/default.py,
over seeds, with 95% bootstrap confidence intervals and paired differences against `off` and `placebo`.

  python bench/paw_ablation.py [--settings lake4,sokoban] [--variants off,on,placebo,echo] [--seeds 0,1,2]
                               [--updates N] [--out bench_runs/paw_ablation] [--results bench/paw_ablation]
                               [--report-only] [--shared-warmup]

Each run is `python -m paw_jax.main --config=configs/default.py:paw=V,setting=S --config.seed=N
--config.workdir=OUT/S/V/seedN` in a child process (its log beside the workdir), one at a time, setting by setting and
seed by seed (every variant's seed 0 before any seed 1). A run whose metrics reach the final update has its
records up to it written to RESULTS/S/V/seedN/metrics.jsonl (small: it is committed) and is never trained again;
an unfinished run resumes from its checkpoint in OUT (so does a finished one asked for more --updates: the learning
rate is constant, so a longer run extends a shorter one). --report-only trains nothing and reports what RESULTS holds.
With --shared-warmup the format warm-up runs once per setting and seed (OUT/S/warmup/seedN, a run of 0 updates whose
export every variant starts from), instead of once in every run: the settings whose warm-up is long (textworld's).

Per setting it prints markdown tables: eval success at each eval (seed mean [95% CI]); per variant the area under
the success curve (AUC: its mean level over training), the final success, the world-model metrics at the last eval
and the time per update; and the paired differences of AUC and final success against `off` and `placebo`. It writes
RESULTS/S.png and RESULTS/S_wm_ce.png (eval success and held-out next-observation CE vs updates, seed mean and its
95% CI). Not a test: record the tables in bench/RESULTS.md with
the device named.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from paw_jax import stats
from paw_jax.algos.paw import VARIANTS
from paw_jax.metrics import METRICS_FILE, read_metrics
from paw_jax.plot import plot_comparison, series

CONFIG = "configs/default.py"
BASELINES = ("off", "placebo")  # the differences are taken against these
Records = list[dict[str, Any]]


def load_config(setting: str, variant: str):
  return ConfigFileFlagParser("config").parse(f"{CONFIG}:paw={variant},setting={setting}")


def finished_records(workdir: pathlib.Path, updates: int) -> Records | None:
  """The run's records up to `updates` when it got that far, else None."""
  try:
    records = [r for r in read_metrics(workdir) if r["step"] <= updates]
  except FileNotFoundError:
    return None
  return records if records and records[-1]["step"] == updates else None


def train_run(workdir: pathlib.Path, setting: str, variant: str, seed: int, updates: int, *overrides: str,
              export: bool = False) -> None:
  """One run in a child process (a fresh JAX per run); its output goes to WORKDIR.log."""
  command = [sys.executable, "-m", "paw_jax.main", f"--config={CONFIG}:paw={variant},setting={setting}",
             f"--config.seed={seed}", f"--config.workdir={workdir}", f"--config.train.export_hf={export}",
             f"--config.train.updates={updates}", *overrides]
  log = workdir.with_suffix(".log")
  log.parent.mkdir(parents=True, exist_ok=True)
  start = time.time()
  print(f"training {setting} {variant} seed {seed} in {workdir} (log: {log})", flush=True)
  with open(log, "a") as out:
    code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
  print(f"  {'done' if code == 0 else f'FAILED (exit {code})'} in {(time.time() - start) / 60:.1f} min", flush=True)


def warmed_up(out: pathlib.Path, setting: str, seed: int) -> tuple[str, ...]:
  """The overrides that start a run from the seed's warmed-up policy: the warm-up (random play, no task signal, the
  same for every variant) runs once, as an exported run of 0 updates."""
  workdir = out / setting / "warmup" / f"seed{seed}"
  export = workdir / "hf_export"
  if not export.is_dir():
    train_run(workdir, setting, "off", seed, 0, "--config.train.eval_at_start=False", export=True)
  if not export.is_dir():
    raise SystemExit(f"paw_ablation: the warm-up of {setting} seed {seed} wrote no export (log: "
                     f"{workdir.with_suffix('.log')})")
  return f"--config.model.path={export}", f"--config.tokenizer.path={export}", "--config.train.format_warmup_steps=0"


def collect(args, setting: str, variants: Sequence[str], seeds: Sequence[int]) -> dict[str, dict[int, Records]]:
  """{variant: {seed: records}} of the finished runs, training (or resuming) the others unless --report-only."""
  updates = args.updates or load_config(setting, variants[0]).train.updates
  runs: dict[str, dict[int, Records]] = {variant: {} for variant in variants}
  for seed in seeds:
    for variant in variants:
      result_dir = pathlib.Path(args.results) / setting / variant / f"seed{seed}"
      workdir = pathlib.Path(args.out) / setting / variant / f"seed{seed}"
      records = finished_records(result_dir, updates)
      if records is None and not args.report_only:
        if finished_records(workdir, updates) is None:
          start = warmed_up(pathlib.Path(args.out), setting, seed) if args.shared_warmup else ()
          train_run(workdir, setting, variant, seed, updates, *start)
        if (records := finished_records(workdir, updates)) is not None:
          result_dir.mkdir(parents=True, exist_ok=True)
          (result_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
      if records is not None:
        runs[variant][seed] = records
  return runs


def final_value(records: Records, key: str) -> float:
  """`key` at the last record that has a finite value for it (NaN when none does)."""
  _, values = series(records, key)
  return float(values[-1]) if len(values) else float("nan")


def success_auc(records: Records) -> float:
  return stats.normalized_auc(*series(records, "eval/success"))


def seconds_per_update(records: Records) -> float:
  """Mean rollout + train time of the updates after the first, which compiles the step and the sampler."""
  timed = [r["time/rollout"] + r["time/train"] for r in records
           if r["step"] > 1 and r.get("time/rollout") is not None and r.get("time/train") is not None]
  return float(np.mean(timed)) if timed else float("nan")


def interval(values: Sequence[float]) -> str:
  """Seed mean [95% CI]; one seed has no interval."""
  values = np.asarray([v for v in values if np.isfinite(v)])
  if not len(values):
    return "–"
  return f"{values[0]:.3f} (1 seed)" if len(values) == 1 else str(stats.bootstrap_mean(values))


def difference(runs: dict[str, dict[int, Records]], variant: str, baseline: str, metric) -> str:
  """Paired over the seeds both arms finished: mean difference [95% CI], and whether the interval excludes 0."""
  seeds = sorted(set(runs[variant]) & set(runs[baseline]))
  if not seeds:
    return "–"
  return stats.paired_difference_cell(np.array([metric(runs[variant][s]) for s in seeds]),
                                      np.array([metric(runs[baseline][s]) for s in seeds]))


def report(setting: str, runs: dict[str, dict[int, Records]], updates: int, results: pathlib.Path) -> None:
  done = {variant: seeds for variant, seeds in runs.items() if seeds}
  if not done:
    print(f"\n## {setting}: no finished run yet\n")
    return
  c = load_config(setting, next(iter(done)))
  print(f"\n## {setting}: env {c.env.name} {dict(c.env.kwargs)}, {c.algo.name}, {updates} updates of "
        f"{c.algo.groups_per_update} x {c.algo.group_size} episodes, eval on {c.train.eval_episodes} episodes every "
        f"{c.train.eval_every}\n")
  print("Seeds finished: " + "; ".join(f"{v} {sorted(s)}" for v, s in done.items()) + "\n")

  print("eval success, seed mean [95% bootstrap CI]\n")
  print("| update | " + " | ".join(done) + " |")
  print("|---:|" + "---:|" * len(done))
  by_step = {v: [(s, x) for records in seeds.values() for s, x in zip(*series(records, "eval/success"))]
             for v, seeds in done.items()}
  for step in sorted({s for points in by_step.values() for s, _ in points}):
    print(f"| {int(step)} | " + " | ".join(interval([x for s, x in by_step[v] if s == step]) for v in done) + " |")

  print("\n| variant | seeds | success AUC | final success | final eval/wm_ce | final eval/wm_acc | s/update |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for variant, seeds in done.items():
    records = list(seeds.values())
    print(f"| {variant} | {len(seeds)} | {interval([success_auc(r) for r in records])} | "
          f"{interval([final_value(r, 'eval/success') for r in records])} | "
          f"{interval([final_value(r, 'eval/wm_ce') for r in records])} | "
          f"{interval([final_value(r, 'eval/wm_acc') for r in records])} | "
          f"{np.mean([seconds_per_update(r) for r in records]):.1f} |")

  for index, baseline in enumerate(b for b in BASELINES if b in done):
    others = [v for v in done if v != baseline and v not in BASELINES[:index]]  # no baseline twice (off−placebo)
    if not others:
      continue
    print(f"\ndifference to `{baseline}`, paired by seed: mean [95% bootstrap CI]; significant only when the CI "
          f"excludes 0 (and >= {stats.MIN_SEEDS_FOR_SIGNIFICANCE} seeds)\n")
    print("| variant | Δ success AUC | Δ final success |")
    print("|---|---:|---:|")
    for variant in others:
      print(f"| {variant} − {baseline} | {difference(done, variant, baseline, success_auc)} | "
            f"{difference(done, variant, baseline, lambda r: final_value(r, 'eval/success'))} |")
  pooled = {v: [r for records in seeds.values() for r in records] for v, seeds in done.items()}
  for key, name, what in (("eval/success", "", "eval success"), ("eval/wm_ce", "_wm_ce", "held-out next-obs. CE")):
    png = plot_comparison(pooled, key, results / f"{setting}{name}.png", band="ci",
                          title=f"{setting}: {what}, seed mean and 95% bootstrap CI")
    print(f"\nplot: {png}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--settings", default="lake4,sokoban", help="configs/default.py settings, comma-separated")
  parser.add_argument("--variants", default="off,on,placebo,echo", help="algos.paw.VARIANTS names, comma-separated")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--updates", type=int, default=0, help="0: the config's train.updates")
  parser.add_argument("--out", default="bench_runs/paw_ablation", help="run workdirs (checkpoints: not committed)")
  parser.add_argument("--results", default="bench/paw_ablation", help="finished runs' metrics.jsonl and the plots")
  parser.add_argument("--report-only", action="store_true", help="train nothing; report what --results holds")
  parser.add_argument("--shared-warmup", action="store_true",
                      help="warm up once per setting and seed, and start every variant from it (else each run warms "
                           "up itself: the same steps, paid once per variant)")
  args = parser.parse_args()
  settings, variants = args.settings.split(","), args.variants.split(",")
  if unknown := set(variants) - set(VARIANTS):
    parser.error(f"--variants: unknown {sorted(unknown)}; known: {', '.join(VARIANTS)}")
  try:
    seeds = [int(s) for s in args.seeds.split(",")]
  except ValueError:
    parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
  for setting in settings:
    try:
      load_config(setting, variants[0])
    except Exception as error:  # noqa: BLE001 -- config_flags wraps the config's own error
      parser.error(f"--settings: {setting!r} is not a setting of {CONFIG} ({error})")
  all_runs = {setting: collect(args, setting, variants, seeds) for setting in settings}
  for setting, runs in all_runs.items():
    report(setting, runs, args.updates or load_config(setting, variants[0]).train.updates, pathlib.Path(args.results))


if __name__ == "__main__":
  main()
