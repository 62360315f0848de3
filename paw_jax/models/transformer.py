"""One Flax NNX decoder for Llama, Qwen2/2.5 and Qwen3, numerically the Hugging Face model.

Layer parameters are stored stacked along a leading `layers` axis, so the same parameter layout serves a `lax.scan`
over layers (fast compiles for deep models) and a Python loop. Every parameter carries `logical_axes` metadata that
`paw_jax.sharding` maps to mesh axes.

One attention path serves training, prefill and cached decode: tokens occupy *slots*; a query at slot i sees key slots
j <= i that hold a real token (`mask`). Without a cache the slots are the T input positions; with a cache they are the
cache's S slots and the T new tokens are written at `cache.index`, in place (the cache rides in the layer loop's carry).
RoPE positions are separate inputs, so left-padded rows (positions counted from their first real token) give the same
logits as unpadded rows.

`cfg.attention_impl` picks the kernel (`flash_attention_applies`): XLA with the boolean mask, or on an NVIDIA GPU with
16-bit compute cuDNN's flash attention, which never materialises the [B, N, T, S] scores. Without a cache the flash
path reads each row's real tokens as one contiguous run (right-padded training rows, left-padded prompts: every
caller's layout) and uses the kernel's causal flag + per-row lengths; a cached prefill chunk passes the mask as a bias.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.extend.backend
import jax.numpy as jnp
from flax import nnx

from paw_jax.models.config import ModelConfig


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class KVCache:
  """Fixed-size key/value cache; `index` is the next slot to write (the same for every row)."""
  keys_LxBxSxKxH: jax.Array
  values_LxBxSxKxH: jax.Array
  mask_BxS: jax.Array  # slot holds a real (non-padding) token
  index: jax.Array  # int32 scalar

  # Logical axes of the key/value arrays, for `paw_jax.sharding` (rows over the batch rule, KV heads over tensor).
  LOGICAL_AXES = ("layers", "batch", None, "kv_heads", "head_dim")

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, num_slots: int) -> KVCache:
    shape = (cfg.num_layers, batch, num_slots, cfg.num_kv_heads, cfg.head_dim)
    zeros = jnp.zeros(shape, cfg.compute_jnp_dtype)
    return cls(zeros, zeros, jnp.zeros((batch, num_slots), bool), jnp.zeros((), jnp.int32))


def layer_param_specs(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
  """Per-layer parameter shapes (without the leading layers axis) and logical axis names."""
  d, n, k, h, f = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.intermediate_size
  specs = {
      "attn_norm": ((d,), ("embed",)),
      "q": ((d, n, h), ("embed", "heads", "head_dim")),
      "k": ((d, k, h), ("embed", "kv_heads", "head_dim")),
      "v": ((d, k, h), ("embed", "kv_heads", "head_dim")),
      "o": ((n, h, d), ("heads", "head_dim", "embed")),
      "mlp_norm": ((d,), ("embed",)),
      "gate": ((d, f), ("embed", "mlp")),
      "up": ((d, f), ("embed", "mlp")),
      "down": ((f, d), ("mlp", "embed")),
  }
  if cfg.qkv_bias:
    specs.update(q_bias=((n, h), ("heads", "head_dim")), k_bias=((k, h), ("kv_heads", "head_dim")),
                 v_bias=((k, h), ("kv_heads", "head_dim")))
  if cfg.o_bias:
    specs["o_bias"] = ((d,), ("embed",))
  if cfg.qk_norm:
    specs.update(q_norm=((h,), ("head_dim",)), k_norm=((h,), ("head_dim",)))
  return specs


def _is_norm_or_bias(name: str) -> bool:
  return name.endswith("norm") or name.endswith("bias")


class Layers(nnx.Module):
  """All decoder layers' parameters, stacked: each attribute is [num_layers, ...]."""

  def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
    for name, (shape, axes) in layer_param_specs(cfg).items():
      full_shape = (cfg.num_layers, *shape)
      if name.endswith("norm"):
        value = jnp.ones(full_shape, cfg.param_jnp_dtype)
      elif name.endswith("bias"):
        value = jnp.zeros(full_shape, cfg.param_jnp_dtype)
      else:
        value = 0.02 * jax.random.normal(rngs.params(), full_shape, cfg.param_jnp_dtype)
      setattr(self, name, nnx.Param(value, logical_axes=("layers", *axes)))

  def as_dict(self, names) -> dict[str, jax.Array]:
    return {name: getattr(self, name)[...] for name in names}


class Decoder(nnx.Module):
  """Causal LM: `model(tokens_BxT, positions_BxT, mask_BxT, cache)` -> (fp32 logits_BxTxV, updated cache)."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    d, v = cfg.hidden_size, cfg.vocab_size
    self.embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (v, d), cfg.param_jnp_dtype),
                           logical_axes=("vocab", "embed"))
    self.layers = Layers(cfg, rngs)
    self.final_norm = nnx.Param(jnp.ones((d,), cfg.param_jnp_dtype), logical_axes=("embed",))
    if not cfg.tie_word_embeddings:
      self.lm_head = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d, v), cfg.param_jnp_dtype),
                               logical_axes=("embed", "vocab"))

  def __call__(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, mask_BxT: jax.Array,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    hidden_BxTxD, cache = self.hidden_states(tokens_BxT, positions_BxT, mask_BxT, cache)
    return self.logits(hidden_BxTxD), cache

  def logits(self, hidden_BxTxD: jax.Array) -> jax.Array:
    head_DxV = self.embed[...].T if self.cfg.tie_word_embeddings else self.lm_head[...]
    return dense(hidden_BxTxD, head_DxV.astype(self.cfg.compute_jnp_dtype), jnp.float32)

  def hidden_states(self, tokens_BxT: jax.Array, positions_BxT: jax.Array, mask_BxT: jax.Array,
                    cache: KVCache | None = None) -> tuple[jax.Array, KVCache | None]:
    """Final-normed hidden states (the value head of a critic reads these)."""
    cfg = self.cfg
    dtype = cfg.compute_jnp_dtype
    _, seq_len = tokens_BxT.shape
    x_BxTxD = self.embed[...].astype(dtype)[tokens_BxT]
    cos_BxTxH, sin_BxTxH = rope_tables(cfg, positions_BxT)
    stacked = self.layers.as_dict(tuple(layer_param_specs(cfg)))
    if cache is None:
      attn_mask_Bx1xTxT = _attention_mask(mask_BxT, jnp.arange(seq_len), jnp.arange(seq_len))

      def attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH):
        if flash_attention_applies(cfg, q_BxTxNxH.dtype):
          return contiguous_rows_attention(cfg, q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, mask_BxT), None
        scale = 1.0 / math.sqrt(cfg.head_dim)
        return causal_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, attn_mask_Bx1xTxT, scale), None

      def body(x_BxTxD, params):
        return decoder_layer(cfg, params, x_BxTxD, cos_BxTxH, sin_BxTxH, attend)

      # The backward keeps each layer's projections (matmuls without batch dims) and recomputes the rest; full remat
      # keeps only the layer's input. Keeping every elementwise intermediate as well costs more than recomputing it:
      # their copies into per-layer buffers, and the fresh pages those take, made the CPU forward+backward 1.2x
      # slower (bench/RESULTS.md).
      policy = None if cfg.remat else jax.checkpoint_policies.dots_with_no_batch_dims_saveable
      body = jax.checkpoint(body, prevent_cse=not cfg.scan_layers, policy=policy)
      x_BxTxD, _ = _run_layers(body, x_BxTxD, stacked, cfg.num_layers, cfg.scan_layers)
    else:
      x_BxTxD, cache = _cached_layers(cfg, stacked, x_BxTxD, cos_BxTxH, sin_BxTxH, mask_BxT, cache)
    return rms_norm(x_BxTxD, self.final_norm[...], cfg.rms_norm_eps), cache


def _attention_mask(key_mask_BxS: jax.Array, key_slots_S: jax.Array, query_slots_T: jax.Array) -> jax.Array:
  """A query at slot i sees key slots j <= i that hold a real token."""
  return (key_mask_BxS[:, None, None, :].astype(bool)
          & (key_slots_S[None, None, None, :] <= query_slots_T[None, None, :, None]))


def _cached_layers(cfg: ModelConfig, stacked: dict[str, jax.Array], x_BxTxD: jax.Array, cos_BxTxH: jax.Array,
                   sin_BxTxH: jax.Array, mask_BxT: jax.Array, cache: KVCache) -> tuple[jax.Array, KVCache]:
  """The layers over T new tokens written at `cache.index`; each query attends to all S cache slots (masked).

  The whole [L, B, S, K, H] cache rides in the layer loop's carry and each layer writes its T new slots with one
  dynamic_update_slice, so inside a decode `while_loop` the cache buffers are updated in place (no per-token copy
  of the cache; a scan's stacked outputs would rebuild it every step).
  """
  seq_len = x_BxTxD.shape[1]
  write_index = cache.index
  key_mask_BxS = jax.lax.dynamic_update_slice(cache.mask_BxS, mask_BxT.astype(bool), (0, write_index))
  attn_mask_Bx1xTxS = _attention_mask(key_mask_BxS, jnp.arange(key_mask_BxS.shape[1]),
                                      write_index + jnp.arange(seq_len))

  def body(carry, layer_inputs):
    x_BxTxD, keys_LxBxSxKxH, values_LxBxSxKxH = carry
    params, layer = layer_inputs

    def attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH):
      start = (layer, 0, write_index, 0, 0)
      keys = jax.lax.dynamic_update_slice(keys_LxBxSxKxH, k_BxTxKxH[None], start)
      values = jax.lax.dynamic_update_slice(values_LxBxSxKxH, v_BxTxKxH[None], start)
      return attention(cfg, q_BxTxNxH, keys[layer], values[layer], attn_mask_Bx1xTxS), (keys, values)

    x_BxTxD, (keys, values) = decoder_layer(cfg, params, x_BxTxD, cos_BxTxH, sin_BxTxH, attend)
    return (x_BxTxD, keys, values), None

  carry = (x_BxTxD, cache.keys_LxBxSxKxH, cache.values_LxBxSxKxH)
  (x_BxTxD, keys, values), _ = _run_layers(body, carry, (stacked, jnp.arange(cfg.num_layers)), cfg.num_layers,
                                           cfg.scan_layers)
  return x_BxTxD, KVCache(keys, values, key_mask_BxS, write_index + seq_len)


def _run_layers(body: Callable, x, xs, num_layers: int, scan: bool):
  """lax.scan over the stacked layers, or an unrolled loop over their slices (same params, same numbers)."""
  if scan:
    return jax.lax.scan(body, x, xs)
  outputs = []
  for layer in range(num_layers):
    x, out = body(x, jax.tree.map(lambda a: a[layer], xs))
    outputs.append(out)
  return x, jax.tree.map(lambda *a: jnp.stack(a), *outputs) if outputs[0] is not None else None


def attention(cfg: ModelConfig, q_BxTxNxH: jax.Array, keys_BxSxKxH: jax.Array, values_BxSxKxH: jax.Array,
              mask_Bx1xTxS: jax.Array) -> jax.Array:
  """Masked attention with a T x S boolean mask: `grouped_attention` on XLA or, for a prefill chunk (T > 1) where
  `flash_attention_applies`, cuDNN's flash kernel reading the mask as an additive bias (no fp32 scores in memory).
  One query (decode) stays on XLA: a single row of scores gains nothing from a fused kernel."""
  scale = 1.0 / math.sqrt(cfg.head_dim)
  if q_BxTxNxH.shape[1] > 1 and flash_attention_applies(cfg, q_BxTxNxH.dtype):
    return jax.nn.dot_product_attention(q_BxTxNxH, keys_BxSxKxH, values_BxSxKxH, mask=mask_Bx1xTxS, scale=scale,
                                        implementation="cudnn")
  return grouped_attention(q_BxTxNxH, keys_BxSxKxH, values_BxSxKxH, mask_Bx1xTxS, scale)


def causal_attention(q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array, mask_Bx1xTxT: jax.Array,
                     scale: float) -> jax.Array:
  """Self-attention over T slots whose mask lets a query see no later slot: `grouped_attention` for blocks of
  queries, each against the keys up to its own last slot, so the scores above the diagonal are never computed (at
  most 8 blocks of at least 64 slots: 4 blocks skip 38% of the score FLOPs, 8 skip 44%; T <= 64 is one block).

  A real token sees itself, and the keys a block leaves out are masked for it (weight exp(large negative) = 0), so
  real tokens get `grouped_attention`'s numbers up to fp32 summation order. A query that sees no key at all (left
  padding) weighs its block's keys uniformly rather than all T: nothing reads it."""
  length = q_BxTxNxH.shape[1]
  block = max(64, -(-length // 8))
  out_blocks = []
  for start in range(0, length, block):
    stop = min(start + block, length)
    out_blocks.append(grouped_attention(q_BxTxNxH[:, start:stop], k_BxTxKxH[:, :stop], v_BxTxKxH[:, :stop],
                                        mask_Bx1xTxT[:, :, start:stop, :stop], scale))
  return jnp.concatenate(out_blocks, axis=1)


def grouped_attention(q_BxTxNxH: jax.Array, keys_BxSxKxH: jax.Array, values_BxSxKxH: jax.Array,
                      mask_Bx1xTxS: jax.Array, scale: float) -> jax.Array:
  """`jax.nn.dot_product_attention`'s XLA computation (fp32 scores and softmax, masked scores set to its large
  negative), laid out heads-major: the G query heads that share a KV head are folded into the rows, R = G*T, so
  both matmuls are plain [R, H] x [H, S] and [R, S] x [S, H] per (row, KV head). Its [B, T, K, G, S] layout made
  XLA's CPU backend copy and transpose the scores around every matmul of the backward: forward+backward of
  attention took twice as long."""
  batch, length, num_heads, head_dim = q_BxTxNxH.shape
  num_kv_heads = keys_BxSxKxH.shape[2]
  group = num_heads // num_kv_heads
  q_BxKxRxH = (q_BxTxNxH.reshape(batch, length, num_kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)
               .reshape(batch, num_kv_heads, group * length, head_dim))
  keys_BxKxSxH, values_BxKxSxH = keys_BxSxKxH.transpose(0, 2, 1, 3), values_BxSxKxH.transpose(0, 2, 1, 3)
  # As jax: 16-bit inputs multiply with fp32 accumulation (a preset, so the backward's dtypes agree).
  precision = {jnp.dtype(jnp.bfloat16): jax.lax.DotAlgorithmPreset.BF16_BF16_F32,
               jnp.dtype(jnp.float16): jax.lax.DotAlgorithmPreset.F16_F16_F32}.get(jnp.dtype(q_BxTxNxH.dtype))
  scores_BxKxRxS = jnp.einsum("bkrh,bksh->bkrs", q_BxKxRxH, keys_BxKxSxH, precision=precision,
                              preferred_element_type=jnp.float32) * jnp.float32(scale)
  mask_Bx1xRxS = jnp.tile(mask_Bx1xTxS, (1, 1, group, 1))
  large_negative = jnp.float32(-0.7 * jnp.finfo(jnp.float32).max)
  probs_BxKxRxS = jax.nn.softmax(jnp.where(mask_Bx1xRxS, scores_BxKxRxS, large_negative), axis=-1)
  out_BxKxRxH = jnp.einsum("bkrs,bksh->bkrh", probs_BxKxRxS.astype(values_BxKxSxH.dtype), values_BxKxSxH)
  return (out_BxKxRxH.reshape(batch, num_kv_heads, group, length, head_dim).transpose(0, 3, 1, 2, 4)
          .reshape(batch, length, num_heads, head_dim))


def contiguous_rows_attention(cfg: ModelConfig, q_BxTxNxH: jax.Array, k_BxTxKxH: jax.Array, v_BxTxKxH: jax.Array,
                              mask_BxT: jax.Array, implementation: str = "cudnn") -> jax.Array:
  """Causal self-attention over rows whose real tokens are contiguous (right-padded training rows, left-padded
  prompts), expressed as the flash kernel's causal flag + per-row lengths, so no T x T mask is built: each row is
  rotated so that its real tokens start at slot 0, attended, and rotated back. At real tokens this equals
  `attention` with `_attention_mask(mask_BxT, ...)`; padding slots' outputs are unspecified (nothing reads them)."""
  start_B = jnp.argmax(mask_BxT, axis=1).astype(jnp.int32)  # first real slot (0 for an empty row)
  length_B = jnp.maximum(jnp.sum(mask_BxT, axis=1, dtype=jnp.int32), 1)  # an empty row attends to one slot: finite
  rotate = jax.vmap(lambda x_TxNxH, shift: jnp.roll(x_TxNxH, shift, axis=0))
  q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = (rotate(x, -start_B) for x in (q_BxTxNxH, k_BxTxKxH, v_BxTxKxH))
  out_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH, scale=1.0 / math.sqrt(cfg.head_dim),
                                             is_causal=True, query_seq_lengths=length_B,
                                             key_value_seq_lengths=length_B, implementation=implementation)
  return rotate(out_BxTxNxH, start_B)


def flash_attention_applies(cfg: ModelConfig, dtype: jnp.dtype) -> bool:
  """Whether `cfg.attention_impl` takes cuDNN's flash kernel for this compute dtype, decided when tracing.

  "auto": on an NVIDIA GPU, for 16-bit compute and a head_dim the kernel takes (a multiple of 8, at most 128);
  "cudnn": the same, but a backend without CUDA is an error; "xla": never. float32 always stays on XLA (the kernel
  has no fp32 path), so CPU runs and fp32 runs compute exactly what they did before the switch existed."""
  if cfg.attention_impl == "xla":
    return False
  on_nvidia_gpu = jax.default_backend() == "gpu" and "cuda" in jax.extend.backend.get_backend().platform_version
  if cfg.attention_impl == "cudnn" and not on_nvidia_gpu:
    raise ValueError(f"attention_impl='cudnn' needs an NVIDIA GPU; the backend is {jax.default_backend()} "
                     "(use 'auto' or 'xla')")
  head_dim_ok = cfg.head_dim % 8 == 0 and cfg.head_dim <= 128
  return on_nvidia_gpu and head_dim_ok and jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def decoder_layer(cfg: ModelConfig, params: dict[str, jax.Array], x_BxTxD: jax.Array, cos_BxTxH: jax.Array,
                  sin_BxTxH: jax.Array, attend: Callable) -> tuple[jax.Array, Any]:
  """Pre-norm attention + SwiGLU MLP block. `attend(q, k, v) -> (attention output, aux)` gets this layer's new keys
  and values (a cached call also writes them to its cache: aux); returns the new residual stream and aux."""
  dtype = cfg.compute_jnp_dtype
  p = {name: value.astype(dtype) for name, value in params.items()}
  h_BxTxD = rms_norm(x_BxTxD, p["attn_norm"], cfg.rms_norm_eps)
  q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = dense(h_BxTxD, p["q"]), dense(h_BxTxD, p["k"]), dense(h_BxTxD, p["v"])
  if cfg.qkv_bias:
    q_BxTxNxH, k_BxTxKxH, v_BxTxKxH = q_BxTxNxH + p["q_bias"], k_BxTxKxH + p["k_bias"], v_BxTxKxH + p["v_bias"]
  if cfg.qk_norm:
    q_BxTxNxH = rms_norm(q_BxTxNxH, p["q_norm"], cfg.rms_norm_eps)
    k_BxTxKxH = rms_norm(k_BxTxKxH, p["k_norm"], cfg.rms_norm_eps)
  q_BxTxNxH = apply_rope(q_BxTxNxH, cos_BxTxH, sin_BxTxH)
  k_BxTxKxH = apply_rope(k_BxTxKxH, cos_BxTxH, sin_BxTxH)
  attn_BxTxNxH, aux = attend(q_BxTxNxH, k_BxTxKxH, v_BxTxKxH)
  out_BxTxD = dense(attn_BxTxNxH.reshape(*attn_BxTxNxH.shape[:2], -1), p["o"].reshape(-1, p["o"].shape[-1]))
  if cfg.o_bias:
    out_BxTxD = out_BxTxD + p["o_bias"]
  x_BxTxD = x_BxTxD + out_BxTxD
  h_BxTxD = rms_norm(x_BxTxD, p["mlp_norm"], cfg.rms_norm_eps)
  gated_BxTxF = jax.nn.silu(dense(h_BxTxD, p["gate"])) * dense(h_BxTxD, p["up"])
  return x_BxTxD + dense(gated_BxTxF, p["down"]), aux


def dense(x_BxTxD: jax.Array, w_Dx: jax.Array, preferred_element_type: jnp.dtype | None = None) -> jax.Array:
  """x @ w for a weight [D, ...] (output dims flattened, e.g. [D, heads, head_dim]) over rows flattened to
  [B*T, D]: the weight gradient is then one plain [D, B*T] x [B*T, F] matmul, which XLA's CPU backend runs on its
  fast GEMM path (a contraction over both B and T goes through transposing copies and a slower kernel:
  forward+backward was 1.3-1.4x slower)."""
  rows_NxD = x_BxTxD.reshape(-1, x_BxTxD.shape[-1])
  out_NxF = jnp.matmul(rows_NxD, w_Dx.reshape(w_Dx.shape[0], -1), preferred_element_type=preferred_element_type)
  return out_NxF.reshape(*x_BxTxD.shape[:-1], *w_Dx.shape[1:])


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """HF RMSNorm: normalise in fp32, cast back, then scale."""
  x32 = x.astype(jnp.float32)
  normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * normed.astype(x.dtype)


def rope_inv_freq(cfg: ModelConfig) -> jax.Array:
  """Inverse RoPE frequencies [head_dim/2], with Llama-3 scaling when configured."""
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  scaling = cfg.rope_scaling
  if scaling is None:
    return inv_freq
  low_freq_wavelen = scaling.original_max_position_embeddings / scaling.low_freq_factor
  high_freq_wavelen = scaling.original_max_position_embeddings / scaling.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
  smooth = ((scaling.original_max_position_embeddings / wavelen - scaling.low_freq_factor)
            / (scaling.high_freq_factor - scaling.low_freq_factor))
  smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
  is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return jnp.where(is_medium, smoothed, scaled)


def rope_tables(cfg: ModelConfig, positions_BxT: jax.Array) -> tuple[jax.Array, jax.Array]:
  freqs_BxTxH2 = positions_BxT.astype(jnp.float32)[..., None] * rope_inv_freq(cfg)
  angles_BxTxH = jnp.concatenate([freqs_BxTxH2, freqs_BxTxH2], axis=-1)
  dtype = cfg.compute_jnp_dtype
  return jnp.cos(angles_BxTxH).astype(dtype), jnp.sin(angles_BxTxH).astype(dtype)


def apply_rope(x_BxTxNxH: jax.Array, cos_BxTxH: jax.Array, sin_BxTxH: jax.Array) -> jax.Array:
  """HF's rotate-half convention (first half of head_dim pairs with the second half)."""
  half = x_BxTxNxH.shape[-1] // 2
  rotated = jnp.concatenate([-x_BxTxNxH[..., half:], x_BxTxNxH[..., :half]], axis=-1)
  return x_BxTxNxH * cos_BxTxH[:, :, None, :] + rotated * sin_BxTxH[:, :, None, :]


def positions_from_mask(mask_BxT: jax.Array) -> jax.Array:
  """RoPE positions counted from each row's first real token (left padding gets position 0)."""
  return jnp.maximum(jnp.cumsum(mask_BxT.astype(jnp.int32), axis=-1) - 1, 0)
