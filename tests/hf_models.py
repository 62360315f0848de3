"""Tiny random-init transformers models covering every architecture feature the decoder implements."""
import torch
import transformers

_COMMON = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
               max_position_embeddings=256, rms_norm_eps=1e-5)

CONFIGS = {
    # GQA, untied embeddings, Llama-3 rope scaling
    "llama3": lambda: transformers.LlamaConfig(
        **_COMMON, num_key_value_heads=2, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
    # tied embeddings, no GQA
    "llama_tied": lambda: transformers.LlamaConfig(**_COMMON, num_key_value_heads=4, tie_word_embeddings=True),
    # q/k/v bias, GQA
    "qwen2": lambda: transformers.Qwen2Config(**_COMMON, num_key_value_heads=2, tie_word_embeddings=True,
                                              rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    # q/k norm, head_dim != hidden / heads
    "qwen3": lambda: transformers.Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=24,
                                              tie_word_embeddings=False),
}


def make_hf_model(name: str, seed: int = 0) -> transformers.PreTrainedModel:
  torch.manual_seed(seed)
  config = CONFIGS[name]()
  config.initializer_range = 0.2  # larger than default so logits are far from uniform and errors show
  model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
  with torch.no_grad():  # random norm weights and biases, so a missed or swapped one cannot hide
    for name_, param in model.named_parameters():
      if name_.endswith("norm.weight"):
        param.copy_(1.0 + 0.3 * torch.randn_like(param))
      elif name_.endswith("bias"):
        param.copy_(0.3 * torch.randn_like(param))
  return model
