"""Sharding rules on an 8-device CPU mesh: the right PartitionSpecs; sharded params give the same logits, and a
sharded train step (params, and rows pinned to data x fsdp inside it) the same update as one device; rows that do not
split over data x fsdp are refused."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from hf_models import make_hf_model
from paw_jax import sharding
from paw_jax.algos.losses import LossConfig
from paw_jax.batch import micro_batches
from paw_jax.config import ConfigError, MeshConfig
from paw_jax.models import hf_io
from paw_jax.models.transformer import positions_from_mask
from paw_jax.learner import init_state, jit_update, rl_loss
from paw_jax.run import Run
from tiny_run import tiny_run_config


def test_logical_rules_drop_axes_that_do_not_divide():
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  assert sharding.logical_to_spec(("layers", "embed", "heads", "head_dim"), (3, 64, 4, 16), mesh) == \
      P(None, "fsdp", "tensor", None)
  assert sharding.logical_to_spec(("layers", "embed", "kv_heads", "head_dim"), (3, 64, 1, 16), mesh) == \
      P(None, "fsdp", None, None)  # one KV head cannot split 2 ways
  assert sharding.logical_to_spec(("batch", None), (8, 5), mesh) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec(("batch", None), (6, 5), mesh) == P("data", None)


def test_mesh_sizes_are_checked():
  with pytest.raises(ValueError, match="needs 6 devices"):
    sharding.make_mesh(data=3, fsdp=2, tensor=1)
  assert dict(sharding.make_mesh(fsdp=2, tensor=2).shape) == {"data": 2, "fsdp": 2, "tensor": 2}


def test_sharded_model_gives_unsharded_logits(tmp_path):
  hf_model = make_hf_model("qwen3")
  hf_model.save_pretrained(tmp_path)
  model = hf_io.load_model(tmp_path)
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  shardings = sharding.param_shardings(hf_io.abstract_model(model.cfg), mesh)
  sharded = hf_io.load_model(tmp_path, shardings=shardings)
  q = hf_io.model_params(sharded)["layers"]["q"]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None)
  assert len(q.addressable_shards) == 8 and q.addressable_shards[0].data.shape == (3, 32, 2, 24)

  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 97, (4, 10)))
  mask = jnp.ones(tokens.shape, bool)
  tokens_sharded = sharding.shard_rows({"tokens_BxT": np.asarray(tokens)}, mesh)["tokens_BxT"]
  assert tokens_sharded.sharding.spec == P(("data", "fsdp"), None)
  graphdef, params = nnx.split(sharded)

  @jax.jit
  def forward(params, tokens):
    return nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)[0]

  expected, _ = model(tokens, positions_from_mask(mask), mask)
  np.testing.assert_allclose(np.asarray(forward(params, tokens_sharded)), np.asarray(expected), atol=1e-5)


def test_train_step_on_a_sharded_mesh_equals_one_device(tmp_path):
  """Params by the rule table, micro-batched rows split over data x fsdp and pinned so inside the step (hidden states,
  chunked logits), with PaW's WM loss and a KL reference: the same update as one device."""
  make_hf_model("qwen3").save_pretrained(tmp_path)
  model = hf_io.load_model(tmp_path)
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = hf_io.load_model(tmp_path, shardings=sharding.param_shardings(hf_io.abstract_model(model.cfg), mesh))
  rng = np.random.default_rng(0)
  t_1xT = np.arange(16)[None]
  prompt_Bx1 = rng.integers(4, 9, (8, 1))
  action_mask_BxT = (t_1xT >= prompt_Bx1) & (t_1xT < prompt_Bx1 + 4)
  batch = {"tokens_BxT": rng.integers(0, 97, (8, 16)).astype(np.int32), "mask_BxT": t_1xT < prompt_Bx1 + 7,
           "action_mask_BxT": action_mask_BxT, "obs_mask_BxT": (t_1xT >= prompt_Bx1 + 5) & (t_1xT < prompt_Bx1 + 7),
           "old_logp_BxT": np.where(action_mask_BxT, -1.0, 0.0).astype(np.float32),
           "valid_B": np.ones(8, bool), "advantage_B": rng.standard_normal(8).astype(np.float32),
           "wm_weight_B": np.full(8, 0.125, np.float32)}
  batch["ref_logp_BxT"] = batch["old_logp_BxT"] - np.float32(0.1)
  optimizer = optax.sgd(0.1)  # params move by the gradient itself (Adam's first step would amplify rounding)
  loss_fn = rl_loss(LossConfig(kl_coef=0.01, entropy_coef=0.01), "cmae")
  expected, expected_metrics = jit_update(nnx.graphdef(model), optimizer, loss_fn)(
      init_state(nnx.state(model), optimizer, with_ref=False), micro_batches(batch, 4))
  rows = sharding.shard_rows(micro_batches(batch, 4), mesh, row_axis=1)
  assert rows["tokens_BxT"].sharding.spec == P(None, ("data", "fsdp"), None)
  state, metrics = jit_update(nnx.graphdef(model), optimizer, loss_fn, mesh)(
      init_state(nnx.state(sharded), optimizer, with_ref=True, ref_dtype="bfloat16"), rows)
  for key, value in expected_metrics.items():
    np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-7, err_msg=key)
  q, ref_q = state.params["layers"]["q"][...], state.ref_params["layers"]["q"][...]
  assert q.sharding.is_equivalent_to(NamedSharding(mesh, P(None, "fsdp", "tensor", None)), q.ndim)  # kept layout
  assert ref_q.dtype == jnp.bfloat16 and ref_q.sharding.is_equivalent_to(q.sharding, q.ndim)  # the reference too
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_constrain_pins_rows_and_vocab_inside_jit():
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  pinned = jax.jit(lambda x: sharding.constrain(x * 2, ("batch", None, "vocab"), mesh))(jnp.ones((4, 3, 6)))
  assert pinned.sharding.spec == P(("data", "fsdp"), None, "tensor")
  assert jax.jit(lambda x: sharding.constrain(x, ("batch",), None))(jnp.ones(3)).shape == (3,)  # no mesh: as is


def test_rows_that_do_not_split_over_data_parallel_devices_are_refused(tmp_path):
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  with pytest.raises(ValueError, match=r"^6 rows do not split over the mesh's data x fsdp = 4 devices$"):
    sharding.shard_rows({"tokens_BxT": np.zeros((6, 5), np.int32)}, mesh)
  config = dataclasses.replace(tiny_run_config(tmp_path), mesh=MeshConfig(data=4, fsdp=2, tensor=1))
  with pytest.raises(ConfigError, match=r"^batch\.micro_batch=4: expected a multiple of the mesh's data x fsdp = 8 "):
    Run.open(config, resuming=False)
