"""The world-model eval: a seeded random-play panel saved in the workdir, teacher-forced rows laid out as PaW's training
rows, cross-entropy and accuracy equal to a numpy re-derivation, and sampled predictions scored by the judge."""
import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from paw_jax import triplets as triplet_store
from paw_jax.batch import pack_rows
from paw_jax.envs import make
from paw_jax.next_state import Judge
from paw_jax.rollout import Turn
from paw_jax.run import Run
from paw_jax.scratch import reply_text
from paw_jax.triplets import random_play_triplets
from paw_jax.wm_eval import PANEL_FILE, WorldModelEval, load_or_build_panel, target_rows
from tiny_run import tiny_run_config


def test_the_panel_is_seeded_random_play_saved_in_the_workdir(tmp_path):
  env = make("frozenlake", size=3, max_steps=4)
  panel = random_play_triplets(env, "frozenlake", "eval", 12, history=1, seed=5)
  assert panel == random_play_triplets(env, "frozenlake", "eval", 12, history=1, seed=5)
  assert panel != random_play_triplets(env, "frozenlake", "eval", 12, history=1, seed=6)
  assert len(panel) == 12 and all(t.split == "eval" and len(t.history) <= 1 for t in panel)
  assert all(t.next_observation.strip() and t.admissible for t in panel)
  config = tiny_run_config(tmp_path)
  built = load_or_build_panel(config, env, tmp_path)
  assert triplet_store.load(tmp_path / PANEL_FILE, "frozenlake") == built == load_or_build_panel(config, None, tmp_path)


def test_target_rows_mark_only_the_target_tokens():
  rows = target_rows([[5, 6, 7], [8]], [[9, 10], [11, 12, 13]], pad_id=0, rows_multiple=4)
  assert rows.tokens_BxT.shape == (4, 64)
  np.testing.assert_array_equal(rows.tokens_BxT[:2, :6], [[5, 6, 7, 9, 10, 0], [8, 11, 12, 13, 0, 0]])
  np.testing.assert_array_equal(rows.target_mask_BxT[:2, :6], [[0, 0, 0, 1, 1, 0], [0, 1, 1, 1, 0, 0]])
  assert not rows.mask_BxT[2:].any()


@pytest.fixture(scope="module")
def tiny_eval(tmp_path_factory):
  config = tiny_run_config(tmp_path_factory.mktemp("wm"))
  rwml = dataclasses.replace(config.rwml, panel_size=6, panel_samples=2, similarity="rouge_l", max_new_tokens=16,
                             instruction="Reply with the map as <next_state>map</next_state>.")
  config = dataclasses.replace(config, rwml=rwml)
  run = Run.open(config, resuming=False)
  return run, WorldModelEval.for_run(run)


def test_row_format_is_pa_ws_training_row(tiny_eval):
  """The panel's row-format rows equal `pack_rows` of the same turns, the target mask its observation mask."""
  run, wm = tiny_eval
  rows = wm._rows[""]
  header = run.tokenizer.encode(run.config.batch.obs_header)
  turns = []
  for b, t in enumerate(wm.panel):
    reply = run.tokenizer.encode(reply_text(run.env_cls, t.action)) + [run.tokenizer.eos_token_id]
    prompt_len = int(np.argmax(rows.target_mask_BxT[b])) - len(header) - len(reply)
    turns.append(Turn(0, 0, 0, rows.tokens_BxT[b, :prompt_len].tolist(), np.asarray(reply), np.zeros(len(reply)),
                      np.zeros(len(reply)), t.observation, t.next_observation, 0.0, True, False, 0))
  batch = pack_rows(turns, run.tokenizer, run.config.batch, with_observation=True)
  n, length = len(turns), min(batch.tokens_BxT.shape[1], rows.tokens_BxT.shape[1])
  np.testing.assert_array_equal(batch.tokens_BxT[:n, :length], rows.tokens_BxT[:n, :length])
  np.testing.assert_array_equal(batch.obs_mask_BxT[:n, :length], rows.target_mask_BxT[:n, :length])


def test_ce_and_accuracy_equal_a_numpy_rederivation(tiny_eval):
  run, wm = tiny_eval
  params = run.initial_params
  metrics = wm(params, jax.random.key(0))
  model = nnx.merge(run.graphdef, params)
  for prefix, rows in wm._rows.items():
    tokens, mask, target = rows.tokens_BxT, rows.mask_BxT, rows.target_mask_BxT
    positions = np.broadcast_to(np.arange(tokens.shape[1]), tokens.shape)
    logits, _ = model(tokens[:, :-1], positions[:, :-1], mask[:, :-1])
    logits = np.asarray(logits, np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    read = target[:, 1:]
    nll = -np.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0][read]
    correct = (logits.argmax(-1) == tokens[:, 1:])[read]
    assert metrics[f"eval/wm_{prefix}ce"] == pytest.approx(nll.mean(), rel=1e-5)
    assert metrics[f"eval/wm_{prefix}acc"] == pytest.approx(correct.mean())
  # sampled predictions: an untrained model writes no <next_state> block, so the reward is 0 and so is the parse rate
  assert metrics["eval/wm_reward"] == 0.0 and metrics["eval/wm_parse_rate"] == 0.0
  assert np.isnan(metrics["eval/wm_similarity"])  # no parsed prediction to compare
  again = wm(params, jax.random.key(0))
  assert {k: v for k, v in again.items() if k != "eval/wm_similarity"} == {
      k: v for k, v in metrics.items() if k != "eval/wm_similarity"}


def test_sampled_predictions_are_judged_against_the_real_next_observation(tiny_eval):
  """With a judge that sees every reply as the real next observation, every prediction is rewarded."""
  run, wm = tiny_eval

  class Oracle(Judge):
    def __call__(self, replies, references, tau):
      assert len(replies) == len(references) == 2 * len(wm.panel)
      assert references[::2] == [t.next_observation for t in wm.panel]
      wrapped = [f"<next_state>{r}</next_state>" for r in references]
      return super().__call__(wrapped, references, tau)

  oracle = WorldModelEval(run.config, wm.panel, run.env_cls, run.tokenizer, run.graphdef, run.sampler,
                          Oracle("rouge_l", None, run.tokenizer, 64))
  metrics = oracle(run.initial_params, jax.random.key(0))
  assert metrics["eval/wm_reward"] == 1.0 and metrics["eval/wm_parse_rate"] == 1.0
  assert metrics["eval/wm_similarity"] == 1.0
