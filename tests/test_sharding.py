"""Sharding rules on an 8-device CPU mesh: the right PartitionSpecs, and sharded params give the same logits."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from hf_models import make_hf_model
from paw_jax import sharding
from paw_jax.models import hf_io
from paw_jax.models.transformer import positions_from_mask


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
  tokens_sharded = jax.device_put(tokens, sharding.batch_sharding(mesh))
  graphdef, params = nnx.split(sharded)

  @jax.jit
  def forward(params, tokens):
    return nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)[0]

  expected, _ = model(tokens, positions_from_mask(mask), mask)
  np.testing.assert_allclose(np.asarray(forward(params, tokens_sharded)), np.asarray(expected), atol=1e-5)
