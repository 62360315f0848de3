"""Hugging Face checkpoints in and out: a config.json + safetensors directory (single or index-sharded), or a GGUF file.

HF stores each projection as a torch Linear weight [out, in]; the decoder stores it as [in..., out...] (e.g. q is
[embed, heads, head_dim], o is [heads, head_dim, embed]) with layers stacked on a leading axis. One table says, per
parameter, the HF key and how many leading dims of our layout are the Linear's input; both directions use it.
"""
from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open
from etils import epath
from safetensors.flax import save

from paw_jax import multihost, sharding
from paw_jax.models.assets import resolve_model_path
from paw_jax.models.config import ModelConfig
from paw_jax.models.gguf_io import read_gguf
from paw_jax.models.transformer import Decoder, layer_param_specs

# Our per-layer name -> (HF key below `model.layers.{i}.`, number of input dims for a Linear weight; None: no transpose).
_LAYER_KEYS: dict[str, tuple[str, int | None]] = {
    "attn_norm": ("input_layernorm.weight", None),
    "q": ("self_attn.q_proj.weight", 1),
    "k": ("self_attn.k_proj.weight", 1),
    "v": ("self_attn.v_proj.weight", 1),
    "o": ("self_attn.o_proj.weight", 2),
    "q_bias": ("self_attn.q_proj.bias", None),
    "k_bias": ("self_attn.k_proj.bias", None),
    "v_bias": ("self_attn.v_proj.bias", None),
    "o_bias": ("self_attn.o_proj.bias", None),
    "q_norm": ("self_attn.q_norm.weight", None),
    "k_norm": ("self_attn.k_norm.weight", None),
    "mlp_norm": ("post_attention_layernorm.weight", None),
    "gate": ("mlp.gate_proj.weight", 1),
    "up": ("mlp.up_proj.weight", 1),
    "down": ("mlp.down_proj.weight", 1),
}
_TOP_KEYS: dict[str, tuple[str, int | None]] = {
    "embed": ("model.embed_tokens.weight", None),
    "final_norm": ("model.norm.weight", None),
    "lm_head": ("lm_head.weight", 1),
}


def _to_ours(hf_array: np.ndarray, shape: tuple[int, ...], in_dims: int | None) -> np.ndarray:
  return (hf_array if in_dims is None else hf_array.T).reshape(shape)


def _to_hf(array: np.ndarray, key: str, in_dims: int | None) -> np.ndarray:
  if in_dims is None:  # same layout; our [heads, head_dim] biases are flat vectors in HF
    return array.reshape(-1) if key.endswith(".bias") else array
  fan_in = math.prod(array.shape[:in_dims])
  return array.reshape(fan_in, -1).T


def _param_table(cfg: ModelConfig) -> Iterator[tuple[tuple[str, ...], str, tuple[int, ...], int | None]]:
  """(our path, HF key, our shape, input dims) for every tensor; layer params once per layer index."""
  d, v = cfg.hidden_size, cfg.vocab_size
  top_shapes = {"embed": (v, d), "final_norm": (d,), "lm_head": (d, v)}
  for name, (key, in_dims) in _TOP_KEYS.items():
    if name == "lm_head" and cfg.tie_word_embeddings:
      continue
    yield (name,), key, top_shapes[name], in_dims
  for name, (shape, _) in layer_param_specs(cfg).items():
    key, in_dims = _LAYER_KEYS[name]
    for layer in range(cfg.num_layers):
      yield ("layers", name, str(layer)), f"model.layers.{layer}.{key}", shape, in_dims


def hf_to_params(cfg: ModelConfig, tensors: dict[str, np.ndarray] | Any) -> dict[str, Any]:
  """HF-named tensors -> our nested param dict (numpy, param dtype), layer params stacked."""
  dtype = np.dtype(cfg.param_jnp_dtype)
  params: dict[str, Any] = {"layers": {}}
  per_layer: dict[str, list[np.ndarray]] = {}
  for path, key, shape, in_dims in _param_table(cfg):
    if key not in tensors:
      raise KeyError(f"checkpoint has no tensor '{key}' (needed for {cfg.model_type} with this config)")
    hf_array = np.asarray(tensors[key])
    expected = math.prod(shape)
    if hf_array.size != expected:
      raise ValueError(f"tensor '{key}' has shape {hf_array.shape}; expected {expected} elements for {shape}")
    array = _to_ours(hf_array, shape, in_dims).astype(dtype)
    if path[0] == "layers":
      per_layer.setdefault(path[1], []).append(array)
    else:
      params[path[0]] = array
  params["layers"] = {name: np.stack(arrays) for name, arrays in per_layer.items()}
  return params


def params_to_hf(cfg: ModelConfig, params: dict[str, Any]) -> dict[str, np.ndarray]:
  """Our nested param dict -> HF-named tensors (inverse of `hf_to_params`)."""
  return dict(hf_tensors(cfg, params))


def hf_tensors(cfg: ModelConfig, params: dict[str, Any]) -> Iterator[tuple[str, np.ndarray]]:
  """(HF name, host tensor) one at a time; a global array of several processes is gathered to each (every process
  must iterate together)."""
  for path, key, _, in_dims in _param_table(cfg):
    value = params[path[0]] if len(path) == 1 else params["layers"][path[1]][int(path[2])]
    yield key, np.ascontiguousarray(_to_hf(np.asarray(multihost.fetch(value)), key, in_dims))


def abstract_model(cfg: ModelConfig) -> Decoder:
  """The Decoder's structure with shape/dtype placeholders instead of arrays (nothing is allocated)."""
  return nnx.eval_shape(lambda: Decoder(cfg, rngs=nnx.Rngs(0)))


def model_from_params(cfg: ModelConfig, params: dict[str, Any], shardings: Any = None) -> Decoder:
  """A Decoder holding `params` (placed with `shardings`, a matching tree, when given) without a random init."""
  graphdef, state = nnx.split(abstract_model(cfg))
  if shardings is None:
    arrays = jax.tree.map(jnp.asarray, params)
  else:
    arrays = jax.tree.map(jax.device_put, params, shardings)
  nnx.replace_by_pure_dict(state, arrays)
  return nnx.merge(graphdef, state)


def model_params(model: Decoder) -> dict[str, Any]:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


# --- files -------------------------------------------------------------------------------------------------------
def read_config(path: str | pathlib.Path) -> dict[str, Any]:
  config_file = pathlib.Path(path) / "config.json"
  if not config_file.is_file():
    raise FileNotFoundError(f"no config.json in '{path}' (expected a HF checkpoint directory or a .gguf file)")
  return json.loads(config_file.read_text())


class _SafetensorsDir:
  """Lazy HF-name -> array view over a directory's safetensors files (single file or index-sharded).

  A bare backbone (e.g. Qwen3-Embedding: `layers.0...`, `norm.weight`) answers for the causal LM's `model.` names.
  """

  def __init__(self, path: pathlib.Path):
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
      weight_map = json.loads(index_file.read_text())["weight_map"]
      self._file_of = {key: path / name for key, name in weight_map.items()}
    else:
      files = sorted(path.glob("*.safetensors"))
      if not files:
        raise FileNotFoundError(f"no *.safetensors files in '{path}'")
      self._file_of = {}
      for file in files:
        with safe_open(file, framework="flax") as f:
          self._file_of.update({key: file for key in f.keys()})

  def _key(self, key: str) -> str:
    return key if key in self._file_of else key.removeprefix("model.")

  def __contains__(self, key: str) -> bool:
    return self._key(key) in self._file_of

  def __getitem__(self, key: str) -> np.ndarray:
    key = self._key(key)
    with safe_open(self._file_of[key], framework="numpy") as f:
      return f.get_tensor(key).astype(np.float32)

  def block(self, key: str, shape: tuple[int, ...], in_dims: int | None, index: Sequence[slice]) -> np.ndarray:
    """`index` (slices) of the tensor in our layout of `shape`, reading only the HF rows and columns it covers.

    Our layout is the HF [out, in] weight transposed and reshaped to (*in_shape, *out_shape), so a block of ours is
    an (out, in) set of flat indices of the HF tensor: one rectangular read, then a gather within it."""
    key = self._key(key)
    ranges = [range(*s.indices(n)) for s, n in zip(index, shape)]
    with safe_open(self._file_of[key], framework="numpy") as f:
      hf = f.get_slice(key)
      if math.prod(hf.get_shape()) != math.prod(shape):
        raise ValueError(f"tensor '{key}' has shape {tuple(hf.get_shape())}; expected {math.prod(shape)} elements "
                         f"for {shape}")
      if in_dims is None:  # our layout; a flat HF bias is a [heads, head_dim] one of ours (small: read whole)
        return hf[tuple(index)] if len(hf.get_shape()) == len(shape) else hf[:].reshape(shape)[tuple(index)]
      in_flat = np.ravel_multi_index(np.ix_(*ranges[:in_dims]), shape[:in_dims]).ravel()
      out_flat = np.ravel_multi_index(np.ix_(*ranges[in_dims:]), shape[in_dims:]).ravel()
      box = hf[int(out_flat.min()):int(out_flat.max()) + 1, int(in_flat.min()):int(in_flat.max()) + 1]
    block = box[np.ix_(out_flat - out_flat.min(), in_flat - in_flat.min())].T
    return block.reshape([len(r) for r in ranges])


def load_checkpoint(path: str | pathlib.Path, **cfg_overrides) -> tuple[ModelConfig, dict[str, Any]]:
  """(config, numpy params) from a HF directory or a .gguf file; `cfg_overrides` set dtypes, remat, scan."""
  path = resolve_model_path(str(path))
  if path.suffix == ".gguf":
    hf_config, tensors = read_gguf(path)
  else:
    hf_config, tensors = read_config(path), _SafetensorsDir(path)
  cfg = ModelConfig.from_hf(hf_config, **cfg_overrides)
  return cfg, hf_to_params(cfg, tensors)


def load_model(path: str | pathlib.Path, shardings: Any = None, **cfg_overrides) -> Decoder:
  cfg, params = load_checkpoint(path, **cfg_overrides)
  return model_from_params(cfg, params, shardings)


def load_sharded(path: str | pathlib.Path, mesh: jax.sharding.Mesh, **cfg_overrides) -> Decoder:
  """The checkpoint's Decoder placed on `mesh` by the sharding rules, each process reading from the safetensors only
  the blocks its own devices hold, in the param dtype: no host ever holds a whole fp32 copy. (A .gguf file is read
  whole, then placed.)"""
  path = resolve_model_path(str(path))
  if path.suffix == ".gguf":
    cfg, params = load_checkpoint(path, **cfg_overrides)
    return model_from_params(cfg, params, sharding.param_shardings(abstract_model(cfg), mesh))
  cfg = ModelConfig.from_hf(read_config(path), **cfg_overrides)
  shardings = sharding.param_shardings(abstract_model(cfg), mesh)
  tensors, dtype = _SafetensorsDir(path), np.dtype(cfg.param_jnp_dtype)
  entries: dict[tuple[str, ...], list[tuple[str, tuple[int, ...], int | None]]] = {}
  for param_path, key, shape, in_dims in _param_table(cfg):
    if key not in tensors:
      raise KeyError(f"checkpoint has no tensor '{key}' (needed for {cfg.model_type} with this config)")
    entries.setdefault(param_path[:2], []).append((key, shape, in_dims))

  def load(param_path: tuple[str, ...], layers: list[tuple[str, tuple[int, ...], int | None]]) -> jax.Array:
    if param_path[0] != "layers":
      (key, shape, in_dims), = layers
      return jax.make_array_from_callback(
          shape, shardings[param_path[0]], lambda index: tensors.block(key, shape, in_dims, index).astype(dtype))
    shape = layers[0][1]

    def stacked_block(index):  # index[0]: the layers this device holds
      return np.stack([tensors.block(key, shape, in_dims, index[1:]).astype(dtype)
                       for key, _, in_dims in layers[index[0]]])
    return jax.make_array_from_callback((len(layers), *shape), shardings["layers"][param_path[1]], stacked_block)

  params: dict[str, Any] = {"layers": {}}
  for param_path, layers in entries.items():
    array = load(param_path, layers)
    if param_path[0] == "layers":
      params["layers"][param_path[1]] = array
    else:
      params[param_path[0]] = array
  return model_from_params(cfg, params, shardings)


def save_model(model: Decoder, out_dir: str | os.PathLike, max_shard_bytes: int = 4 << 30) -> epath.Path:
  """Writes config.json + safetensors (index-sharded above `max_shard_bytes`) that transformers loads.

  The tensors are fetched one at a time and written a shard at a time (host memory: one shard). Several processes:
  all call this together (each tensor is gathered from every process's devices) and process 0 writes."""
  out_dir, cfg = epath.Path(out_dir), model.cfg
  write = multihost.is_main()
  if write:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.json").write_text(json.dumps(cfg.to_hf(), indent=2))
  shards: list[list[str]] = []  # the names in each written shard
  shard: dict[str, np.ndarray] = {}
  total = 0

  def flush(name: str) -> None:
    if write:
      (out_dir / name).write_bytes(save({k: jnp.asarray(v) for k, v in shard.items()}, metadata={"format": "pt"}))
    shards.append(list(shard))
    shard.clear()

  for key, array in hf_tensors(cfg, model_params(model)):
    if shard and sum(a.nbytes for a in shard.values()) + array.nbytes > max_shard_bytes:
      flush(f"model-{len(shards) + 1:05d}.safetensors")
    shard[key] = array
    total += array.nbytes
  if not shards:
    flush("model.safetensors")
    return out_dir
  flush(f"model-{len(shards) + 1:05d}.safetensors")
  weight_map = {}  # the HF names carry the shard count: rename now that it is known
  for i, keys in enumerate(shards):
    name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    if write:
      (out_dir / f"model-{i + 1:05d}.safetensors").rename(out_dir / name)
    weight_map.update({key: name for key in keys})
  if write:
    (out_dir / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
  return out_dir
