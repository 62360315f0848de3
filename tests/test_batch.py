"""Training rows and `prepare` on real tokenized turns: the three masks, causal independence of the action from
o_{t+1}, the fixed order of preparation (device passes before credit, a seeded shuffle, Eq. 11's balance in every
optimizer step, a partial last mini-batch included), the placebo's shuffled targets, separate sampler / trainer
log-probs and host-only fields kept off the device."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from paw_jax.algos.losses import LossConfig, total_loss
from paw_jax.algos.paw import PawConfig, paw_weights, shuffled_observations
from paw_jax.batch import PLACEBO_STREAM, TrainBatch, micro_batches, pack_rows, prepare
from paw_jax.config import AlgoConfig, BatchConfig, Config
from paw_jax.envs.base import Task
from paw_jax.envs.frozenlake import FrozenLakeEnv
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
  # Eq. 11's weights of the pool (one step), times T / T_m for the mini-batch m each row lands in.
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
      group_id_B=group_B, traj_id_B=traj_B, episode_return_B=return_B, step_B=np.zeros(packed.num_rows, int))
  tokens_B = batch.action_mask_BxT.sum(axis=1)
  step_tokens = [tokens_B[start:start + BATCH.mini_batch].sum() for start in range(0, batch.num_rows, BATCH.mini_batch)]
  assert len(step_tokens) > 1
  share_B = np.array([tokens_B.sum() / step_tokens[i // BATCH.mini_batch] for i in range(batch.num_rows)])
  np.testing.assert_allclose(batch.wm_weight_B, weight_B[order] * share_B, rtol=1e-6)
  assert metrics == expected_metrics


def test_every_optimizer_step_keeps_eq11_balance_with_a_partial_last_mini_batch(frozenlake_rollout):
  """Each mini-batch's loss (the real `total_loss` on its rows) is T / T_m times its rows' part of the update's
  L = L_RL + Eq. 11's WM term, derived here in numpy: the RL : WM ratio holds in every step, the partial last one
  included, and the steps weighted by their token shares add up to L."""
  tokenizer, _, turns, episodes = frozenlake_rollout
  num_rows = pack_rows(turns, tokenizer, BATCH, with_observation=True).num_rows
  mini = next(m for m in range(8, num_rows, 4) if num_rows % m and num_rows // m >= 2)  # a partial last one
  config = dataclasses.replace(CONFIG, batch=dataclasses.replace(BATCH, mini_batch=mini))
  batch, _ = prepare(turns, episodes, tokenizer, config, 10.0, lambda rows: None, update_index=1)
  # Eq. 11's weights (one step over the whole pool), put in the batch's shuffled order.
  eq11_cfg = dataclasses.replace(config, batch=dataclasses.replace(BATCH, mini_batch=num_rows))
  eq11_B = prepare(turns, episodes, tokenizer, eq11_cfg, 10.0, lambda rows: None, update_index=1)[0].wm_weight_B
  # log p = old log p on the actions (ratio 1: a token's PPO loss is −A), p ∈ [0.02, 0.5] on the observations.
  rng = np.random.default_rng(0)
  logp_BxT = np.where(batch.obs_mask_BxT, np.log(rng.uniform(0.02, 0.5, batch.obs_mask_BxT.shape)),
                      batch.sampler_logp_BxT).astype(np.float32)
  rl_B = -batch.advantage_B * batch.action_mask_BxT.sum(axis=1)  # Σ over a row's action tokens of −A
  wm_B = np.zeros(batch.num_rows)  # the row's clipped MAE, in numpy
  for b in range(batch.num_rows):
    p = np.exp(logp_BxT[b][batch.obs_mask_BxT[b]].astype(np.float64))
    wm_B[b] = np.sum((1 - p) * (p <= 0.2)) / max(len(p), 1)
  tokens = batch.action_mask_BxT.sum()
  full = rl_B.sum() / tokens + np.dot(eq11_B, wm_B)  # the update's L

  cfg = LossConfig(kl_coef=0.0)
  steps = list(batch.mini_batches(mini, BATCH.micro_batch, "sampler"))
  assert len(steps) == -(-batch.num_rows // mini) and batch.num_rows % mini
  weighted = 0.0
  for m, inputs in enumerate(steps):
    inputs = {k: v.reshape(-1, *v.shape[2:]) for k, v in inputs.items()}
    real = slice(m * mini, min((m + 1) * mini, batch.num_rows))
    logp = np.zeros_like(inputs["old_logp_BxT"])
    logp[:real.stop - real.start] = logp_BxT[real]
    step_tokens = inputs["action_mask_BxT"].sum()
    loss, metrics = total_loss(jnp.asarray(logp), inputs, cfg, step_tokens, wm_loss="cmae")
    rl_part, wm_part = rl_B[real].sum() / tokens, np.dot(eq11_B[real], wm_B[real])  # the rows' parts of L
    assert float(metrics["policy_loss"]) == pytest.approx(rl_part * tokens / step_tokens, rel=1e-5)
    assert float(metrics["wm/weighted_loss"]) == pytest.approx(wm_part * tokens / step_tokens, rel=1e-5)
    weighted += float(loss) * step_tokens / tokens
  assert weighted == pytest.approx(full, rel=1e-5)


def test_placebo_is_paw_on_next_observations_shuffled_across_the_update(frozenlake_rollout):
  tokenizer, _, turns, episodes = frozenlake_rollout
  # A random model's replies are all invalid (one next observation for every row): give the rows distinct ones, real
  # maps of other tasks, and two rows none (terminal steps).
  env = FrozenLakeEnv(max_steps=4)
  turns = [dataclasses.replace(t, next_observation="" if i in (5, 9) else env.reset(Task("eval", i))[0])
           for i, t in enumerate(turns)]
  placebo_cfg = dataclasses.replace(CONFIG, paw=dataclasses.replace(CONFIG.paw, targets="shuffled"))
  placebo, placebo_metrics = prepare(turns, episodes, tokenizer, placebo_cfg, 10.0, lambda rows: None, update_index=2)
  true, _ = prepare(turns, episodes, tokenizer, CONFIG, 10.0, lambda rows: None, update_index=2)
  # The same actions, prompts and credit; other rows' observations after them.
  np.testing.assert_array_equal(placebo.action_mask_BxT, true.action_mask_BxT)
  np.testing.assert_array_equal(placebo.tokens_BxT[placebo.action_mask_BxT], true.tokens_BxT[true.action_mask_BxT])
  np.testing.assert_array_equal(placebo.advantage_B, true.advantage_B)
  def observations(batch):
    return [tuple(batch.tokens_BxT[b][batch.obs_mask_BxT[b]]) for b in range(batch.num_rows)]
  assert sorted(observations(placebo)) == sorted(observations(true))
  assert sum(a != b for a, b in zip(observations(placebo), observations(true))) > len(turns) // 2
  assert [len(o) for o in observations(placebo)].count(0) == [len(o) for o in observations(true)].count(0)
  # Exactly PaW on turns whose next observations were shuffled with the update's placebo stream.
  shuffled = shuffled_observations([t.next_observation for t in turns],
                                   np.random.default_rng([CONFIG.seed, 2, PLACEBO_STREAM]))
  expected, expected_metrics = prepare([dataclasses.replace(t, next_observation=o) for t, o in zip(turns, shuffled)],
                                       episodes, tokenizer, CONFIG, 10.0, lambda rows: None, update_index=2)
  for field in ("tokens_BxT", "obs_mask_BxT", "wm_weight_B", "advantage_B"):
    np.testing.assert_array_equal(getattr(placebo, field), getattr(expected, field))
  assert placebo_metrics == expected_metrics


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
