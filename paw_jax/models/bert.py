"""A Flax NNX BERT encoder (the all-MiniLM-L6-v2 architecture), numerically Hugging Face's `BertModel`.

Word + position + token-type embeddings and a LayerNorm, then post-LN layers (attention, add, LayerNorm; GELU MLP,
add, LayerNorm). Rows are right-padded: absolute position embeddings count from the first slot, and padded keys are
masked out. Layer parameters are stacked on a leading `layers` axis and run under `lax.scan`, as in the decoder. The
pooler is not loaded: sentence embeddings pool the last hidden states instead.
"""
from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open


@dataclasses.dataclass(frozen=True)
class BertConfig:
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @classmethod
  def from_hf(cls, hf: dict[str, Any]) -> BertConfig:
    """From a HF config.json dict; what this encoder does not implement raises ValueError."""
    if hf.get("model_type") != "bert":
      raise ValueError(f"model_type '{hf.get('model_type')}' is not a BERT encoder (expected 'bert')")
    if hf.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"hidden_act '{hf['hidden_act']}' is not supported (only the exact-erf 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError(f"position_embedding_type '{hf['position_embedding_type']}' is not supported (only absolute)")
    return cls(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
               num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
               max_position_embeddings=hf.get("max_position_embeddings", 512),
               type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12))


def top_param_specs(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
  d = cfg.hidden_size
  return {"word_embed": (cfg.vocab_size, d), "position_embed": (cfg.max_position_embeddings, d),
          "type_embed": (cfg.type_vocab_size, d), "embed_norm_scale": (d,), "embed_norm_bias": (d,)}


def layer_param_specs(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
  """Per-layer parameter shapes (without the leading layers axis)."""
  d, n, h, f = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.intermediate_size
  return {
      "q": (d, n, h), "q_bias": (n, h),
      "k": (d, n, h), "k_bias": (n, h),
      "v": (d, n, h), "v_bias": (n, h),
      "o": (n, h, d), "o_bias": (d,),
      "attn_norm_scale": (d,), "attn_norm_bias": (d,),
      "up": (d, f), "up_bias": (f,),
      "down": (f, d), "down_bias": (d,),
      "mlp_norm_scale": (d,), "mlp_norm_bias": (d,),
  }


def _init(rngs: nnx.Rngs, name: str, shape: tuple[int, ...]) -> nnx.Param:
  if name.endswith("scale"):
    return nnx.Param(jnp.ones(shape, jnp.float32))
  if name.endswith("bias"):
    return nnx.Param(jnp.zeros(shape, jnp.float32))
  return nnx.Param(0.02 * jax.random.normal(rngs.params(), shape, jnp.float32))


class BertLayers(nnx.Module):
  """All encoder layers' parameters, stacked: each attribute is [num_layers, ...]."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    for name, shape in layer_param_specs(cfg).items():
      setattr(self, name, _init(rngs, name, (cfg.num_layers, *shape)))

  def as_dict(self, names) -> dict[str, jax.Array]:
    return {name: getattr(self, name)[...] for name in names}


class BertEncoder(nnx.Module):
  """`encoder(tokens_BxT, mask_BxT)` -> fp32 last hidden states [B, T, D] of right-padded rows (HF's
  `last_hidden_state`); token types are all 0 (single-segment inputs)."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    for name, shape in top_param_specs(cfg).items():
      setattr(self, name, _init(rngs, name, shape))
    self.layers = BertLayers(cfg, rngs)

  def __call__(self, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
    cfg = self.cfg
    seq_len = tokens_BxT.shape[1]
    x_BxTxD = (self.word_embed[...][tokens_BxT] + self.position_embed[...][:seq_len][None]
               + self.type_embed[...][0])
    x_BxTxD = layer_norm(x_BxTxD, self.embed_norm_scale[...], self.embed_norm_bias[...], cfg.layer_norm_eps)
    key_mask_Bx1x1xT = mask_BxT[:, None, None, :].astype(bool)

    def body(x_BxTxD, params):
      return encoder_layer(cfg, params, x_BxTxD, key_mask_Bx1x1xT), None

    x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, self.layers.as_dict(layer_param_specs(cfg)))
    return x_BxTxD


def encoder_layer(cfg: BertConfig, p: dict[str, jax.Array], x_BxTxD: jax.Array,
                  key_mask_Bx1x1xT: jax.Array) -> jax.Array:
  """Post-LN block: x = LN(x + attention(x)); x = LN(x + MLP(x)) with exact (erf) GELU."""
  q_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, p["q"]) + p["q_bias"]
  k_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, p["k"]) + p["k_bias"]
  v_BxTxNxH = jnp.einsum("btd,dnh->btnh", x_BxTxD, p["v"]) + p["v_bias"]
  attn_BxTxNxH = jax.nn.dot_product_attention(q_BxTxNxH, k_BxTxNxH, v_BxTxNxH, mask=key_mask_Bx1x1xT,
                                              scale=1.0 / math.sqrt(cfg.head_dim))
  out_BxTxD = jnp.einsum("btnh,nhd->btd", attn_BxTxNxH, p["o"]) + p["o_bias"]
  x_BxTxD = layer_norm(x_BxTxD + out_BxTxD, p["attn_norm_scale"], p["attn_norm_bias"], cfg.layer_norm_eps)
  hidden_BxTxF = jax.nn.gelu(x_BxTxD @ p["up"] + p["up_bias"], approximate=False)
  x_BxTxD = x_BxTxD + hidden_BxTxF @ p["down"] + p["down_bias"]
  return layer_norm(x_BxTxD, p["mlp_norm_scale"], p["mlp_norm_bias"], cfg.layer_norm_eps)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """torch LayerNorm: biased variance over the last axis."""
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


# --- loading ------------------------------------------------------------------------------------------------------
_TOP_KEYS = {
    "word_embed": "embeddings.word_embeddings.weight",
    "position_embed": "embeddings.position_embeddings.weight",
    "type_embed": "embeddings.token_type_embeddings.weight",
    "embed_norm_scale": "embeddings.LayerNorm.weight",
    "embed_norm_bias": "embeddings.LayerNorm.bias",
}
# Our per-layer name -> HF key below `encoder.layer.{i}.`; 2-D tensors are torch Linear weights [out, in].
_LAYER_KEYS = {
    "q": "attention.self.query.weight", "q_bias": "attention.self.query.bias",
    "k": "attention.self.key.weight", "k_bias": "attention.self.key.bias",
    "v": "attention.self.value.weight", "v_bias": "attention.self.value.bias",
    "o": "attention.output.dense.weight", "o_bias": "attention.output.dense.bias",
    "attn_norm_scale": "attention.output.LayerNorm.weight", "attn_norm_bias": "attention.output.LayerNorm.bias",
    "up": "intermediate.dense.weight", "up_bias": "intermediate.dense.bias",
    "down": "output.dense.weight", "down_bias": "output.dense.bias",
    "mlp_norm_scale": "output.LayerNorm.weight", "mlp_norm_bias": "output.LayerNorm.bias",
}


def hf_to_params(cfg: BertConfig, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
  """HF `BertModel` tensors (keys with or without a `bert.` prefix) -> our nested fp32 param dict."""
  prefix = "bert." if "bert." + _TOP_KEYS["word_embed"] in tensors else ""

  def get(key: str, shape: tuple[int, ...], linear: bool) -> np.ndarray:
    if prefix + key not in tensors:
      raise KeyError(f"checkpoint has no tensor '{prefix + key}'")
    array = np.asarray(tensors[prefix + key], np.float32)
    if array.size != math.prod(shape):
      raise ValueError(f"tensor '{prefix + key}' has shape {array.shape}; expected {math.prod(shape)} elements")
    return (array.T if linear else array).reshape(shape)

  params: dict[str, Any] = {name: get(_TOP_KEYS[name], shape, False) for name, shape in top_param_specs(cfg).items()}
  params["layers"] = {
      name: np.stack([get(f"encoder.layer.{i}.{_LAYER_KEYS[name]}", shape, len(shape) >= 2)
                      for i in range(cfg.num_layers)])
      for name, shape in layer_param_specs(cfg).items()}
  return params


def load_bert(path: str | pathlib.Path) -> BertEncoder:
  """A BertEncoder from a directory with a BERT config.json and model.safetensors; anything else raises one line."""
  path = pathlib.Path(path)
  config_file, weights_file = path / "config.json", path / "model.safetensors"
  if not (config_file.is_file() and weights_file.is_file()):
    raise ValueError(f"'{path}' is not a BERT checkpoint directory (needs config.json and model.safetensors)")
  try:
    cfg = BertConfig.from_hf(json.loads(config_file.read_text()))
  except ValueError as e:
    raise ValueError(f"'{path}' is not a supported BERT checkpoint: {e}") from None
  with safe_open(weights_file, framework="flax") as f:  # flax, not numpy: numpy has no bfloat16
    tensors = {key: np.asarray(f.get_tensor(key).astype(jnp.float32)) for key in f.keys()}
  graphdef, state = nnx.split(nnx.eval_shape(lambda: BertEncoder(cfg, rngs=nnx.Rngs(0))))
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, hf_to_params(cfg, tensors)))
  return nnx.merge(graphdef, state)
