"""The Learner: one PaW update and one PPO update give the numbers the trainer gave before the Learner existed; exact
micro-batch accumulation, skipped non-finite steps, trainer log-probs equal to the sampler's and to the full-logits
definition, a bfloat16 reference, the SFT loss, and at most one step dispatched ahead."""
import dataclasses
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from paw_jax.algos.losses import LossConfig, logprobs_from_logits
from paw_jax.batch import pack_rows, prepare
from paw_jax.config import BatchConfig, OptimConfig
from paw_jax.learner import Learner, init_state, jit_logprobs, jit_update, rl_loss, sft_loss, token_logprobs
from paw_jax.models.transformer import Decoder
from paw_jax.programs.rl import RLProgram
from paw_jax.run import Run
from paw_jax.sharding import make_mesh
from tiny_run import tiny_run_config

BATCH = BatchConfig(max_len=512, max_obs_tokens=40, micro_batch=4, mini_batch=8)
ONE_DEVICE = make_mesh(devices=jax.devices()[:1])

# `train.rl_update` at commit 8f87014 (the last trainer before the Learner) on exactly this run: the first update of a
# tiny from-scratch Qwen3 on 3x3 FrozenLake, 2 groups x 4 episodes, KL to the reference, trainer log-probs, PaW on,
# mini-batches of 8 rows in micro-batches of 4. `params_abs_sum`: Σ|w| over the policy's weights after the update.
# Since the WM weights are balanced per optimizer step (x T / T_m, was x the mini-batch count: docs/PAW.md), the
# numbers that follow the first optimizer step moved (loss, policy loss, KL: 1e-5 to 2e-2 relative); those are the
# Learner's after that change, the rest are 8f87014's.
BEFORE = {
    "gigpo": {"train/loss": 0.9443899989128113, "train/policy_loss": -0.051178619265556335,
              "train/grad_norm": 1.280310869216919, "train/kl": 0.0010422671912238002,
              "train/approx_kl": -0.0009238510392606258, "train/clip_frac": 0.00390625,
              "paw/wm_loss": 0.9970541795094808, "paw/selected": 24.0, "paw/action_entropy": 5.974043255050978,
              "params_abs_sum": 1461.4683746864314},
    "ppo": {"train/loss": 0.9951261281967163, "train/policy_loss": -0.00047200918197631836,
            "train/grad_norm": 1.5882948637008667, "train/kl": 0.0010945014655590057,
            "critic/value_loss": 0.03731277957558632, "critic/grad_norm": 2.0003037452697754,
            "paw/wm_loss": 0.9970834255218506, "params_abs_sum": 1462.7779528952524},
}


@pytest.mark.parametrize("algo", ["gigpo", "ppo"])
def test_one_update_through_the_learner_gives_the_numbers_of_before(tmp_path, algo):
  run = Run.open(tiny_run_config(tmp_path, algo), resuming=False)
  with run.env_pool() as pool:
    program = RLProgram(run, pool)
    program.build()
    metrics = program.update(0)
  metrics["params_abs_sum"] = sum(float(np.abs(np.asarray(w, np.float64)).sum())
                                  for w in jax.tree.leaves(program.learner.params))
  for key, before in BEFORE[algo].items():
    np.testing.assert_allclose(metrics[key], before, rtol=2e-5, atol=1e-7, err_msg=key)


def test_micro_batch_accumulation_is_exact_and_nan_updates_are_skipped(frozenlake_rollout):
  tokenizer, model, turns, _ = frozenlake_rollout
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  batch.advantage_B = np.where(batch.valid_B, np.linspace(-1, 1, batch.num_rows), 0).astype(np.float32)
  batch.wm_weight_B = np.where(batch.valid_B, 0.05, 0).astype(np.float32)
  batch.ref_logp_BxT = batch.sampler_logp_BxT
  optimizer = optax.sgd(0.1)  # params move by the gradient itself (Adam's first step would amplify rounding)
  update = jit_update(nnx.graphdef(model), optimizer, rl_loss(LossConfig(kl_coef=0.01), "cmae"))
  params = {}
  for micro in (BATCH.micro_batch, batch.num_rows):
    state = init_state(jax.tree.map(jnp.copy, nnx.state(model)), optimizer, with_ref=False)
    state, metrics = update(state, next(batch.mini_batches(batch.num_rows, micro, "sampler")))
    params[micro] = state.params
    assert int(state.skipped) == 0 and int(state.step) == 1
  for a, b in zip(jax.tree.leaves(params[BATCH.micro_batch]), jax.tree.leaves(params[batch.num_rows])):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)

  batch.advantage_B = np.where(batch.valid_B, np.nan, 0).astype(np.float32)  # a poisoned step
  learner = Learner(nnx.graphdef(model), jax.tree.map(jnp.copy, nnx.state(model)), OptimConfig(learning_rate=1e-2),
                    rl_loss(LossConfig(), "cmae"), ONE_DEVICE, with_ref=False)
  before = jax.tree.map(np.asarray, learner.params)
  metrics = learner.update(batch, batch.num_rows, BATCH.micro_batch, "sampler")
  assert int(learner.state.skipped) == 1 and int(learner.state.step) == 0 and metrics["train/skipped"] == 1.0
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(learner.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_trainer_logprobs_equal_sampler_logprobs(frozenlake_rollout):
  tokenizer, model, turns, episodes = frozenlake_rollout
  learner = Learner(nnx.graphdef(model), jax.tree.map(jnp.copy, nnx.state(model)), OptimConfig(),
                    rl_loss(LossConfig(), None), ONE_DEVICE, with_ref=True)
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  learner.device_passes(batch, BATCH.micro_batch, trainer_logp=True)
  mask = batch.action_mask_BxT
  np.testing.assert_allclose(batch.trainer_logp_BxT[mask], batch.sampler_logp_BxT[mask], atol=1e-5)
  np.testing.assert_array_equal(batch.ref_logp_BxT, batch.trainer_logp_BxT)  # the reference is the start policy


def test_sft_loss_is_action_nll_plus_weighted_next_observation_ce(frozenlake_rollout):
  tokenizer, model, turns, _ = frozenlake_rollout
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  batch.wm_weight_B = np.where(batch.valid_B, np.linspace(0.1, 1.0, batch.num_rows), 0).astype(np.float32)
  graphdef, params = nnx.split(model)
  logp_BxT = np.asarray(jit_logprobs(graphdef)(params, batch.tokens_BxT, batch.mask_BxT), np.float64)
  action, obs = batch.action_mask_BxT, batch.obs_mask_BxT
  ce_B = -(logp_BxT * obs).sum(1) / np.maximum(obs.sum(1), 1)
  expected = -logp_BxT[action].sum() / action.sum() + (batch.wm_weight_B * ce_B).sum()
  counts = {"action_tokens": action.sum(), "rows": batch.valid_B.sum()}
  inputs = batch.step_inputs("sampler")
  loss, metrics = sft_loss("ce")(graphdef, params, inputs, counts, None)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["sft/nll"]), -logp_BxT[action].sum() / action.sum(), rtol=1e-5)
  assert float(sft_loss()(graphdef, params, inputs, counts, None)[0]) == float(metrics["sft/nll"])  # format only


def test_token_logprobs_equal_the_full_logits_definition_value_and_grad(frozenlake_rollout):
  """Chunked log-probs and entropies at the loss positions only equal every position's logits + log-softmax (the
  definition before chunking), and so do their gradients with respect to every weight."""
  tokenizer, model, turns, _ = frozenlake_rollout
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  graphdef, params = nnx.split(model)
  tokens, mask = jnp.asarray(batch.tokens_BxT), jnp.asarray(batch.mask_BxT)
  where = batch.action_mask_BxT | batch.obs_mask_BxT
  weight_BxT, entropy_weight_BxT = np.random.default_rng(0).normal(size=(2, *where.shape)).astype(np.float32)

  def full(params):
    positions = jnp.broadcast_to(jnp.arange(tokens.shape[1]), tokens.shape)
    logits, _ = nnx.merge(graphdef, params)(tokens[:, :-1], positions[:, :-1], mask[:, :-1])
    logp, entropy = logprobs_from_logits(logits, tokens[:, 1:], with_entropy=True)
    pad = lambda x: jnp.where(where, jnp.pad(x, ((0, 0), (1, 0))), 0.0)  # noqa: E731
    return pad(logp), pad(entropy)

  def chunked(params):
    return token_logprobs(graphdef, params, tokens, mask, jnp.asarray(where), with_entropy=True)

  def value_and_grad(fn):
    def scalar(params):
      logp_BxT, entropy_BxT = fn(params)
      return jnp.sum(weight_BxT * logp_BxT + entropy_weight_BxT * entropy_BxT)
    return jax.jit(fn)(params), jax.jit(jax.grad(scalar))(params)

  (values, grads), (ref_values, ref_grads) = value_and_grad(chunked), value_and_grad(full)
  for value, ref in zip(values, ref_values, strict=True):
    np.testing.assert_allclose(np.asarray(value), np.asarray(ref), rtol=1e-6, atol=1e-6)
  for grad, ref in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
    # Sums over ~1,500 positions in another order: fp32 rounding relative to the leaf's scale.
    np.testing.assert_allclose(np.asarray(grad), np.asarray(ref), rtol=0, atol=1e-6 * np.abs(ref).max())
  assert np.abs(np.asarray(values[0])[where]).min() > 0 and not np.asarray(values[0])[~where].any()


def test_bfloat16_reference_gives_the_same_log_probs_under_bfloat16_compute(frozenlake_rollout):
  """The reference is only read and bf16 compute casts every weight to bf16: a bf16 copy changes no number."""
  tokenizer, model, turns, _ = frozenlake_rollout
  bf16_compute = Decoder(dataclasses.replace(model.cfg, compute_dtype="bfloat16"), rngs=nnx.Rngs(0))
  learner = Learner(nnx.graphdef(bf16_compute), jax.tree.map(jnp.copy, nnx.state(model)), OptimConfig(),
                    rl_loss(LossConfig(), None), ONE_DEVICE, with_ref=True, ref_dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(learner.state.ref_params)} == {jnp.dtype(jnp.bfloat16)}
  assert {x.dtype for x in jax.tree.leaves(learner.params)} == {jnp.dtype(jnp.float32)}
  batch = pack_rows(turns, tokenizer, BATCH, with_observation=True)
  learner.device_passes(batch, BATCH.micro_batch, trainer_logp=True)
  assert np.abs(batch.trainer_logp_BxT[batch.action_mask_BxT]).min() > 0
  np.testing.assert_array_equal(batch.ref_logp_BxT, batch.trainer_logp_BxT)


def test_prepare_then_update_in_a_few_lines(frozenlake_rollout, tmp_path):
  """The Learner as a test (or a new program) drives it: device passes inside `prepare`, then `update`."""
  tokenizer, model, turns, episodes = frozenlake_rollout
  config = tiny_run_config(tmp_path, "grpo")
  learner = Learner(nnx.graphdef(model), jax.tree.map(jnp.copy, nnx.state(model)), config.optim,
                    rl_loss(config.algo.loss, "cmae"), ONE_DEVICE, with_ref=True)
  batch, _ = prepare(turns, episodes, tokenizer, config, 10.0,
                     lambda rows: learner.device_passes(rows, 4, trainer_logp=True), update_index=0)
  metrics = learner.update(batch, mini_batch=8, micro_batch=4, old_logp="trainer")
  assert int(learner.state.step) == -(-batch.num_rows // 8) and metrics["train/skipped"] == 0
  # The first step starts at the reference (KL 0), later ones have moved away from it.
  assert 0 < metrics["train/kl"] < 0.1 and metrics["paw/wm_loss"] > 0


def test_a_step_waits_for_the_previous_one_so_the_host_runs_one_step_ahead(frozenlake_rollout):
  """A step held on the device (its loss waits for `release`) holds back the next step's dispatch."""
  tokenizer, model, turns, _ = frozenlake_rollout
  release = threading.Event()

  def held_loss(graphdef, params, micro, counts, mesh):
    loss, metrics = sft_loss()(graphdef, params, micro, counts, mesh)
    gate = jax.pure_callback(lambda: np.float32(release.wait()) * 0, jax.ShapeDtypeStruct((), jnp.float32))
    return loss + jax.lax.stop_gradient(gate), metrics

  learner = Learner(nnx.graphdef(model), jax.tree.map(jnp.copy, nnx.state(model)), OptimConfig(), held_loss,
                    ONE_DEVICE, with_ref=False)
  minibatch = next(pack_rows(turns, tokenizer, BATCH, with_observation=False).mini_batches(8, 4, "sampler"))
  release.set()
  jax.block_until_ready(learner.step(minibatch))  # compiled and run once
  release.clear()
  threading.Timer(1.0, release.set).start()
  held, _ = learner.step(minibatch)
  learner.step(minibatch)  # returns only once the held step has run
  assert all(leaf.is_ready() for leaf in jax.tree.leaves(held))
