"""Decoder numerics against transformers (torch CPU, fp32): every architecture, left padding, scan/loop/remat."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from hf_models import CONFIGS, make_hf_model
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig, UnsupportedConfigError
from paw_jax.models.transformer import positions_from_mask

TOLERANCE = 1e-4


def load_ours(hf_model, tmp_path: pathlib.Path, **overrides):
  hf_model.save_pretrained(tmp_path)
  return hf_io.load_model(tmp_path, **overrides)


def ours_logits(model, tokens_BxT, mask_BxT):
  graphdef, params = nnx.split(model)

  @jax.jit
  def forward(params, tokens, mask):
    return nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)[0]

  return np.asarray(forward(params, jnp.asarray(tokens_BxT), jnp.asarray(mask_BxT)))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_logits_match_transformers(name, tmp_path):
  hf_model = make_hf_model(name)
  model = load_ours(hf_model, tmp_path)
  tokens = np.random.RandomState(0).randint(0, 97, (3, 21))
  with torch.no_grad():
    expected = hf_model(torch.tensor(tokens)).logits.numpy()
  got = ours_logits(model, tokens, np.ones_like(tokens, bool))
  assert np.abs(got - expected).max() <= TOLERANCE
  assert np.abs(expected).max() > 1.0  # logits far from zero: the comparison has something to compare


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_left_padded_batch_matches_unpadded_rows(name, tmp_path):
  hf_model = make_hf_model(name)
  model = load_ours(hf_model, tmp_path)
  rng = np.random.RandomState(1)
  lengths = [17, 9, 4]
  width = max(lengths)
  tokens = np.zeros((len(lengths), width), np.int64)
  mask = np.zeros((len(lengths), width), bool)
  rows = [rng.randint(1, 97, n) for n in lengths]
  for i, row in enumerate(rows):
    tokens[i, width - len(row):] = row
    mask[i, width - len(row):] = True
  got = ours_logits(model, tokens, mask)
  # transformers itself on the same left-padded batch, with its attention mask and position ids
  with torch.no_grad():
    positions = np.asarray(positions_from_mask(mask))
    expected = hf_model(torch.tensor(tokens), attention_mask=torch.tensor(mask.astype(np.int64)),
                        position_ids=torch.tensor(positions)).logits.numpy()
  for i, row in enumerate(rows):
    with torch.no_grad():
      alone = hf_model(torch.tensor(row[None])).logits.numpy()[0]
    assert np.abs(got[i, width - len(row):] - alone).max() <= TOLERANCE
    assert np.abs(got[i, width - len(row):] - expected[i, width - len(row):]).max() <= TOLERANCE


def test_llama3_rope_scaling_is_applied(tmp_path):
  hf_model = make_hf_model("llama3")
  model = load_ours(hf_model, tmp_path)
  assert model.cfg.rope_scaling is not None and model.cfg.rope_scaling.factor == 8.0
  unscaled = hf_io.model_from_params(model.cfg.replace(rope_scaling=None), hf_io.model_params(model))
  tokens = np.random.RandomState(2).randint(0, 97, (1, 30))
  mask = np.ones_like(tokens, bool)
  assert np.abs(ours_logits(model, tokens, mask) - ours_logits(unscaled, tokens, mask)).max() > 1e-3


@pytest.mark.parametrize("overrides", [dict(scan_layers=False), dict(remat=True), dict(remat=True, scan_layers=False)])
def test_scan_loop_and_remat_give_same_logits_and_grads(overrides, tmp_path):
  hf_model = make_hf_model("qwen3")
  base = load_ours(hf_model, tmp_path)
  other = hf_io.model_from_params(base.cfg.replace(**overrides), hf_io.model_params(base))
  tokens = jnp.asarray(np.random.RandomState(3).randint(0, 97, (2, 12)))
  mask = jnp.ones(tokens.shape, bool)

  def loss_and_grads(model):
    graphdef, params = nnx.split(model)

    def loss(params):
      logits, _ = nnx.merge(graphdef, params)(tokens, positions_from_mask(mask), mask)
      return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

    return jax.jit(jax.value_and_grad(loss))(params)

  loss_a, grads_a = loss_and_grads(base)
  loss_b, grads_b = loss_and_grads(other)
  assert abs(float(loss_a) - float(loss_b)) < 1e-5
  for a, b in zip(jax.tree.leaves(grads_a), jax.tree.leaves(grads_b)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_bf16_compute_stays_close_to_fp32(tmp_path):
  hf_model = make_hf_model("llama3")
  model = load_ours(hf_model, tmp_path)
  bf16 = hf_io.model_from_params(model.cfg.replace(compute_dtype="bfloat16"), hf_io.model_params(model))
  tokens = np.random.RandomState(4).randint(0, 97, (2, 16))
  mask = np.ones_like(tokens, bool)
  fp32_logits, bf16_logits = ours_logits(model, tokens, mask), ours_logits(bf16, tokens, mask)
  assert bf16_logits.dtype == np.float32  # logits are always fp32
  assert 0 < np.abs(fp32_logits - bf16_logits).max() < 0.5


@pytest.mark.parametrize("change, message", [
    (dict(model_type="mistral"), "model_type 'mistral' is not supported"),
    (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    (dict(rope_scaling={"rope_type": "yarn", "factor": 4.0}), "rope_scaling type 'yarn'"),
    (dict(use_sliding_window=True), "use_sliding_window"),
    (dict(num_key_value_heads=3), "not a multiple"),
])
def test_unsupported_config_fields_raise_one_clear_error(change, message):
  hf = CONFIGS["qwen2"]().to_dict()
  hf.update(change)
  with pytest.raises(UnsupportedConfigError, match=message):
    ModelConfig.from_hf(hf)


def test_config_round_trips_through_hf_dict():
  for name in CONFIGS:
    cfg = ModelConfig.from_hf(CONFIGS[name]().to_dict())
    again = ModelConfig.from_hf(cfg.to_hf())
    assert dataclasses.asdict(again) == dataclasses.asdict(cfg)
