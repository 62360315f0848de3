"""Decoder numerics against transformers (torch CPU, fp32): every architecture, left padding, scan/loop/remat; the
attention implementations (the flash path's row rotation here, cuDNN against XLA where a GPU is present)."""
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
from paw_jax.models import transformer
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


def padded_rows(lengths: list[int], width: int, left: bool) -> np.ndarray:
  mask = np.zeros((len(lengths), width), bool)
  for i, n in enumerate(lengths):
    mask[i, slice(width - n, width) if left else slice(0, n)] = True
  return mask


@pytest.mark.parametrize("left", [False, True])
def test_contiguous_rows_attention_equals_the_masked_attention_at_real_tokens(left):
  cfg = ModelConfig.from_hf(CONFIGS["qwen2"]().to_dict())
  mask = padded_rows([11, 4, 1, 0], 11, left)
  rng = np.random.RandomState(5)
  q = jnp.asarray(rng.randn(4, 11, cfg.num_heads, cfg.head_dim), jnp.float32)
  k, v = (jnp.asarray(rng.randn(4, 11, cfg.num_kv_heads, cfg.head_dim), jnp.float32) for _ in range(2))
  slots = jnp.arange(11)
  expected = transformer.attention(cfg, q, k, v, transformer._attention_mask(jnp.asarray(mask), slots, slots))
  # The kernel's causal flag + per-row lengths, computed by XLA here: the rotation is what this checks.
  got = transformer.contiguous_rows_attention(cfg, q, k, v, jnp.asarray(mask), implementation="xla")
  np.testing.assert_allclose(np.asarray(got)[mask], np.asarray(expected)[mask], atol=1e-6)
  assert np.isfinite(np.asarray(got)).all()


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 2e-6), (jnp.bfloat16, 0.0)])
@pytest.mark.parametrize("num_queries", [5, 1])
def test_grouped_attention_equals_jax_dot_product_attention(dtype, atol, num_queries):
  """The heads-major layout is jax's XLA attention: output and gradients, 4 query heads per KV head, queries at the
  last slots of a longer cache (a decode step: one), and a row with no visible key (jax's uniform weights)."""
  rng = np.random.RandomState(8)
  q = jnp.asarray(rng.randn(3, num_queries, 8, 16), dtype)
  k, v = (jnp.asarray(rng.randn(3, 9, 2, 16), dtype) for _ in range(2))
  key_mask = jnp.asarray(rng.rand(3, 9) > 0.3).at[:, 0].set(True).at[0].set(False)
  mask = transformer._attention_mask(key_mask, jnp.arange(9), 9 - num_queries + jnp.arange(num_queries))

  def out_and_grads(attend):
    loss = lambda q, k, v: jnp.sum(jnp.sin(attend(q, k, v).astype(jnp.float32)))  # noqa: E731
    return attend(q, k, v), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  got = out_and_grads(lambda q, k, v: transformer.grouped_attention(q, k, v, mask, 0.25))
  expected = out_and_grads(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, mask=mask, scale=0.25,
                                                                        implementation="xla"))
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(x, np.float32), np.asarray(y, np.float32), atol=atol, rtol=0)


@pytest.mark.parametrize("left", [False, True])
def test_causal_attention_in_blocks_equals_the_whole_mask_at_real_tokens(left):
  """200 slots are 4 query blocks, each against the keys up to its end: the same outputs and gradients at real
  tokens as one block against all keys (padded rows of either side, a row of one token)."""
  rng = np.random.RandomState(9)
  mask = jnp.asarray(padded_rows([200, 130, 1], 200, left))
  q = jnp.asarray(rng.randn(3, 200, 4, 8), jnp.float32)
  k, v = (jnp.asarray(rng.randn(3, 200, 2, 8), jnp.float32) for _ in range(2))
  attn_mask = transformer._attention_mask(mask, jnp.arange(200), jnp.arange(200))

  def out_and_grads(attend):  # the loss reads real tokens only, as every caller's
    loss = lambda q, k, v: jnp.sum(jnp.where(mask[:, :, None, None], jnp.sin(attend(q, k, v)), 0.0))  # noqa: E731
    return jnp.where(mask[:, :, None, None], attend(q, k, v), 0.0), jax.grad(loss, argnums=(0, 1, 2))(q, k, v)

  got = out_and_grads(lambda q, k, v: transformer.causal_attention(q, k, v, attn_mask, 0.3))
  expected = out_and_grads(lambda q, k, v: transformer.grouped_attention(q, k, v, attn_mask, 0.3))
  for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):  # fp32 summation order
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=2e-6, rtol=2e-6)


@pytest.mark.parametrize("impl", ["auto", "xla"])
def test_attention_impl_keeps_cpu_numbers_bit_identical(impl, tmp_path):
  """Off an NVIDIA GPU "auto" is the XLA path: logits and gradients bit for bit those of "xla", fp32 and bf16."""
  if jax.default_backend() == "gpu":
    pytest.skip("checks the CPU path")
  model = load_ours(make_hf_model("qwen3"), tmp_path)
  tokens = jnp.asarray(np.random.RandomState(6).randint(0, 97, (2, 12)))
  mask = jnp.asarray(padded_rows([12, 7], 12, left=False))
  for dtype in ("float32", "bfloat16"):
    base = hf_io.model_from_params(model.cfg.replace(compute_dtype=dtype, attention_impl="xla"),
                                   hf_io.model_params(model))
    other = hf_io.model_from_params(base.cfg.replace(attention_impl=impl), hf_io.model_params(model))
    a, b = (jax.jit(jax.value_and_grad(logsumexp_loss(m, tokens, mask)))(nnx.split(m)[1]) for m in (base, other))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      assert np.array_equal(np.asarray(x), np.asarray(y))
  with pytest.raises(ValueError, match="attention_impl='cudnn' needs an NVIDIA GPU"):
    transformer.flash_attention_applies(model.cfg.replace(attention_impl="cudnn"), jnp.bfloat16)


def logsumexp_loss(model, tokens_BxT, mask_BxT):
  graphdef = nnx.split(model)[0]

  def loss(params):
    logits, _ = nnx.merge(graphdef, params)(tokens_BxT, positions_from_mask(mask_BxT), mask_BxT)
    return jnp.sum(jnp.where(mask_BxT, jax.nn.logsumexp(logits, axis=-1), 0.0))

  return loss


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs an NVIDIA GPU (cuDNN flash attention)")
@pytest.mark.parametrize("left", [False, True])
def test_cudnn_matches_xla_in_bfloat16(left, tmp_path):
  """Training rows (right padding), left-padded rows and a cached prefill: cuDNN within bf16 noise of XLA."""
  model = load_ours(make_hf_model("qwen2"), tmp_path)
  models = {impl: hf_io.model_from_params(model.cfg.replace(compute_dtype="bfloat16", attention_impl=impl),
                                          hf_io.model_params(model)) for impl in ("xla", "cudnn")}
  tokens = jnp.asarray(np.random.RandomState(7).randint(0, 97, (4, 64)))
  mask = jnp.asarray(padded_rows([64, 40, 17, 1], 64, left))
  (loss_x, grads_x), (loss_c, grads_c) = (
      jax.jit(jax.value_and_grad(logsumexp_loss(m, tokens, mask)))(nnx.split(m)[1]) for m in models.values())
  assert abs(float(loss_c) - float(loss_x)) <= 2e-2 * abs(float(loss_x))
  for gx, gc in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_c)):
    assert np.abs(np.asarray(gc) - np.asarray(gx)).max() <= 5e-2 * np.abs(np.asarray(gx)).max() + 1e-6
  prefill = {}
  for impl, m in models.items():
    graphdef, params = nnx.split(m)
    cache = transformer.KVCache.init(m.cfg, 4, 96)
    logits, _ = jax.jit(lambda p, c, g=graphdef: nnx.merge(g, p)(tokens, positions_from_mask(mask), mask, c))(
        params, cache)
    prefill[impl] = np.asarray(logits)[np.asarray(mask)]
  assert np.abs(prefill["cudnn"] - prefill["xla"]).max() <= 0.1
