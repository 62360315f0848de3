"""Model speed, JAX vs transformers (torch), one config: prefill and decode tokens/s, forward+backward tokens/s.

  python bench/model_speed.py [--model smollm2] [--batch 4] [--prompt_len 128] [--new_tokens 64] [--train_len 256]

Prints a table with the ratio JAX / torch. Decode is timed with no EOS so every row generates `new_tokens`.
Not a test: record the rows in bench/RESULTS.md with the device named.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
import transformers
from flax import nnx

from paw_jax.learner import token_logprobs
from paw_jax.models import hf_io
from paw_jax.models.transformer import KVCache, positions_from_mask
from paw_jax.sampling import SamplingConfig, generate, stop_string_table


def best_of(fn, repeats: int = 3) -> float:
  fn()  # warm-up / compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def jax_rows(model, batch, prompt_len, new_tokens, train_len):
  vocab = model.cfg.vocab_size
  prompt = jnp.asarray(np.random.RandomState(0).randint(0, vocab, (batch, prompt_len)), jnp.int32)
  mask = jnp.ones(prompt.shape, bool)
  graphdef, params = nnx.split(model)

  @jax.jit
  def prefill(params, prompt):
    m = nnx.merge(graphdef, params)
    cache = KVCache.init(m.cfg, batch, prompt_len + new_tokens)
    hidden, cache = m.hidden_states(prompt, positions_from_mask(mask), mask, cache)
    return m.logits(hidden[:, -1:]), cache

  no_stop = jnp.asarray(stop_string_table([b"x"] * vocab, []))
  no_eos = jnp.asarray([-1], jnp.int32)
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=new_tokens)
  prefill_s = best_of(lambda: jax.block_until_ready(prefill(params, prompt)))
  total_s = best_of(lambda: jax.block_until_ready(
      generate(graphdef, params, prompt, mask, jax.random.key(0), no_stop, no_eos, 0, cfg)))

  tokens = jnp.asarray(np.random.RandomState(1).randint(0, vocab, (batch, train_len)), jnp.int32)
  train_mask = jnp.ones(tokens.shape, bool)

  @jax.jit
  def fwd_bwd(params):
    def loss(params):  # the train step's log-probs (torch's `labels=` loss: mean NLL of tokens 1..T-1)
      logp_BxT, _ = token_logprobs(graphdef, params, tokens, train_mask)
      return -jnp.mean(logp_BxT[:, 1:])
    return jax.grad(loss)(params)

  train_s = best_of(lambda: jax.block_until_ready(fwd_bwd(params)))
  return batch * prompt_len / prefill_s, batch * new_tokens / (total_s - prefill_s), batch * train_len / train_s


def torch_rows(hf_model, batch, prompt_len, new_tokens, train_len, vocab):
  prompt = torch.tensor(np.random.RandomState(0).randint(0, vocab, (batch, prompt_len)))
  with torch.no_grad():
    prefill_s = best_of(lambda: hf_model(prompt, use_cache=True, logits_to_keep=1))  # as JAX: last logits only
    total_s = best_of(lambda: hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                                max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                                pad_token_id=0, top_k=0))
  tokens = torch.tensor(np.random.RandomState(1).randint(0, vocab, (batch, train_len)))

  def fwd_bwd():
    hf_model.zero_grad()
    hf_model(tokens, labels=tokens).loss.backward()

  train_s = best_of(fwd_bwd)
  return batch * prompt_len / prefill_s, batch * new_tokens / (total_s - prefill_s), batch * train_len / train_s


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--prompt_len", type=int, default=128)
  parser.add_argument("--new_tokens", type=int, default=64)
  parser.add_argument("--train_len", type=int, default=256)
  args = parser.parse_args()
  cfg, params = hf_io.load_checkpoint(args.model)
  model = hf_io.model_from_params(cfg, params)
  hf_model = transformers.AutoModelForCausalLM.from_config(
      transformers.AutoConfig.for_model(**cfg.to_hf()), dtype=torch.float32).eval()
  hf_model.load_state_dict({k: torch.from_numpy(v) for k, v in hf_io.params_to_hf(cfg, params).items()},
                           strict=False)
  hf_model.tie_weights()
  shape = (args.batch, args.prompt_len, args.new_tokens, args.train_len)
  jax_speed = jax_rows(model, *shape)
  torch_speed = torch_rows(hf_model, *shape, cfg.vocab_size)
  print(f"{cfg.model_type} {cfg.num_params / 1e6:.0f}M params, fp32, device: {jax.devices()[0].device_kind}, "
        f"torch threads {torch.get_num_threads()}; batch {args.batch}, prompt {args.prompt_len}, "
        f"new {args.new_tokens}, train length {args.train_len}; GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '')!r}")
  print(f"| {'tokens/s':<18} | {'JAX':>10} | {'torch':>10} | {'JAX/torch':>9} |")
  print(f"|{'-' * 20}|{'-' * 12}|{'-' * 12}|{'-' * 11}|")
  for name, j, t in zip(("prefill", "decode", "forward+backward"), jax_speed, torch_speed):
    print(f"| {name:<18} | {j:>10.1f} | {t:>10.1f} | {j / t:>9.2f} |")


if __name__ == "__main__":
  main()
