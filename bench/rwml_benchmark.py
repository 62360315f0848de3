"""RWML's comparison on a text env (docs/RWML.md): task RL alone, RWML -> task RL, next-state SFT -> task RL, at the
same compute budget, over seeds.

  nice -n 5 python bench/rwml_benchmark.py [--env textworld] [--size full|ci] [--seeds 0,1,2] [--arms rl,rwml,sft]
                                           [--out runs/rwml_bench] [--results bench/rwml_results]

Each (arm, seed) is one `python -m paw_jax.main --config=configs/rwml.py:env=ENV,method=ARM,size=SIZE --config.seed=S`
subprocess in OUT/ENV-SIZE/ARM-seedS, one at a time, seed 0 of every arm first. The format warm-up (random play, no
task signal) is the same in every arm of a seed: it runs once per seed (OUT/ENV-SIZE/warmup-seedS, a run of 0 updates)
and every arm starts from its export with `train.format_warmup_steps=0`. A finished run's figures go to a small
RESULTS/ENV-SIZE/ARM-seedS.json and are reused on the next launch; an unfinished run resumes from its checkpoints.
Prints the success table (mean and 95% bootstrap CI over seeds), the world-model metrics and the invalid-action rate
before and after each arm's first stage, the wall time; writes RESULTS/ENV-SIZE/success.png.

The compute budget is the number of updates: each arm trains for the same total, and task RL alone spends the world-
model stage's updates on task RL (`train.updates` + the stage's). An update is one round of the learner on a fresh
batch (task RL: 8 x 8 episodes; RWML: 16 triplets x 8 predictions; next-state SFT: 16 triplets). Updates, not seconds:
the machine is shared, so wall time varies with other jobs' load and cannot be held equal between runs; it is
reported beside the table, with the collection's rollouts (RWML and SFT arms) inside it.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paw_jax import stats  # noqa: E402 -- after the repository root is importable
from paw_jax.metrics import read_metrics  # noqa: E402
from paw_jax.plot import plot_comparison  # noqa: E402

ARMS = {"rl": "task RL alone", "rwml": "RWML -> task RL", "sft": "next-state SFT -> task RL"}
PRE_STAGE = {"rl": None, "rwml": "rwml", "sft": "wm_sft"}
WM_KEYS = ("eval/wm_reward", "eval/wm_ce", "eval/wm_ns_ce")
WALL_FILE = "bench_wall_s.json"  # the run's accumulated wall seconds, over relaunches


def load_config(env: str, arm: str, size: str):
  """configs/rwml.py's ConfigDict for one arm, as paw_jax.main loads it."""
  from ml_collections.config_flags.config_flags import ConfigFileFlagParser  # pylint: disable=import-outside-toplevel
  return ConfigFileFlagParser("config").parse(f"{ROOT / 'configs' / 'rwml.py'}:{spec(env, arm, size)}")


def spec(env: str, arm: str, size: str) -> str:
  return f"env={env},method={arm},size={size}"


def budget(env: str, size: str) -> tuple[int, int]:
  """(world-model stage updates, task-RL updates) of the RWML arm: the budget every arm spends."""
  c = load_config(env, "rwml", size)
  return c.stage_overrides["rwml"]["train"]["updates"], c.train.updates


def rl_updates(arm: str, env: str, size: str) -> int:
  pre, rl = budget(env, size)
  return rl + pre if arm == "rl" else rl


def stage_dirs(workdir: pathlib.Path, arm: str) -> tuple[pathlib.Path | None, pathlib.Path]:
  """(the first stage's workdir or None, the task-RL stage's workdir)."""
  if PRE_STAGE[arm] is None:
    return None, workdir
  return workdir / PRE_STAGE[arm], workdir / "rl"


def evals(workdir: pathlib.Path) -> list[dict[str, Any]]:
  return [r for r in read_metrics(workdir) if any(k.startswith("eval/") for k in r)]


def summarize(workdir: pathlib.Path, arm: str, updates: int, wall_s: float) -> dict[str, Any]:
  """The figures of a finished run: success curve, world-model and invalid-action rates at each stage's ends."""
  pre, rl = stage_dirs(workdir, arm)
  rl_evals = evals(rl)
  if not rl_evals or rl_evals[-1]["step"] != updates:
    raise RuntimeError(f"{rl}: no eval at update {updates}; the run did not finish")
  first = evals(pre) if pre is not None else rl_evals
  pick = lambda record, keys: {k: record.get(k) for k in keys}  # noqa: E731
  keys = ("eval/success", "eval/invalid_rate", *WM_KEYS)
  return {"arm": arm, "updates": updates, "wall_s": wall_s,
          "start": pick(first[0], keys),  # the warmed-up policy, before any stage
          "rl_start": pick(rl_evals[0], keys),  # after the world-model stage (the same as start for task RL alone)
          "final": pick(rl_evals[-1], keys),
          "pre_stage_updates": first[-1]["step"] if pre is not None else 0,
          "success_curve": [[r["step"], r["eval/success"]] for r in rl_evals]}


def main_run(name: str, workdir: pathlib.Path, env: str, arm: str, size: str, seed: int, *overrides: str) -> float:
  """One `paw_jax.main` subprocess (resumed if `workdir` holds a checkpoint); returns its wall seconds so far, summed
  over launches."""
  command = [sys.executable, "-m", "paw_jax.main", f"--config={ROOT / 'configs' / 'rwml.py'}:{spec(env, arm, size)}",
             f"--config.seed={seed}", f"--config.workdir={workdir}", *overrides]
  print(f"\n== {name}, seed {seed}: {' '.join(command[1:])}", flush=True)
  workdir.mkdir(parents=True, exist_ok=True)
  wall_path = workdir / WALL_FILE
  wall_s = json.loads(wall_path.read_text())["wall_s"] if wall_path.is_file() else 0.0
  start = time.perf_counter()
  status = subprocess.run(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False).returncode
  wall_s += time.perf_counter() - start
  wall_path.write_text(json.dumps({"wall_s": wall_s}))
  if status:
    raise RuntimeError(f"{name}, seed {seed}: paw_jax.main exited with status {status} (workdir {workdir})")
  return wall_s


def warmed_up(env: str, seed: int, size: str, out: pathlib.Path) -> tuple[pathlib.Path, float]:
  """The seed's warmed-up policy (an export) and the warm-up's wall seconds: a task-RL run of 0 updates."""
  workdir = out / f"{env}-{size}" / f"warmup-seed{seed}"
  export = workdir / "hf_export"
  if not export.is_dir():
    main_run("format warm-up", workdir, env, "rl", size, seed, "--config.train.updates=0",
             "--config.train.eval_at_start=False")
  return export, json.loads((workdir / WALL_FILE).read_text())["wall_s"]


def run_arm(env: str, arm: str, seed: int, size: str, out: pathlib.Path, results: pathlib.Path) -> dict[str, Any]:
  """The run's result file, or the run (resumed if it started before) and then its result file. Its wall time
  counts the shared warm-up's."""
  name = f"{arm}-seed{seed}"
  result_path = results / f"{env}-{size}" / f"{name}.json"
  if result_path.is_file():
    return json.loads(result_path.read_text())
  start, warmup_s = warmed_up(env, seed, size, out)
  workdir = out / f"{env}-{size}" / name
  updates = rl_updates(arm, env, size)
  wall_s = warmup_s + main_run(ARMS[arm], workdir, env, arm, size, seed, f"--config.train.updates={updates}",
                               f"--config.model.path={start}", f"--config.tokenizer.path={start}",
                               "--config.train.format_warmup_steps=0")
  result = summarize(workdir, arm, updates, wall_s)
  result_path.parent.mkdir(parents=True, exist_ok=True)
  result_path.write_text(json.dumps(result, indent=1))
  return result


def share_task_start(done: dict[str, list[dict[str, Any]]]) -> None:
  """Fills a two-stage arm's start success and invalid rate from task RL alone's update-0 eval of the same seed: its
  first stage evaluates the world model only, and both start from the seed's warm-up export, evaluated on the same
  seeded episodes."""
  task_start = {r["seed"]: r["start"] for r in done.get("rl", [])}
  for arm, runs in done.items():
    for r in runs:
      if arm != "rl" and r["seed"] in task_start:
        r["start"].update({k: task_start[r["seed"]][k] for k in ("eval/success", "eval/invalid_rate")})


def fmt(values: Sequence[float | None]) -> str:
  """mean [95% CI] over seeds ('–' when none), or the one value."""
  values = [v for v in values if v is not None]
  if not values:
    return "–"
  if len(values) == 1:
    return f"{values[0]:.3f}"
  return str(stats.bootstrap_mean(np.asarray(values)))


def paired(done: dict[str, list[dict[str, Any]]], a: tuple[str, str], b: tuple[str, str], key: str) -> str:
  """`key` of (arm, where) a minus that of b, paired over the seeds both finished (a table cell)."""
  by_seed = [{r["seed"]: r[where][key] for r in done[arm] if r[where][key] is not None} for arm, where in (a, b)]
  seeds = sorted(set(by_seed[0]) & set(by_seed[1]))
  if not seeds:
    return "–"
  return stats.paired_difference_cell(*(np.array([values[s] for s in seeds]) for values in by_seed))


def report(env: str, size: str, done: dict[str, list[dict[str, Any]]], results: pathlib.Path) -> None:
  pre, rl = budget(env, size)
  print(f"\n{env} ({size}): budget {pre + rl} updates per arm (world-model stage {pre} + task RL {rl}; task RL alone: "
        f"{pre + rl}); mean [95% bootstrap CI] over seeds")
  print("\n| arm | seeds | eval success at the start | after the first stage | final eval success | wall min |")
  print("|---|---:|---:|---:|---:|---:|")
  for arm, runs in done.items():
    col = lambda where, key: fmt([r[where][key] for r in runs])  # noqa: E731
    print(f"| {ARMS[arm]} | {','.join(str(r['seed']) for r in runs)} | {col('start', 'eval/success')} | "
          f"{col('rl_start', 'eval/success') if arm != 'rl' else '–'} | {col('final', 'eval/success')} | "
          f"{fmt([r['wall_s'] / 60 for r in runs])} |")
  print("\n| arm | metric | start | after the first stage | after task RL |")
  print("|---|---|---:|---:|---:|")
  for arm, runs in done.items():
    for key in ("eval/invalid_rate", *WM_KEYS):
      cells = [fmt([r[where][key] for r in runs]) for where in ("start", "rl_start", "final")]
      if arm == "rl":
        cells[1] = "–"
      print(f"| {ARMS[arm]} | {key} | " + " | ".join(cells) + " |")
  two_stage = [arm for arm in done if arm != "rl"]
  print(f"\npaired by seed: mean difference [95% bootstrap CI]; significant only when the CI excludes 0 (and >= "
        f"{stats.MIN_SEEDS_FOR_SIGNIFICANCE} seeds)")
  if "rl" in done and two_stage:
    print("\n| arm − task RL alone | Δ final eval success | Δ final eval/invalid_rate | Δ final eval/wm_ce |")
    print("|---|---:|---:|---:|")
    for arm in two_stage:
      cells = [paired(done, (arm, "final"), ("rl", "final"), key)
               for key in ("eval/success", "eval/invalid_rate", "eval/wm_ce")]
      print(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
  if two_stage:
    print("\n| arm: after the first stage − start | Δ eval success | Δ eval/invalid_rate | Δ eval/wm_reward | "
          "Δ eval/wm_ce |")
    print("|---|---:|---:|---:|---:|")
    for arm in two_stage:
      cells = [paired(done, (arm, "rl_start"), (arm, "start"), key)
               for key in ("eval/success", "eval/invalid_rate", "eval/wm_reward", "eval/wm_ce")]
      print(f"| {ARMS[arm]} | " + " | ".join(cells) + " |")
  curves = {ARMS[arm]: [{"step": step + r["pre_stage_updates"], "eval/success": value}
                          for r in runs for step, value in r["success_curve"]]
            for arm, runs in done.items()}
  png = plot_comparison(curves, "eval/success", results / f"{env}-{size}" / "success.png",
                        title=f"{env}: eval success over the update budget (mean ± std over seeds)")
  print(f"\nplot: {png} (the x axis counts every update of the budget: a two-stage arm's task RL starts late)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--env", default="textworld", help="configs/rwml.py's env")
  parser.add_argument("--size", default="full", choices=("full", "ci"))
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
  parser.add_argument("--arms", default=",".join(ARMS), help=f"some of {','.join(ARMS)}")
  parser.add_argument("--out", default="runs/rwml_bench", help="the runs' workdirs")
  parser.add_argument("--results", default="bench/rwml_results", help="the finished runs' result files and the plot")
  parser.add_argument("--report_only", action="store_true", help="print what finished; train nothing")
  args = parser.parse_args()
  arms, seeds = args.arms.split(","), [int(s) for s in args.seeds.split(",")]
  if set(arms) - set(ARMS):
    parser.error(f"--arms: unknown {sorted(set(arms) - set(ARMS))}; expected some of {', '.join(ARMS)}")
  out, results = (ROOT / args.out).resolve(), (ROOT / args.results).resolve()
  done: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
  for seed in seeds:  # seed-major: every arm's seed 0 before any seed 1
    for arm in arms:
      path = results / f"{args.env}-{args.size}" / f"{arm}-seed{seed}.json"
      if args.report_only and not path.is_file():
        continue
      result = run_arm(args.env, arm, seed, args.size, out, results)
      done[arm].append({**result, "seed": seed})
  done = {arm: runs for arm, runs in done.items() if runs}
  share_task_start(done)
  if done:
    report(args.env, args.size, done, results)
  missing = [f"{arm} seed {seed}" for seed in seeds for arm in arms if seed not in [r["seed"] for r in done.get(arm, [])]]
  print("not run yet: " + (", ".join(missing) if missing else "none"))


if __name__ == "__main__":
  main()
