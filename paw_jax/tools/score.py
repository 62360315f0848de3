"""Per-token log-probs of a text: `python -m paw_jax.tools.score --model PATH --text "..." --out scores.json`.

Writes `{"tokens": [...], "token_ids": [...], "logprobs": [null, ...]}`: the first token has no log-prob.
"""
from __future__ import annotations

import argparse
import json

import jax.numpy as jnp
import numpy as np

from paw_jax.algos.losses import logprobs_from_logits
from paw_jax.models.transformer import positions_from_mask
from paw_jax.tools.generate import load_model_and_tokenizer


def token_logprobs(model, token_ids: list[int]) -> np.ndarray:
  """log p(token_i | tokens_<i) for i >= 1, from one forward pass."""
  tokens_1xT = jnp.asarray([token_ids], jnp.int32)
  mask_1xT = jnp.ones(tokens_1xT.shape, bool)
  logits_1xTxV, _ = model(tokens_1xT, positions_from_mask(mask_1xT), mask_1xT)
  return np.asarray(logprobs_from_logits(logits_1xTxV[0, :-1], tokens_1xT[0, 1:])[0])


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True, help="HF directory, .gguf file, or 'smollm2'")
  parser.add_argument("--text", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args(argv)
  model, tokenizer = load_model_and_tokenizer(args.model, "score")
  token_ids = tokenizer.encode(args.text, add_special_tokens=True)
  if len(token_ids) < 1:
    raise SystemExit("score: --text encodes to no tokens")
  logprobs = token_logprobs(model, token_ids)
  scores = {"tokens": [tokenizer.decode([t]) for t in token_ids], "token_ids": token_ids,
            "logprobs": [None] + [float(x) for x in logprobs]}
  with open(args.out, "w") as f:
    json.dump(scores, f, indent=1)
  print(f"wrote {len(token_ids)} tokens, total log-prob {float(logprobs.sum()):.3f}, to {args.out}")


if __name__ == "__main__":
  main()
