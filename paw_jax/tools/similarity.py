"""RWML's reward for one prediction: `python -m paw_jax.tools.similarity --embedder minilm "PREDICTED" "REAL"`.

Prints the cosine similarity of the two texts in the embedder's space, their distance 1 − cos and the reward
1[distance < τ] the trainer would give (the real observation is embedded as the query). `--embedder rouge_l` prints
the ROUGE-L F1 rounded to steps of 0.2 and the reward instead, and needs no model. A bad `--embedder` or `--path` is
one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys

from paw_jax.algos.rewards import similarity_rewards

DEFAULT_TAU = 0.2  # the paper's τ_d for ALFWorld with Qwen3-Embedding-8B


def usage_error(tool: str, message: str) -> SystemExit:
  """One line on stderr, naming the tool; raise the returned SystemExit (status 2)."""
  print(f"{tool}: {message}", file=sys.stderr)
  return SystemExit(2)


def load_embedder(tool: str, name: str, path: str | None):
  """The embedder of `--embedder` (None for rouge_l), or exit 2 with one line; imported here so that the rouge_l path
  never loads jax or an embedding model."""
  if name == "rouge_l":
    return None
  from paw_jax.models import embedders
  if name not in embedders.EMBEDDERS:
    raise usage_error(tool, f"unknown --embedder {name!r}; known: rouge_l, {', '.join(embedders.EMBEDDERS)}")
  try:
    return embedders.load_embedder(name, path)
  except (OSError, ValueError, KeyError) as error:
    message = error.args[0] if isinstance(error, KeyError) else error  # str(KeyError) would add quotes
    source = f" from {path!r}" if path else ""
    raise usage_error(tool, f"cannot load --embedder {name!r}{source}: {' '.join(str(message).split())}") from None


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("prediction", help="predicted next observation (the text inside <next_state>)")
  parser.add_argument("reference", help="real next observation")
  parser.add_argument("--embedder", required=True, help="'minilm', 'qwen3_embedding' or 'rouge_l'")
  parser.add_argument("--path", help="embedder checkpoint (default: the embedder's own)")
  parser.add_argument("--threshold", type=float, help=f"τ: reward 1[1 − similarity < τ]; default {DEFAULT_TAU} for "
                      "an embedder, none for rouge_l (the rounded F1 is then the reward)")
  args = parser.parse_args(argv)

  if args.embedder == "rouge_l":
    reward_N, stats = similarity_rewards("rouge_l", [args.prediction], [args.reference], tau=args.threshold)
    print(f"ROUGE-L F1 {stats['mean_rouge_l']:.1f} (rounded to steps of 0.2), reward {reward_N[0]:g}"
          + (f" (tau {args.threshold:g})" if args.threshold is not None else ""))
    return
  tau = DEFAULT_TAU if args.threshold is None else args.threshold
  embedder = load_embedder("similarity", args.embedder, args.path)
  reward_N, stats = similarity_rewards("cosine", [args.prediction], [args.reference], embedder=embedder, tau=tau)
  cosine = stats["mean_cosine"]
  print(f"cosine similarity {cosine:.4f}, distance {1.0 - cosine:.4f}, reward {reward_N[0]:g} (tau {tau:g})")


if __name__ == "__main__":
  main()
