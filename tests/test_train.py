"""End-to-end runs of `python -m paw_jax.main` on the CI-sized default config, each in its own process on one CPU
device (as a user's run): a run killed after a checkpoint resumes and replays the uninterrupted run, and a short
seeded run improves its success rate. Also: the host loop reports each kind of episode error once."""
import json
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from paw_jax.envs.base import Task
from paw_jax.rollout import Episode
from paw_jax.train import report_errors

ROOT = pathlib.Path(__file__).resolve().parents[1]
TINY = ("--config.model.scratch.hidden_size=64", "--config.model.scratch.intermediate_size=128",
        "--config.model.scratch.num_layers=1", "--config.algo.groups_per_update=2", "--config.algo.group_size=4",
        "--config.train.format_warmup_steps=2", "--config.train.format_warmup_episodes=16",
        "--config.train.eval_every=100", "--config.train.eval_episodes=4", "--config.train.checkpoint_every=2")


def run_main(workdir: pathlib.Path, *overrides: str) -> None:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, not the suite's 8 virtual ones
  env.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(ROOT / ".jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
  result = subprocess.run([sys.executable, "-m", "paw_jax.main", "--config=configs/default.py:ci",
                           f"--config.workdir={workdir}", "--config.train.export_hf=False", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-3000:]


def metric_lines(workdir: pathlib.Path) -> dict[int, dict]:
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  timeless = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
  return {m["step"]: timeless(m) for m in lines}


@pytest.mark.parametrize("advantage", ["gigpo", "gae"])  # gae: PPO, whose critic is checkpointed too
def test_resumed_run_replays_the_uninterrupted_run(tmp_path, advantage):
  algo = f"--config.algo.advantage={advantage}"
  run_main(tmp_path / "straight", *TINY, algo, "--config.train.updates=3")
  run_main(tmp_path / "resumed", *TINY, algo, "--config.train.updates=2")  # ends after update 2, its checkpoint
  run_main(tmp_path / "resumed", *TINY, algo, "--config.train.updates=3")  # a new process: restore, go on
  straight, resumed = metric_lines(tmp_path / "straight"), metric_lines(tmp_path / "resumed")
  assert sorted(resumed) == sorted(straight) == [0, 1, 2, 3]  # 0: the evaluation before RL
  assert resumed[3].keys() == straight[3].keys()
  for key, value in straight[3].items():
    np.testing.assert_allclose(resumed[3][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
  if advantage == "gae":
    assert {"critic/value_loss", "critic/grad_norm"} <= straight[3].keys()


def test_short_seeded_default_run_improves_its_success_rate(tmp_path):
  """The CI-sized default (`configs/default.py:ci`) against its own start: the evaluation before RL (update 0)."""
  run_main(tmp_path)
  lines = metric_lines(tmp_path)
  updates = max(lines)
  start, final = lines[0]["eval/success"], lines[updates]["eval/success"]
  rollouts = [lines[u]["rollout/success"] for u in range(1, updates + 1)]
  assert final >= start + 0.15, (start, final)
  assert np.mean(rollouts[-2:]) >= rollouts[0] + 0.15, rollouts


def test_each_new_kind_of_episode_error_is_printed_once(capsys):
  def episodes(*errors):
    return [Episode(0, i, Task("train", 0), "frozenlake", error=e) for i, e in enumerate(errors)]

  run = SimpleNamespace(reported_errors=set())
  report_errors(run, episodes(None, "prompt too long", "prompt too long", "env crashed"), "rollout")
  report_errors(run, episodes("prompt too long", "env hung"), "eval")
  assert capsys.readouterr().out.splitlines() == [
      "warning: 2 rollout episode(s) ended as failed: prompt too long",
      "warning: 1 rollout episode(s) ended as failed: env crashed",
      "warning: 1 eval episode(s) ended as failed: env hung"]
