"""End-to-end runs of `python -m paw_jax.main` on the CI-sized default config, each in its own process on one CPU
device (as a user's run): a resumed run replays the uninterrupted one, a kill between logging and checkpointing
leaves each update logged once, a resume with another config is refused, a killed export leaves no partial export,
every metric of the metrics contract is emitted with a quiet terminal, and a short seeded run improves."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from flax import nnx

from paw_jax import train as train_lib
from paw_jax.metrics import METRICS
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig
from paw_jax.models.tokenizer import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("--config.model.scratch.hidden_size=64", "--config.model.scratch.intermediate_size=128",
        "--config.model.scratch.num_layers=1", "--config.algo.groups_per_update=2", "--config.algo.group_size=4",
        "--config.train.format_warmup_steps=2", "--config.train.format_warmup_episodes=16",
        "--config.train.eval_every=100", "--config.train.eval_episodes=4", "--config.train.checkpoint_every=2")


def run_main(workdir: pathlib.Path, *overrides: str, status: int = 0) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, not the suite's 8 virtual ones
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  result = subprocess.run([sys.executable, "-m", "paw_jax.main", "--config=configs/default.py:ci",
                           f"--config.workdir={workdir}", "--config.train.export_hf=False", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True)
  assert result.returncode == status, result.stderr[-3000:]
  return result


def metric_lines(workdir: pathlib.Path) -> dict[int, dict]:
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  steps = [m["step"] for m in lines]
  assert len(steps) == len(set(steps)), f"an update logged twice: {steps}"
  timeless = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
  return {m["step"]: timeless(m) for m in lines}


def assert_same_metrics(a: dict, b: dict) -> None:
  """b has a's steps and, at each, a's metrics with a's values (b may have evaluated where a did not)."""
  assert sorted(a) == sorted(b)
  for step in a:
    assert a[step].keys() <= b[step].keys(), (step, a[step].keys() - b[step].keys())
    for key, value in a[step].items():
      np.testing.assert_allclose(b[step][key], value, rtol=1e-5, atol=1e-6, err_msg=f"{key} at {step}")


def emitted(workdir: pathlib.Path) -> set[str]:
  return {key for record in metric_lines(workdir).values() for key in record}


def assert_contract_emitted(keys: set[str], conditions: set[str]) -> None:
  """Every metric the plot draws or the bar shows, under these settings, is in the log."""
  import fnmatch
  for metric in METRICS:
    if metric.when in conditions and not metric.pattern.startswith("time/"):
      assert fnmatch.filter(keys, metric.pattern), f"{metric.pattern} ({metric.when or 'always'}) was not emitted"


@pytest.mark.parametrize("algo", ["gigpo", "ppo"])  # ppo: its critic is checkpointed too
def test_resumed_run_replays_the_uninterrupted_run(tmp_path, algo):
  args = (*TINY, f"--config.algo.name={algo}", "--config.algo.loss.kl_coef=0.01")
  run_main(tmp_path / "straight", *args, "--config.train.updates=3")
  run_main(tmp_path / "resumed", *args, "--config.train.updates=2")  # ends after update 2, its checkpoint
  run_main(tmp_path / "resumed", *args, "--config.train.updates=3")  # a new process: restore, go on
  straight = metric_lines(tmp_path / "straight")
  assert sorted(straight) == [0, 1, 2, 3]  # 0: the evaluation before RL
  assert_same_metrics(straight, metric_lines(tmp_path / "resumed"))
  assert_contract_emitted(emitted(tmp_path / "straight"), {"", "paw", "kl"} | ({"ppo"} if algo == "ppo" else set()))
  if algo == "gigpo":
    # Killed after logging update 3 but before its checkpoint was committed: the restart resumes at 2, redoes 3.
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "3")
    result = run_main(tmp_path / "resumed", *args, "--config.train.updates=3")
    assert "resumed from" in result.stdout and "at update 2" in result.stdout
    assert_same_metrics(straight, metric_lines(tmp_path / "resumed"))
    # A resume with another setting is refused with the field named, before anything is built.
    result = run_main(tmp_path / "resumed", *args, "--config.train.updates=4", "--config.optim.learning_rate=2e-3",
                      status=2)
    assert result.stderr.count("\n") == 1 and "optim.learning_rate: 0.001 -> 0.002" in result.stderr


def test_the_warm_up_end_is_checkpointed(tmp_path):
  first = run_main(tmp_path, *TINY, "--config.train.updates=0")  # warm-up, checkpoint 0, evaluation
  assert "format warm-up: 2 steps" in first.stdout
  second = run_main(tmp_path, *TINY, "--config.train.updates=1")
  assert "resumed from" in second.stdout and "at update 0" in second.stdout
  assert "format warm-up" not in second.stdout  # not redone
  assert sorted(metric_lines(tmp_path)) == [0, 1]  # the evaluation at 0 is logged once


def test_short_seeded_default_run_improves_with_a_quiet_terminal(tmp_path):
  """The CI-sized default (`configs/default.py:ci`) against its own start: the evaluation before RL (update 0)."""
  result = run_main(tmp_path)
  lines = metric_lines(tmp_path)
  updates = max(lines)
  start, final = lines[0]["eval/success"], lines[updates]["eval/success"]
  rollouts = [lines[u]["rollout/success"] for u in range(1, updates + 1)]
  assert final >= start + 0.15, (start, final)
  assert np.mean(rollouts[-2:]) >= rollouts[0] + 0.15, rollouts
  assert_contract_emitted(emitted(tmp_path), {"", "paw"})
  terminal = result.stdout + result.stderr
  library_info = [line for line in terminal.splitlines() if line[:1] == "I" and line[1:5].isdigit()]
  assert not library_info, library_info[:3]  # absl-formatted INFO lines (orbax, jax)
  bar = terminal.replace("\r", "\n").splitlines()
  assert any(line.startswith("updates:") and "succ=" in line and "eval=" in line for line in bar)


def test_export_loads_back_and_a_killed_export_leaves_none(tmp_path, monkeypatch):
  cfg = ModelConfig(model_type="qwen3", vocab_size=300, hidden_size=16, intermediate_size=32, num_layers=2,
                    num_heads=2, num_kv_heads=1, head_dim=8)
  rng = np.random.RandomState(0)  # random params without Decoder's jitted init (seconds on a busy CPU)
  shapes = nnx.to_pure_dict(nnx.state(hf_io.abstract_model(cfg), nnx.Param))
  graphdef, params = nnx.split(hf_io.model_from_params(
      cfg, jax.tree.map(lambda s: rng.randn(*s.shape).astype(s.dtype), shapes)))
  run = SimpleNamespace(graphdef=graphdef, tokenizer=Tokenizer.train_bpe(["up down left right"] * 8, vocab_size=300))

  def killed(out_dir):
    raise KeyboardInterrupt  # the process dies after the weights, before the tokenizer

  monkeypatch.setattr(run.tokenizer, "save", killed)
  with pytest.raises(KeyboardInterrupt):
    train_lib.export(run, params, tmp_path / "hf_export")
  assert not (tmp_path / "hf_export").exists()
  monkeypatch.undo()
  train_lib.export(run, params, tmp_path / "hf_export")  # the next export clears the leftovers and lands whole
  assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_export"]
  out = tmp_path / "hf_export"
  assert (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
  reloaded = hf_io.model_params(hf_io.load_model(out))
  jax.tree.map(np.testing.assert_array_equal, reloaded, nnx.to_pure_dict(params))
