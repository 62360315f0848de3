"""PPO's critic on real tokenized FrozenLake turns: where the value is read, its start from the policy, and a value
update that fits returns with exact micro-batch accumulation."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from paw_jax.batch import micro_batches, pack_rows
from paw_jax.config import BatchConfig, CriticConfig, OptimConfig
from paw_jax.critic import CriticPlugin, critic_from_policy, critic_loss, jit_values
from paw_jax.envs import make
from paw_jax.models.config import ModelConfig
from paw_jax.models.transformer import Decoder
from paw_jax.prompts import PromptConfig
from paw_jax.sharding import make_mesh
from paw_jax.scratch import train_env_tokenizer, warmup_turns
from paw_jax.learner import init_state, jit_update, make_optimizer

PROMPT = PromptConfig(history=1, think=False)
BATCH = BatchConfig(max_len=384, max_obs_tokens=40, micro_batch=4)


@pytest.fixture(scope="module")
def setup():
  env = make("frozenlake", max_steps=4)
  tokenizer = train_env_tokenizer(env, PROMPT, vocab_size=400, episodes=30, seed=0)
  turns = warmup_turns(env, tokenizer, PROMPT, episodes=4, seed=0)[:8]
  cfg = ModelConfig("qwen3", tokenizer.vocab_size, 64, 128, 2, 4, 2, 16, tie_word_embeddings=True)
  policy = Decoder(cfg, rngs=nnx.Rngs(0))
  return tokenizer, policy, turns


def with_random_head(critic, seed=1):
  critic.value_head[...] = jax.random.normal(jax.random.key(seed), critic.value_head.shape)
  critic.value_bias[...] = jnp.asarray(0.3)
  return critic


def test_value_is_read_at_the_last_prompt_token_and_ignores_what_follows(setup):
  tokenizer, policy, turns = setup
  critic = with_random_head(critic_from_policy(policy))
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True).step_inputs("sampler")
  value_B = np.asarray(jit_values(nnx.graphdef(critic))(nnx.state(critic), batch))
  for b, turn in enumerate(turns):
    prompt_BxT = jnp.asarray([turn.prompt_ids])
    positions = jnp.arange(prompt_BxT.shape[1])[None]
    hidden = critic.backbone.hidden_states(prompt_BxT, positions, jnp.ones_like(prompt_BxT, bool))[0]
    expected = float(hidden[0, -1] @ critic.value_head[...] + 0.3)
    np.testing.assert_allclose(value_B[b], expected, rtol=1e-5, atol=1e-5)
  no_obs = pack_rows([dataclasses.replace(t, next_observation="") for t in turns], tokenizer, BATCH,
                     True).step_inputs("sampler")
  value_no_obs_B = np.asarray(jit_values(nnx.graphdef(critic))(nnx.state(critic), no_obs))
  np.testing.assert_allclose(value_no_obs_B[:len(turns)], value_B[:len(turns)], atol=1e-5)


def test_critic_starts_as_a_copy_of_the_policy_and_at_zero(setup):
  tokenizer, policy, turns = setup
  critic = critic_from_policy(policy)
  policy_leaves, critic_leaves = jax.tree.leaves(nnx.state(policy)), jax.tree.leaves(nnx.state(critic.backbone))
  for p, c in zip(policy_leaves, critic_leaves, strict=True):
    np.testing.assert_array_equal(p, c)
    assert p.unsafe_buffer_pointer() != c.unsafe_buffer_pointer()  # a copy: the critic's updates stay its own
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True).step_inputs("sampler")
  assert not np.asarray(jit_values(nnx.graphdef(critic))(nnx.state(critic), batch)).any()


def critic_minibatch(tokenizer, critic, turns, micro_batch):
  batch = pack_rows(turns, tokenizer, dataclasses.replace(BATCH, micro_batch=micro_batch), True).step_inputs("sampler")
  n = len(batch["valid_B"])
  batch["old_value_B"] = np.asarray(jit_values(nnx.graphdef(critic))(nnx.state(critic), batch))
  batch["return_B"] = np.where(batch["valid_B"], np.linspace(-1.0, 2.0, n), 0.0).astype(np.float32)
  return micro_batches(batch, micro_batch)


def test_value_update_is_exact_over_micro_batches_and_fits_returns(setup):
  tokenizer, policy, turns = setup
  sgd = optax.sgd(1.0)  # params move by exactly the gradient: micro-batching must not change it
  after_one_step = []
  for micro in (8, 4):
    critic = with_random_head(critic_from_policy(policy))
    update = jit_update(nnx.graphdef(critic), sgd, critic_loss(value_clip=10.0))
    state, _ = update(init_state(nnx.state(critic), sgd, with_ref=False),
                      critic_minibatch(tokenizer, critic, turns, micro))
    after_one_step.append(jax.tree.leaves(state.params))
  for a, b in zip(*after_one_step, strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=3e-6)  # fp32: rows of 8 and of 4 sum in another order

  adam = make_optimizer(OptimConfig(learning_rate=1e-2, weight_decay=0.0))
  critic = critic_from_policy(policy)  # as PPO starts it (zero head); the update donated the last one's buffers
  update = jit_update(nnx.graphdef(critic), adam, critic_loss(value_clip=10.0))
  batch = critic_minibatch(tokenizer, critic, turns, 4)
  state = init_state(nnx.state(critic), adam, with_ref=False)
  losses = []
  for _ in range(40):
    state, metrics = update(state, batch)
    losses.append(float(metrics["value_loss"]))
  assert losses[-1] < 0.2 * losses[0], losses


def test_plugin_fills_values_of_real_rows_and_steps_on_a_mini_batch(setup):
  tokenizer, policy, turns = setup
  plugin = CriticPlugin(policy, OptimConfig(learning_rate=1e-2, weight_decay=0.0), CriticConfig(value_clip=10.0),
                        make_mesh(devices=jax.devices()[:1]))
  plugin.state.params["value_head"][...] = jax.random.normal(jax.random.key(1),
                                                             plugin.state.params["value_head"].shape)
  batch = pack_rows(turns[:6], tokenizer, BATCH, with_observation=True)  # 6 rows + 2 empty ones
  plugin.device_pass(batch, micro_batch=4)
  expected_B = np.asarray(jit_values(plugin.graphdef)(plugin.state.params, batch.step_inputs("sampler")))
  np.testing.assert_allclose(batch.old_value_B[:6], expected_B[:6], rtol=1e-5, atol=1e-5)  # 4 vs 8 rows a call
  assert batch.old_value_B.dtype == np.float32 and not batch.old_value_B[6:].any()
  batch.return_B = np.where(batch.valid_B, 1.0, 0.0).astype(np.float32)
  inputs = micro_batches(batch.step_inputs("sampler"), 4)
  losses = [float(plugin.step(inputs)["value_loss"]) for _ in range(5)]
  assert losses[-1] < losses[0] and int(plugin.state.step) == 5
