"""GGUF (llama.cpp) checkpoints in: an HF-style config dict and an HF-named float32 numpy state dict.

Tensors are dequantized with the `gguf` package's numpy kernels. GGUF stores a matrix with ggml shape [in, out]
whose numpy view is [out, in], i.e. already torch Linear layout. llama.cpp's converter permutes the rows of Llama
q/k projections (rotary halves interleaved per head); that permutation is undone here. Qwen2/Qwen3 are stored
unpermuted.
"""
from __future__ import annotations

import os
import pathlib
import re
from typing import Any

import gguf
import numpy as np

SUPPORTED_ARCHITECTURES = ("llama", "qwen2", "qwen3")

# "<architecture>.<key>" metadata -> HF config field.
_ARCH_CONFIG_KEYS = {
    "embedding_length": "hidden_size",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "rope.freq_base": "rope_theta",
    "context_length": "max_position_embeddings",
}
_REQUIRED_ARCH_KEYS = ("embedding_length", "feed_forward_length", "block_count", "attention.head_count",
                       "attention.layer_norm_rms_epsilon", "context_length")
# Where converters record the head size (HF `head_dim`); full-rotary models give it in either place.
_HEAD_DIM_KEYS = ("attention.key_length", "rope.dimension_count")
_TOKEN_ID_KEYS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id", "padding_token_id": "pad_token_id"}
_DEFAULT_ROPE_THETA = 10000.0  # HF's default; llama.cpp omits rope.freq_base when the HF config had none

_GLOBAL_TENSORS = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_TENSOR_NAME = re.compile(r"(?:blk\.(?P<layer>\d+)\.)?(?P<base>\w+)\.(?P<kind>weight|bias)")


def open_gguf(path: str | os.PathLike) -> gguf.GGUFReader:
  """A GGUFReader over `path` (memory-mapped); a clear error for a missing or non-GGUF file."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"GGUF file not found: {path}")
  try:
    return gguf.GGUFReader(path)
  except ValueError as e:
    raise ValueError(f"{path} is not a readable GGUF file: {e}") from e


def _field(reader: gguf.GGUFReader, key: str) -> Any:
  """A metadata value (python scalar, str or list), or None when absent."""
  field = reader.fields.get(key)
  return None if field is None else field.contents()


def gguf_config(reader: gguf.GGUFReader) -> dict[str, Any]:
  """HF-style config (LlamaConfig / Qwen2Config / Qwen3Config field names) from the GGUF metadata."""
  arch = _field(reader, "general.architecture")
  if arch not in SUPPORTED_ARCHITECTURES:
    raise ValueError(f"unsupported GGUF architecture {arch!r} in {reader.data.filename}; "
                     f"expected one of {', '.join(SUPPORTED_ARCHITECTURES)}")
  missing = [f"{arch}.{key}" for key in _REQUIRED_ARCH_KEYS if f"{arch}.{key}" not in reader.fields]
  if missing:
    raise ValueError(f"GGUF metadata lacks {', '.join(missing)} in {reader.data.filename}")
  config: dict[str, Any] = {"model_type": arch}
  for key, hf_key in _ARCH_CONFIG_KEYS.items():
    value = _field(reader, f"{arch}.{key}")
    if value is not None:
      config[hf_key] = value
  config.setdefault("num_key_value_heads", config["num_attention_heads"])
  head_dims = [_field(reader, f"{arch}.{key}") for key in _HEAD_DIM_KEYS]
  config["head_dim"] = next((d for d in head_dims if d is not None),
                            config["hidden_size"] // config["num_attention_heads"])
  config.setdefault("rope_theta", _DEFAULT_ROPE_THETA)
  tensors = {t.name: t for t in reader.tensors}
  if "token_embd.weight" not in tensors:
    raise ValueError(f"GGUF file {reader.data.filename} has no token_embd.weight tensor")
  config["vocab_size"] = int(tensors["token_embd.weight"].shape[-1])  # embedding rows, ggml shape [hidden, vocab]
  config["tie_word_embeddings"] = "output.weight" not in tensors
  config["attention_bias"] = "blk.0.attn_q.bias" in tensors
  for key, hf_key in _TOKEN_ID_KEYS.items():
    value = _field(reader, f"tokenizer.ggml.{key}")
    if value is not None:
      config[hf_key] = value
  return config


def hf_tensor_name(gguf_name: str) -> str:
  """`blk.3.attn_q.weight` -> `model.layers.3.self_attn.q_proj.weight`, `token_embd.weight` -> ..."""
  match = _TENSOR_NAME.fullmatch(gguf_name)
  table = _GLOBAL_TENSORS if match and match["layer"] is None else _LAYER_TENSORS
  if match is None or match["base"] not in table:
    raise ValueError(f"unsupported GGUF tensor {gguf_name!r} (expected token_embd, output_norm, output or "
                     f"blk.N.{{{','.join(_LAYER_TENSORS)}}})")
  prefix = "" if match["layer"] is None else f"model.layers.{match['layer']}."
  return f"{prefix}{table[match['base']]}.{match['kind']}"


def undo_rope_permutation(weight_OxI: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's Llama q/k row permutation: per head, rows (2, R/2) were stored as (R/2, 2)."""
  rows = weight_OxI.shape[0]
  per_head = weight_OxI.reshape(num_heads, rows // num_heads // 2, 2, *weight_OxI.shape[1:])
  return per_head.swapaxes(1, 2).reshape(weight_OxI.shape)


def _dequantize(tensor: gguf.gguf_reader.ReaderTensor) -> np.ndarray:
  """float32 array in numpy (= HF) layout, owning its memory (F32 tensors are views of the read-only map)."""
  weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
  return np.array(weights, dtype=np.float32).reshape(tuple(reversed(tensor.shape.tolist())))


def _undo_llama_qk_permutation(name: str, weights: np.ndarray, config: dict[str, Any]) -> np.ndarray:
  if name.endswith("self_attn.q_proj.weight"):
    return undo_rope_permutation(weights, config["num_attention_heads"])
  if name.endswith("self_attn.k_proj.weight"):
    return undo_rope_permutation(weights, config["num_key_value_heads"])
  return weights


def read_gguf(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(HF-style config, HF-named float32 state dict) of a Llama / Qwen2 / Qwen3 GGUF checkpoint."""
  reader = open_gguf(path)
  config = gguf_config(reader)
  state: dict[str, np.ndarray] = {}
  for tensor in reader.tensors:
    name = hf_tensor_name(tensor.name)
    weights = _dequantize(tensor)
    if config["model_type"] == "llama":
      weights = _undo_llama_qk_permutation(name, weights, config)
    state[name] = weights
  return config, state
