"""Training rows on real tokenized turns: the three masks, causal independence of the action from o_{t+1},
trainer log-probs equal sampler log-probs, and exact micro-batch accumulation in the jitted update."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from paw_jax.algos.advantages import AdvantageConfig
from paw_jax.algos.losses import LossConfig, total_loss
from paw_jax.algos.paw import PawConfig
from paw_jax.batching import BatchConfig, build_batch, micro_batches, pack_rows
from paw_jax.envs import make
from paw_jax.envs.base import Task
from paw_jax.envs.pool import EnvPool
from paw_jax.models.config import ModelConfig
from paw_jax.models.transformer import Decoder
from paw_jax.prompts import PromptConfig
from paw_jax.rollout import run_episodes
from paw_jax.sampling import Sampler, SamplingConfig
from paw_jax.scratch import train_env_tokenizer
from paw_jax.train_step import OptimConfig, init_state, jit_logprobs, jit_update, make_optimizer, rl_loss, sft_loss

PROMPT = PromptConfig(history=1, think=False)
BATCH = BatchConfig(max_len=512, max_obs_tokens=40, micro_batch=4)


@pytest.fixture(scope="module")
def setup():
  env = make("frozenlake", max_steps=4)
  tokenizer = train_env_tokenizer(env, PROMPT, vocab_size=400, episodes=30, seed=0)
  cfg = ModelConfig("llama", tokenizer.vocab_size, 64, 128, 2, 4, 2, 16, tie_word_embeddings=True)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  sampler = Sampler(nnx.graphdef(model), tokenizer.token_bytes(), tokenizer.stop_token_ids, tokenizer.pad_token_id,
                    max_prompt_len=256, vocab_size=cfg.vocab_size)
  with EnvPool("frozenlake", 8, {"max_steps": 4}, in_process=True) as pool:
    turns, episodes, _ = run_episodes(pool, type(env), sampler, nnx.state(model), tokenizer,
                                      [Task("train", 0), Task("train", 1)], 4, PROMPT,
                                      SamplingConfig(temperature=1.0, max_new_tokens=6), jax.random.key(0))
  return tokenizer, model, turns, episodes


def test_masks_cover_exactly_response_and_observation(setup):
  tokenizer, _, turns, _ = setup
  batch = pack_rows(turns, tokenizer, BATCH)
  header_len = len(tokenizer.encode(BATCH.obs_header))
  for b, turn in enumerate(turns):
    tokens = batch["tokens_BxT"][b]
    p, a = len(turn.prompt_ids), len(turn.response_ids)
    assert tokens[:p].tolist() == turn.prompt_ids
    assert np.flatnonzero(batch["action_mask_BxT"][b]).tolist() == list(range(p, p + a))
    assert tokens[batch["action_mask_BxT"][b]].tolist() == turn.response_ids.tolist()
    obs_ids = tokenizer.encode(turn.next_observation)[:BATCH.max_obs_tokens] if turn.next_observation else []
    assert tokens[batch["obs_mask_BxT"][b]].tolist() == obs_ids
    if obs_ids:  # the header sits between response and observation, as context
      assert np.flatnonzero(batch["obs_mask_BxT"][b])[0] == p + a + header_len
    assert not (batch["action_mask_BxT"][b] & batch["obs_mask_BxT"][b]).any()
    np.testing.assert_array_equal(batch["old_logp_BxT"][b, p:p + a], turn.logprobs)
  assert len(batch["valid_B"]) % BATCH.micro_batch == 0 and batch["valid_B"].sum() == len(turns)
  assert not batch["mask_BxT"][len(turns):].any()
  base = pack_rows(turns, tokenizer, dataclasses.replace(BATCH, with_observation=False))  # without PaW
  np.testing.assert_array_equal(base["mask_BxT"].sum(1)[:len(turns)],
                                [len(t.prompt_ids) + len(t.response_ids) for t in turns])


def test_rl_loss_touches_action_tokens_and_wm_loss_only_selected_observations(setup):
  tokenizer, _, turns, episodes = setup
  batch, metrics = build_batch(turns, episodes, tokenizer, BATCH, "grpo", AdvantageConfig(), PawConfig(alpha=0.5),
                               r_max=10.0)
  batch["ref_logp_BxT"] = batch["old_logp_BxT"]
  # Away from the old log-probs (ratios != 1); observation tokens at p = 0.1 < rho, so CMAE does not mask them.
  logp_BxT = jnp.asarray(np.where(batch["obs_mask_BxT"], np.log(0.1), batch["old_logp_BxT"] - 0.3), jnp.float32)
  batch["advantage_B"] = np.where(batch["valid_B"], np.linspace(-1, 1, len(batch["valid_B"])), 0).astype(np.float32)
  for wm_loss in (None, "cmae"):
    cfg = LossConfig(kl_coef=0.01, wm_loss=wm_loss)
    grad = jax.grad(lambda lp: total_loss(lp, batch, cfg, batch["action_mask_BxT"].sum())[0])(logp_BxT)
    touched = np.asarray(grad) != 0
    selected_obs = batch["obs_mask_BxT"] & (batch["wm_weight_B"] > 0)[:, None]
    allowed = batch["action_mask_BxT"] | (selected_obs if wm_loss else False)
    assert not (touched & ~allowed).any()
    assert touched[batch["action_mask_BxT"]].mean() > 0.9
    if wm_loss:
      assert touched[selected_obs].any() and metrics["paw/selected"] > 0


def test_action_logprobs_do_not_change_when_observation_is_appended(setup):
  tokenizer, model, turns, _ = setup
  batch = pack_rows(turns, tokenizer, BATCH)
  no_obs = pack_rows([dataclasses.replace(t, next_observation="") for t in turns], tokenizer, BATCH)
  logprobs = jit_logprobs(nnx.graphdef(model))
  with_obs_BxT = np.asarray(logprobs(nnx.state(model), batch["tokens_BxT"], batch["mask_BxT"]))
  without_BxT = np.asarray(logprobs(nnx.state(model), no_obs["tokens_BxT"], no_obs["mask_BxT"]))
  mask = batch["action_mask_BxT"]
  np.testing.assert_allclose(with_obs_BxT[mask], without_BxT[no_obs["action_mask_BxT"]], atol=1e-6)


def test_trainer_logprobs_equal_sampler_logprobs(setup):
  tokenizer, model, turns, _ = setup
  batch = pack_rows(turns, tokenizer, BATCH)
  trainer_BxT = np.asarray(jit_logprobs(nnx.graphdef(model))(nnx.state(model), batch["tokens_BxT"],
                                                              batch["mask_BxT"]))
  mask = batch["action_mask_BxT"]
  np.testing.assert_allclose(trainer_BxT[mask], batch["old_logp_BxT"][mask], atol=1e-5)


def test_micro_batch_accumulation_is_exact_and_nan_updates_are_skipped(setup):
  tokenizer, model, turns, episodes = setup
  batch, _ = build_batch(turns, episodes, tokenizer, BATCH, "grpo", AdvantageConfig(), PawConfig(), r_max=10.0)
  batch["ref_logp_BxT"] = batch["old_logp_BxT"]
  optimizer = make_optimizer(OptimConfig(learning_rate=1e-2))
  update = jit_update(nnx.graphdef(model), optimizer, rl_loss(LossConfig(kl_coef=0.01)))
  rows = len(batch["valid_B"])
  params = {}
  for micro in (BATCH.micro_batch, rows):
    state = init_state(jax.tree.map(jnp.copy, nnx.state(model)), optimizer, with_ref=False)
    state, metrics = update(state, micro_batches(batch, micro))
    params[micro] = state.params
    assert int(state.skipped) == 0 and int(state.step) == 1
  for a, b in zip(jax.tree.leaves(params[BATCH.micro_batch]), jax.tree.leaves(params[rows])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)

  poisoned = dict(batch, advantage_B=np.where(batch["valid_B"], np.nan, 0).astype(np.float32))
  state = init_state(jax.tree.map(jnp.copy, nnx.state(model)), optimizer, with_ref=False)
  before = jax.tree.map(np.asarray, state.params)
  state, metrics = update(state, micro_batches(poisoned, BATCH.micro_batch))
  assert int(state.skipped) == 1 and int(state.step) == 0 and float(metrics["skipped"]) == 1.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_warmup_loss_is_action_nll_plus_weighted_next_observation_ce(setup):
  tokenizer, model, turns, _ = setup
  batch = pack_rows(turns, tokenizer, BATCH)
  batch["wm_weight_B"] = np.where(batch["valid_B"], np.linspace(0.1, 1.0, len(batch["valid_B"])), 0).astype(np.float32)
  graphdef, params = nnx.split(model)
  logp_BxT = np.asarray(jit_logprobs(graphdef)(params, batch["tokens_BxT"], batch["mask_BxT"]), np.float64)
  action, obs = batch["action_mask_BxT"], batch["obs_mask_BxT"]
  ce_B = -(logp_BxT * obs).sum(1) / np.maximum(obs.sum(1), 1)
  expected = -logp_BxT[action].sum() / action.sum() + (batch["wm_weight_B"] * ce_B).sum()
  counts = {"action_tokens": action.sum(), "rows": batch["valid_B"].sum()}
  loss, metrics = sft_loss("ce")(graphdef, params, batch, counts)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["sft/nll"]), -logp_BxT[action].sum() / action.sum(), rtol=1e-5)
  assert float(sft_loss()(graphdef, params, batch, counts)[0]) == float(metrics["sft/nll"])  # format only
