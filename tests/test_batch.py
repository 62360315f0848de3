"""Training rows and `prepare` on real tokenized turns: the three masks, causal independence of the action from
o_{t+1}, the fixed order of preparation (device passes before credit, a seeded shuffle, Eq. 11's balance per
mini-batch), separate sampler / trainer log-probs and host-only fields kept off the device."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from paw_jax.algos.losses import LossConfig, total_loss
from paw_jax.algos.paw import PawConfig, paw_weights
from paw_jax.batch import TrainBatch, micro_batches, pack_rows, prepare
from paw_jax.config import AlgoConfig, BatchConfig, Config
from paw_jax.learner import jit_logprobs
from paw_jax.prompts import PromptConfig

BATCH = BatchConfig(max_len=512, max_obs_tokens=40, micro_batch=4, mini_batch=8)
CONFIG = Config(prompt=PromptConfig(history=1, think=False), batch=BATCH, algo=AlgoConfig(name="grpo"),
                paw=PawConfig(alpha=0.5))


def test_masks_cover_exactly_response_and_observation(frozenlake_rollout):
  tokenizer, _, turns, _ = frozenlake_rollout
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  header_len = len(tokenizer.encode(BATCH.obs_header))
  for b, turn in enumerate(turns):
    tokens = batch.tokens_BxT[b]
    p, a = len(turn.prompt_ids), len(turn.response_ids)
    assert tokens[:p].tolist() == turn.prompt_ids
    assert np.flatnonzero(batch.action_mask_BxT[b]).tolist() == list(range(p, p + a))
    assert tokens[batch.action_mask_BxT[b]].tolist() == turn.response_ids.tolist()
    obs_ids = tokenizer.encode(turn.next_observation)[:BATCH.max_obs_tokens] if turn.next_observation else []
    assert tokens[batch.obs_mask_BxT[b]].tolist() == obs_ids
    if obs_ids:  # the header sits between response and observation, as context
      assert np.flatnonzero(batch.obs_mask_BxT[b])[0] == p + a + header_len
    assert not (batch.action_mask_BxT[b] & batch.obs_mask_BxT[b]).any()
    np.testing.assert_array_equal(batch.sampler_logp_BxT[b, p:p + a], turn.logprobs)
    np.testing.assert_array_equal(batch.entropy_BxT[b, p:p + a], turn.entropy)
  assert batch.num_rows % BATCH.micro_batch == 0 and batch.valid_B.sum() == len(turns)
  assert not batch.mask_BxT[len(turns):].any()
  base = pack_rows(turns, tokenizer, BATCH, with_observation=False)  # without PaW
  np.testing.assert_array_equal(base.mask_BxT.sum(1)[:len(turns)],
                                [len(t.prompt_ids) + len(t.response_ids) for t in turns])


def test_prepare_runs_device_passes_first_then_credit_then_a_seeded_shuffle(frozenlake_rollout):
  tokenizer, _, turns, episodes = frozenlake_rollout
  seen = []

  def device_passes(batch: TrainBatch) -> None:  # sees the rows as packed, before any credit or shuffle
    seen.append((batch.advantage_B, batch.wm_weight_B, batch.tokens_BxT.copy()))
    batch.trainer_logp_BxT = batch.sampler_logp_BxT + 1.0

  batch, metrics = prepare(turns, episodes, tokenizer, CONFIG, 10.0, device_passes, update_index=3)
  packed = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  assert seen[0][:2] == (None, None) and (seen[0][2] == packed.tokens_BxT).all()
  order = np.random.default_rng([CONFIG.seed, 3]).permutation(packed.num_rows)
  np.testing.assert_array_equal(batch.tokens_BxT, packed.tokens_BxT[order])
  np.testing.assert_array_equal(batch.trainer_logp_BxT, batch.sampler_logp_BxT + 1.0)  # moved with its row
  # PaW weights of the pool, times the mini-batch count: each optimizer step keeps Eq. 11's RL : WM ratio.
  group_B = np.full(packed.num_rows, -1)
  traj_B = np.full(packed.num_rows, -1)
  group_B[:len(turns)] = [t.group_id for t in turns]
  traj_B[:len(turns)] = [t.traj_id for t in turns]
  returns = {(e.group_id, e.traj_id): e.episode_return for e in episodes}
  return_B = np.zeros(packed.num_rows)
  return_B[:len(turns)] = [returns[(t.group_id, t.traj_id)] for t in turns]
  weight_B, expected_metrics = paw_weights(
      CONFIG.paw, 10.0, token_entropy_BxT=packed.entropy_BxT, sampled_logp_BxT=packed.sampler_logp_BxT,
      action_mask_BxT=packed.action_mask_BxT, obs_mask_BxT=packed.obs_mask_BxT, valid_B=packed.valid_B,
      group_id_B=group_B, traj_id_B=traj_B, episode_return_B=return_B)
  num_mini_batches = -(-packed.num_rows // BATCH.mini_batch)
  assert num_mini_batches > 1
  np.testing.assert_allclose(batch.wm_weight_B, weight_B[order] * num_mini_batches, rtol=1e-6)
  assert metrics == expected_metrics


def test_step_inputs_choose_the_old_logprobs_and_keep_host_fields_on_the_host(frozenlake_rollout):
  tokenizer, _, turns, episodes = frozenlake_rollout

  def device_passes(batch: TrainBatch) -> None:
    batch.trainer_logp_BxT = batch.sampler_logp_BxT - 0.5

  batch, _ = prepare(turns, episodes, tokenizer, CONFIG, 10.0, device_passes, update_index=0)
  for old_logp, expected in (("sampler", batch.sampler_logp_BxT), ("trainer", batch.trainer_logp_BxT)):
    inputs = batch.step_inputs(old_logp)
    np.testing.assert_array_equal(inputs["old_logp_BxT"], expected)
    assert not set(TrainBatch.HOST_ONLY) & set(inputs)
    assert "ref_logp_BxT" not in inputs and "return_B" not in inputs  # not computed: not shipped
  mini = list(batch.mini_batches(BATCH.mini_batch, BATCH.micro_batch, "sampler"))
  assert len(mini) == -(-batch.num_rows // BATCH.mini_batch)
  assert mini[0]["tokens_BxT"].shape[:2] == (BATCH.mini_batch // BATCH.micro_batch, BATCH.micro_batch)
  assert sum(m["valid_B"].sum() for m in mini) == len(turns)  # the last one is padded with empty rows


def test_rl_loss_touches_action_tokens_and_wm_loss_only_selected_observations(frozenlake_rollout):
  tokenizer, _, turns, episodes = frozenlake_rollout
  batch, metrics = prepare(turns, episodes, tokenizer, CONFIG, 10.0, lambda rows: None, update_index=0)
  inputs = batch.step_inputs("sampler")
  inputs["ref_logp_BxT"] = inputs["old_logp_BxT"]
  # Away from the old log-probs (ratios != 1); observation tokens at p = 0.1 < rho, so CMAE does not mask them.
  logp_BxT = jnp.asarray(np.where(batch.obs_mask_BxT, np.log(0.1), batch.sampler_logp_BxT - 0.3), jnp.float32)
  inputs["advantage_B"] = np.where(batch.valid_B, np.linspace(-1, 1, batch.num_rows), 0).astype(np.float32)
  for wm_loss in (None, "cmae"):
    grad = jax.grad(lambda lp: total_loss(lp, inputs, LossConfig(kl_coef=0.01), batch.action_mask_BxT.sum(),
                                          wm_loss=wm_loss)[0])(logp_BxT)
    touched = np.asarray(grad) != 0
    selected_obs = batch.obs_mask_BxT & (batch.wm_weight_B > 0)[:, None]
    allowed = batch.action_mask_BxT | (selected_obs if wm_loss else False)
    assert not (touched & ~allowed).any()
    assert touched[batch.action_mask_BxT].mean() > 0.9
    if wm_loss:
      assert touched[selected_obs].any() and metrics["paw/selected"] > 0


def test_action_logprobs_do_not_change_when_observation_is_appended(frozenlake_rollout):
  tokenizer, model, turns, _ = frozenlake_rollout
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  no_obs = pack_rows([dataclasses.replace(t, next_observation="") for t in turns], tokenizer, BATCH, True)
  logprobs = jit_logprobs(nnx.graphdef(model))
  with_obs_BxT = np.asarray(logprobs(nnx.state(model), batch.tokens_BxT, batch.mask_BxT))
  without_BxT = np.asarray(logprobs(nnx.state(model), no_obs.tokens_BxT, no_obs.mask_BxT))
  np.testing.assert_allclose(with_obs_BxT[batch.action_mask_BxT], without_BxT[no_obs.action_mask_BxT], atol=1e-6)


def test_micro_batches_reshape_and_refuse_a_remainder():
  rows = {"valid_B": np.ones(8, bool), "tokens_BxT": np.arange(24).reshape(8, 3)}
  assert micro_batches(rows, 4)["tokens_BxT"].shape == (2, 4, 3)
  with pytest.raises(ValueError, match="8 rows are not a multiple of micro_batch=3"):
    micro_batches(rows, 3)
