"""RWML: each triplet's G predictions form a GRPO group (numpy re-derivation), and the CI-sized pipeline
(configs/rwml.py:ci) runs end to end — collect, SFT, filter, RWML, task RL — raises the held-out world-model reward,
leaves every stage's output in the workdir and, launched again, skips what is done."""
import importlib.util
import json
import pathlib

import numpy as np
import pytest

from paw_jax import triplets as triplet_store
from paw_jax.algos.advantages import AdvantageConfig, compute_advantages
from paw_jax.batch import trajectories
from paw_jax.config import from_configdict
from paw_jax.metrics import read_metrics
from paw_jax.programs.rwml import FILTER_REPORT, FILTERED_FILE, TRAIN_FILE, VALIDATION_FILE, one_turn_episodes
from paw_jax.train import train
from paw_jax.triplets import Triplet

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_each_triplet_is_a_group_of_one_turn_episodes_with_grpo_advantages():
  triplets = [Triplet("frozenlake", "train", seed, 0, 0, "t", (), f"o{seed}", "up", "o2") for seed in (4, 9)]
  reward_N = np.array([1, 0, 0, 1, 0, 0, 0, 1], np.float32)  # G = 4 predictions of each triplet
  samples = [{"tokens": np.array([n]), "logprobs": np.zeros(1), "entropy": np.zeros(1)} for n in range(8)]
  turns, episodes = one_turn_episodes(triplets, [[1, 2]] * 8, samples, reward_N, group_size=4, params_version=3)
  assert [(t.group_id, t.traj_id) for t in turns] == [(g, i) for g in range(2) for i in range(4)]
  assert all(t.done and t.step == 0 and t.params_version == 3 for t in turns)
  assert [e.task.seed for e in episodes] == [4] * 4 + [9] * 4 and [e.won for e in episodes] == list(reward_N > 0)
  advantage_N = compute_advantages("grpo", trajectories(turns), AdvantageConfig()).advantage_B
  expected = []
  for group in reward_N.reshape(2, 4):
    expected += list((group - group.mean()) / (group.std(ddof=1) + 1e-6))
  np.testing.assert_allclose(advantage_N, expected, rtol=1e-6)


def rwml_config(arg: str):
  spec = importlib.util.spec_from_file_location("rwml_config", ROOT / "configs" / "rwml.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("rwml_ci")
  c = rwml_config("ci")
  c.workdir = str(workdir)
  config = from_configdict(c)
  return config, workdir, train(config)


def test_the_chained_pipeline_leaves_every_stage_in_its_workdir(ci_run):
  config, workdir, last_eval = ci_run
  stage = workdir / "rwml"
  train_split = triplet_store.load(stage / TRAIN_FILE, "frozenlake")
  validation = triplet_store.load(stage / VALIDATION_FILE, "frozenlake")
  assert train_split and validation
  assert not {(t.split, t.task_seed) for t in train_split} & {(t.split, t.task_seed) for t in validation}
  report = json.loads((stage / FILTER_REPORT).read_text())
  kept = triplet_store.load(stage / FILTERED_FILE, "frozenlake")
  assert len(kept) == report["kept"] >= report["fitting"] - report["easy"]  # every hard triplet is kept
  assert (stage / "hf_export" / "config.json").is_file()
  rl = read_metrics(workdir / "rl")
  assert rl[-1]["step"] == config.train.updates and 0.0 <= last_eval["eval/success"] <= 1.0
  assert {"eval/wm_ce", "eval/wm_ns_acc", "eval/wm_reward", "rollout/invalid_rate"} <= set().union(*rl)


def test_rwml_raises_the_held_out_similarity_reward(ci_run):
  _, workdir, _ = ci_run
  evals = [r for r in read_metrics(workdir / "rwml") if "eval/wm_reward" in r]
  updates = [r for r in read_metrics(workdir / "rwml") if "rwml/reward" in r]
  assert [r["step"] for r in evals] == [0, 3, 6]
  assert evals[-1]["eval/wm_reward"] > evals[0]["eval/wm_reward"] + 0.05, evals
  assert all(0 <= r["rwml/parse_rate"] <= 1 and r["train/skipped"] == 0 for r in updates)


def test_a_relaunch_skips_the_finished_stages(ci_run, capsys):
  config, workdir, last_eval = ci_run
  capsys.readouterr()
  np.testing.assert_equal(train(config), last_eval)  # NaN (no parsed prediction) equals NaN
  out = capsys.readouterr().out
  assert f"stage rwml: done, skipped ({workdir / 'rwml'})" in out and "resumed from" in out
