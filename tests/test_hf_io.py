"""HF checkpoint directories in and out: transformers loads what we save and gets identical logits."""
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from hf_models import CONFIGS, make_hf_model
from paw_jax import sharding
from paw_jax.models import hf_io


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_round_trip_load_save_transformers_load(name, tmp_path):
  hf_model = make_hf_model(name)
  hf_model.save_pretrained(tmp_path / "in")
  model = hf_io.load_model(tmp_path / "in")
  hf_io.save_model(model, tmp_path / "out")
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
  tokens = torch.tensor(np.random.RandomState(0).randint(0, 97, (2, 15)))
  with torch.no_grad():
    np.testing.assert_array_equal(reloaded(tokens).logits.numpy(), hf_model(tokens).logits.numpy())
  for key, value in hf_model.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_index_sharded_directory_saves_and_loads(tmp_path):
  hf_model = make_hf_model("qwen3")
  hf_model.save_pretrained(tmp_path / "in")
  model = hf_io.load_model(tmp_path / "in")
  hf_io.save_model(model, tmp_path / "sharded", max_shard_bytes=100_000)
  index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
  assert len(set(index["weight_map"].values())) > 2
  again = hf_io.load_model(tmp_path / "sharded")
  for a, b in zip(*(np.asarray(x) for x in (hf_io.model_params(model)["embed"], hf_io.model_params(again)["embed"]))):
    np.testing.assert_array_equal(a, b)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded", dtype=torch.float32)
  for key, value in hf_model.state_dict().items():
    np.testing.assert_array_equal(reloaded.state_dict()[key].numpy(), value.numpy(), err_msg=key)


@pytest.mark.parametrize("name, param_dtype", [("llama3", "float32"), ("qwen2", "float32"), ("qwen3", "bfloat16")])
def test_sharded_loading_reads_each_devices_block_and_equals_the_whole_checkpoint(name, param_dtype, tmp_path):
  make_hf_model(name).to(torch.bfloat16 if param_dtype == "bfloat16" else torch.float32).save_pretrained(tmp_path)
  mesh = sharding.make_mesh(data=1, fsdp=4, tensor=2)
  model = hf_io.load_sharded(tmp_path, mesh, param_dtype=param_dtype)
  cfg, expected = hf_io.load_checkpoint(tmp_path, param_dtype=param_dtype)
  loaded, shardings = hf_io.model_params(model), sharding.param_shardings(hf_io.abstract_model(cfg), mesh)
  split = 0
  leaves = jax.tree_util.tree_leaves_with_path(loaded)
  for (path, array), want, placement in zip(leaves, jax.tree.leaves(expected), jax.tree.leaves(shardings)):
    assert array.sharding == placement and array.dtype == want.dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(np.asarray(array), want, err_msg=jax.tree_util.keystr(path))
    split += array.addressable_shards[0].data.size < array.size
  assert split >= 8  # most tensors really are split across devices (q/k/v/o over fsdp x tensor)


def test_missing_tensor_and_missing_config_are_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="no config.json"):
    hf_io.read_config(tmp_path)
  hf_model = make_hf_model("llama_tied")
  state = {k: v.numpy() for k, v in hf_model.state_dict().items() if "layers.1.mlp.up_proj" not in k}
  cfg = hf_io.ModelConfig.from_hf(hf_model.config.to_dict())
  with pytest.raises(KeyError, match="model.layers.1.mlp.up_proj.weight"):
    hf_io.hf_to_params(cfg, state)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_a_from_scratch_model_exports_as_the_same_transformers_model(model_type, tmp_path):
  # The default run's model is built from a ModelConfig, not from a HF config: its export must still be exactly the
  # architecture transformers builds for that model_type (e.g. Qwen3's q/k norms).
  cfg = hf_io.ModelConfig(model_type, vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                          num_kv_heads=2, head_dim=8, tie_word_embeddings=True, qkv_bias=model_type == "qwen2")
  rng = np.random.RandomState(0)
  shapes = hf_io.model_params(hf_io.abstract_model(cfg))
  model = hf_io.model_from_params(cfg, jax.tree.map(lambda s: rng.randn(*s.shape).astype(np.float32) * 0.3, shapes))
  hf_io.save_model(model, tmp_path / "out")
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
  tokens_BxT = np.random.RandomState(1).randint(0, 97, (2, 11))
  positions_BxT = np.broadcast_to(np.arange(11), tokens_BxT.shape)
  logits_BxTxV, _ = model(tokens_BxT, positions_BxT, np.ones_like(tokens_BxT, bool))
  with torch.no_grad():
    expected = hf_model(torch.tensor(tokens_BxT)).logits.numpy()
  np.testing.assert_allclose(np.asarray(logits_BxTxV), expected, atol=1e-4)
