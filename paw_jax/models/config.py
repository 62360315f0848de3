"""ModelConfig: one dataclass for Llama, Qwen2/2.5 and Qwen3 decoders, built from (and written back to) HF config.json."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# "auto": cuDNN's flash kernel on an NVIDIA GPU where it applies (16-bit compute), XLA elsewhere.
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


class UnsupportedConfigError(ValueError):
  """A HF config asks for something this decoder does not implement (never silently wrong numbers)."""


@dataclasses.dataclass(frozen=True)
class RopeScaling:
  """Llama-3 frequency-dependent RoPE scaling ('llama3' rope_type)."""
  factor: float
  low_freq_factor: float
  high_freq_factor: float
  original_max_position_embeddings: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rms_norm_eps: float = 1e-6
  rope_theta: float = 10000.0
  rope_scaling: RopeScaling | None = None
  max_position_embeddings: int = 4096
  tie_word_embeddings: bool = False
  qkv_bias: bool = False  # Qwen2: bias on q/k/v only
  o_bias: bool = False  # Llama `attention_bias=True` also biases o_proj
  bos_token_id: int | None = None
  eos_token_id: int | list[int] | None = None
  # Numerics and compilation: not part of the checkpoint.
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  remat: bool = False  # recompute each whole layer in the backward pass (else only its projections are kept)
  scan_layers: bool = True  # lax.scan over stacked layers: compile time independent of depth
  attention_impl: str = "auto"  # one of ATTENTION_IMPLS (`transformer.flash_attention_applies`)

  def __post_init__(self):
    if self.model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedConfigError(
          f"model_type '{self.model_type}' is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    if self.num_heads % self.num_kv_heads:
      raise UnsupportedConfigError(
          f"num_attention_heads={self.num_heads} is not a multiple of num_key_value_heads={self.num_kv_heads}")
    for name in ("param_dtype", "compute_dtype"):
      if getattr(self, name) not in _DTYPES:
        raise ValueError(f"{name}='{getattr(self, name)}' must be one of {', '.join(_DTYPES)}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attention_impl='{self.attention_impl}' must be one of {', '.join(ATTENTION_IMPLS)}")

  @property
  def qk_norm(self) -> bool:
    """RMSNorm over head_dim on q and k before RoPE: every Qwen3 has it, no Llama or Qwen2 does."""
    return self.model_type == "qwen3"

  @property
  def param_jnp_dtype(self):
    return _DTYPES[self.param_dtype]

  @property
  def compute_jnp_dtype(self):
    return _DTYPES[self.compute_dtype]

  def replace(self, **changes) -> ModelConfig:
    return dataclasses.replace(self, **changes)

  @property
  def num_params(self) -> int:
    d, f, l = self.hidden_size, self.intermediate_size, self.num_layers
    attn = d * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
    embed = self.vocab_size * d * (1 if self.tie_word_embeddings else 2)
    return embed + l * (attn + 3 * d * f + 2 * d) + d

  @classmethod
  def from_hf(cls, hf: dict[str, Any], **overrides) -> ModelConfig:
    """Builds the config from a HF config.json dict; fields we cannot honour raise UnsupportedConfigError."""
    model_type = hf.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
      raise UnsupportedConfigError(
          f"model_type '{model_type}' is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise UnsupportedConfigError(f"hidden_act '{act}' is not supported (only 'silu')")
    if hf.get("mlp_bias"):
      raise UnsupportedConfigError("mlp_bias=True is not supported")
    if hf.get("use_sliding_window"):
      raise UnsupportedConfigError("use_sliding_window=True is not supported (full attention only)")
    if hf.get("pretraining_tp", 1) != 1:
      raise UnsupportedConfigError(f"pretraining_tp={hf['pretraining_tp']} is not supported (only 1)")
    num_heads = hf["num_attention_heads"]
    rope_theta, rope_scaling = _parse_rope(hf)
    attention_bias = bool(hf.get("attention_bias", False))
    fields = dict(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=hf.get("head_dim") or hf["hidden_size"] // num_heads,
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=rope_theta,
        rope_scaling=rope_scaling,
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        qkv_bias=model_type == "qwen2" or attention_bias,
        o_bias=model_type == "llama" and attention_bias,
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=hf.get("eos_token_id"),
    )
    fields.update(overrides)
    return cls(**fields)

  def to_hf(self) -> dict[str, Any]:
    """The HF config.json dict transformers needs to build the same model."""
    architectures = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": self.rope_theta}
    if self.rope_scaling is not None:
      rope = {"rope_type": "llama3", "rope_theta": self.rope_theta, **dataclasses.asdict(self.rope_scaling)}
    hf = {
        "architectures": [architectures[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": None if self.rope_scaling is None else rope,
        "rope_parameters": rope,
        "max_position_embeddings": self.max_position_embeddings,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": self.eos_token_id,
        "torch_dtype": self.param_dtype,
    }
    if self.model_type == "llama":
      hf["attention_bias"] = self.o_bias
      hf["mlp_bias"] = False
    if self.model_type == "qwen3":
      hf["attention_bias"] = self.qkv_bias
    return hf


def _parse_rope(hf: dict[str, Any]) -> tuple[float, RopeScaling | None]:
  """RoPE theta and scaling from either transformers-4 (`rope_theta`, `rope_scaling`) or -5 (`rope_parameters`)."""
  rope = dict(hf.get("rope_parameters") or {})
  rope.update(hf.get("rope_scaling") or {})
  theta = float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type == "default":
    return theta, None
  if rope_type == "llama3":
    return theta, RopeScaling(
        factor=float(rope["factor"]),
        low_freq_factor=float(rope["low_freq_factor"]),
        high_freq_factor=float(rope["high_freq_factor"]),
        original_max_position_embeddings=int(rope["original_max_position_embeddings"]))
  raise UnsupportedConfigError(f"rope_scaling type '{rope_type}' is not supported (only default and 'llama3')")
