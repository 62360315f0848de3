"""Generate text with the JAX sampler: `python -m paw_jax.tools.generate --model PATH_OR_GGUF --prompt "..."`.

`--model` takes a HF checkpoint directory, a .gguf file, or the alias `smollm2` (the embedded offline default).
The prompt is rendered with the model's chat template unless `--raw`.
"""
from __future__ import annotations

import argparse
import time

import jax
from flax import nnx

from paw_jax.models import hf_io
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder
from paw_jax.sampling import Sampler, SamplingConfig


def load_model_and_tokenizer(name: str, tool: str, **cfg_overrides) -> tuple[Decoder, Tokenizer]:
  """Model and tokenizer of `--model`; a missing or unreadable checkpoint exits with one line, not a traceback."""
  try:
    return hf_io.load_model(name, **cfg_overrides), Tokenizer.load(name)
  except (OSError, ValueError, KeyError) as error:
    message = error.args[0] if isinstance(error, KeyError) else error  # str(KeyError) would add quotes
    raise SystemExit(f"{tool}: bad --model {name!r}: {' '.join(str(message).split())}") from None


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="HF directory, .gguf file, or 'smollm2'")
  parser.add_argument("--prompt", required=True)
  parser.add_argument("--raw", action="store_true", help="use the prompt as is, without the chat template")
  parser.add_argument("--max_new_tokens", type=int, default=128)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top_k", type=int, default=0)
  parser.add_argument("--top_p", type=float, default=1.0)
  parser.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
  parser.add_argument("--compute_dtype", default="float32", choices=["float32", "bfloat16"])
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  start = time.perf_counter()
  model, tokenizer = load_model_and_tokenizer(args.model, "generate", compute_dtype=args.compute_dtype)
  print(f"loaded {model.cfg.model_type} ({model.cfg.num_params / 1e6:.0f}M params) in {time.perf_counter() - start:.1f}s")
  if args.raw:
    prompt_ids = tokenizer.encode(args.prompt, add_special_tokens=True)
  else:
    prompt_ids = tokenizer.encode_chat([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
  sampler = Sampler.from_tokenizer(nnx.graphdef(model), tokenizer, vocab_size=model.cfg.vocab_size,
                                   max_prompt_len=max(64, len(prompt_ids)), stop_strings=args.stop)
  cfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       max_new_tokens=args.max_new_tokens)
  params = nnx.state(model)
  rng = jax.random.key(args.seed)

  start = time.perf_counter()
  sampler(params, [prompt_ids], rng, cfg)  # compiles once for this (batch, length) bucket
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  result = sampler(params, [prompt_ids], rng, cfg)[0]
  run_s = time.perf_counter() - start
  print(tokenizer.decode(result["tokens"].tolist(), skip_special_tokens=True))
  n = len(result["tokens"])
  print(f"\n[{len(prompt_ids)} prompt + {n} generated tokens in {run_s:.2f}s: {n / run_s:.1f} tok/s; "
        f"first call incl. compile {compile_s:.1f}s]")


if __name__ == "__main__":
  main()
