"""The trainer: a short loop over a training program (paw_jax/programs), with evaluation, metrics and checkpoints;
a run of several stages (`config.stages`) runs one such loop per stage.

A fresh run starts the program (e.g. its warm-up) and checkpoints that as update 0, then evaluates (logged as update
0); a run whose workdir holds a checkpoint restores it instead, after checking that its config is the saved one, and
cuts the metrics log back to the restored update. The final policy is exported as a HF directory, written to a
temporary directory and renamed, so a killed export leaves none.
"""
from __future__ import annotations

import os

from etils import epath
from flax import nnx

from paw_jax import multihost
from paw_jax.checkpoint import Checkpointer
from paw_jax.config import EXPORT_DIR, Config, stage_configs
from paw_jax.metrics import METRICS_FILE, MetricsWriter, progress, read_metrics
from paw_jax.models import hf_io
from paw_jax.programs import program_class
from paw_jax.run import Run


def train(config: Config) -> dict[str, float]:
  """Runs (or resumes) each stage of `config.stages` in turn; returns the last stage's last evaluation metrics.

  A stage before the last is done when its exported policy is in its workdir: a run launched again skips it."""
  stages = stage_configs(config)
  for stage in stages[:-1]:
    done = epath.Path(stage.workdir) / EXPORT_DIR
    print(f"stage {stage.stages[0]}: {'done, skipped' if done.is_dir() else 'running'} ({stage.workdir})", flush=True)
    if not done.is_dir():
      train_stage(stage)
  if len(stages) > 1:
    print(f"stage {stages[-1].stages[0]}: running ({stages[-1].workdir})", flush=True)
  return train_stage(stages[-1])


def train_stage(config: Config) -> dict[str, float]:
  """Runs (or resumes) one program; returns the last evaluation's metrics."""
  t = config.train
  checkpointer = Checkpointer(config.workdir, keep=t.keep_checkpoints, save_every=t.checkpoint_every)
  restored = checkpointer.latest_step()
  run = Run.open(config, resuming=restored is not None)
  writer = MetricsWriter(run.workdir, keep_through=restored if restored is not None else -1)
  last_eval = latest_eval(run.workdir)
  with run.env_pool() as pool:
    program = program_class(config.stages[0])(run, pool)
    if restored is None:
      program.start()
      checkpointer.save(0, program.learner.states(), {"next_update": 0}, force=True)  # the warm-up's end
      start_update = 0
    else:
      program.build()
      states, meta = checkpointer.restore(multihost.abstract(program.learner.states()))
      program.learner.load_states(states)
      start_update = int(meta["next_update"])
      print(f"resumed from {checkpointer.directory} at update {start_update}")
    if start_update == 0 and t.eval_at_start and not last_eval:  # the curve's start: the policy RL starts from
      last_eval = program.evaluate()
      writer.write(0, last_eval)
    bar = progress(t.updates, initial=start_update, desc="updates")
    bar.update(last_eval, steps=0)
    for update_index in range(start_update, t.updates):
      metrics = program.update(update_index)
      last = update_index + 1 == t.updates
      if (update_index + 1) % t.eval_every == 0 or last:
        last_eval = program.evaluate()
        metrics.update(last_eval)
      writer.write(update_index + 1, metrics)
      checkpointer.save(update_index + 1, program.learner.states(), {"next_update": update_index + 1}, force=last)
      bar.update(metrics)
    bar.close()
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if t.export_hf:
    export(run, program.learner.params, run.workdir / EXPORT_DIR)
  return last_eval


def export(run: Run, params, out_dir: str | os.PathLike) -> None:
  """The policy and tokenizer as a HF directory: written beside `out_dir` and renamed into place when complete.
  Several processes: every one gathers the tensors with the others; process 0 writes."""
  out_dir = epath.Path(out_dir)
  tmp = out_dir.with_name(out_dir.name + ".tmp")
  if multihost.is_main():
    tmp.rmtree(missing_ok=True)  # a killed export's leftovers
  hf_io.save_model(nnx.merge(run.graphdef, params), tmp)
  if multihost.is_main():
    run.tokenizer.save(tmp)
    out_dir.rmtree(missing_ok=True)
    tmp.rename(out_dir)
  multihost.sync("export")  # the stage is done for every process once its export is in place


def latest_eval(workdir: epath.Path) -> dict[str, float]:
  """The eval metrics last logged in `workdir` ({} if none): what a run resumed at its final update returns (a
  metric logged as null, a NaN, is NaN again)."""
  records = read_metrics(workdir) if (workdir / METRICS_FILE).is_file() else []
  evals = [r for r in records if any(k.startswith("eval/") for k in r)]
  return {k: float("nan") if v is None else v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}
