"""RWML's next-state reward, host-side numpy: parse the predicted next observation, compare it with the real one.

A model output holds its prediction in `<next_state>…</next_state>` (docs/RWML.md). The similarity of prediction
and real observation comes from a registry by name: "cosine" (1 − cos in a frozen embedder's space, thresholded by
τ: r = 1[d < τ]) and "rouge_l" (ROUGE-L F1 rounded to steps of 0.2, for structured observations such as grid maps).

Shape suffixes: N model outputs (one per prediction), P the parsed ones among them, D embedding width.
"""
from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
from rouge_score import rouge_scorer

from paw_jax.prompts import NEXT_STATE_TAG

if TYPE_CHECKING:
  from paw_jax.models.embedders import Embedder

OPEN_TAG, CLOSE_TAG = f"<{NEXT_STATE_TAG}>", f"</{NEXT_STATE_TAG}>"
ROUGE_STEPS = 5  # ROUGE-L F1 is rounded to multiples of 1 / 5 = 0.2


def extract_next_state(text: str, max_chars: int) -> str | None:
  """The stripped text of the last complete `<next_state>…</next_state>`, cut to `max_chars` characters; None when
  there is none, when it is empty, or when it is malformed.

  Rule: the last closing tag pairs with the nearest opening tag before it, and the text between them must hold no
  closing tag, so nested or stray tags inside the last pair make the output malformed (None) rather than falling back
  to an earlier pair. An opening tag after the last closing one (an unfinished prediction) is ignored. Tags are exact
  and case-sensitive. Two reverse searches and one scan: linear in len(text).
  """
  if max_chars < 1:
    raise ValueError(f"extract_next_state: max_chars must be >= 1, got {max_chars}")
  close = text.rfind(CLOSE_TAG)
  start = text.rfind(OPEN_TAG, 0, close) if close >= 0 else -1
  if start < 0:
    return None
  content = text[start + len(OPEN_TAG):close]
  if CLOSE_TAG in content:
    return None
  return content.strip()[:max_chars] or None


class ThresholdReward(NamedTuple):
  reward_N: np.ndarray  # float32 in {0, 1}
  nan_count: int  # distances that were NaN (rewarded 0)


def threshold_reward(distance_N: np.ndarray, tau: float) -> ThresholdReward:
  """r = 1[d < τ] (strict, as the paper); a NaN distance gives 0 and is counted."""
  distance_N = np.asarray(distance_N, np.float64)
  nan_N = np.isnan(distance_N)
  return ThresholdReward(np.where(nan_N, False, distance_N < tau).astype(np.float32), int(nan_N.sum()))


class _WordsAndSymbols:
  """ROUGE tokens: runs of word characters and every other non-space character alone, case kept. rouge-score's
  default tokenizer lowercases and drops all non-alphanumerics, which would erase a grid's cells (`#`, `_`, `√`)."""
  _TOKEN = re.compile(r"\w+|[^\w\s]")

  def tokenize(self, text: str) -> list[str]:
    return self._TOKEN.findall(text)


_ROUGE_L = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_WordsAndSymbols())


def _rouge_l_steps(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """ROUGE-L F1 of each pair in steps of 1 / ROUGE_STEPS, rounded half up (F1 0.3 → 2 steps, 0.29 → 1).

  F1 = 2·LCS / (len_pred + len_ref) is a ratio of small integers, so a value exactly halfway between two steps
  reaches us a few ulps off; the 1e-9 nudge makes such ties round up instead of depending on float error.
  """
  if len(predictions) != len(references):
    raise ValueError(f"rouge_l_reward: {len(predictions)} predictions but {len(references)} references")
  f1_N = [_ROUGE_L.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
  return np.array([math.floor(f1 * ROUGE_STEPS + 0.5 + 1e-9) for f1 in f1_N], np.int64)


def rouge_l_reward(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """ROUGE-L F1 of each pair rounded half up to the nearest multiple of 0.2 (0.3 → 0.4, 0.29 → 0.2), float32."""
  return (_rouge_l_steps(predictions, references) / ROUGE_STEPS).astype(np.float32)


def cosine_distance(a_NxD: np.ndarray, b_NxD: np.ndarray) -> np.ndarray:
  """d_N = 1 − cos of paired rows that are already L2-normalised (what `Embedder.embed` returns), in float64."""
  return 1.0 - np.sum(np.asarray(a_NxD, np.float64) * np.asarray(b_NxD, np.float64), axis=-1)


def _cosine(predictions: Sequence[str], references: Sequence[str], embedder: Embedder | None) -> np.ndarray:
  """1 − cos of the embeddings; the real observation is embedded as the query, the prediction as the document
  (embedders with a query instruction, as Qwen3-Embedding, put it on the reference)."""
  return cosine_distance(embedder.embed(references, query=True), embedder.embed(predictions, query=False))


def _rouge_l(predictions: Sequence[str], references: Sequence[str], embedder: Embedder | None) -> np.ndarray:
  """1 − rounded F1, as a ratio of integers so that it is the same double as a τ written on the same grid (1 − 0.8
  would be 0.19999999999999996, below τ = 0.2)."""
  del embedder  # ROUGE-L compares tokens
  return (ROUGE_STEPS - _rouge_l_steps(predictions, references)) / ROUGE_STEPS


class SimilarityReward(NamedTuple):
  """A registry entry: the distance of each parsed (prediction, reference) pair and what computing it needs."""
  fn: Callable[[Sequence[str], Sequence[str], Embedder | None], np.ndarray]  # float64 distance_P = 1 − similarity
  needs_embedder: bool
  needs_tau: bool  # False: the similarity is a reward by itself when no τ is given


# `similarity_rewards` names: adding one is a function above and a line here. Thresholds live in the env's config.
SIMILARITY_REWARDS: dict[str, SimilarityReward] = {
    "cosine": SimilarityReward(_cosine, needs_embedder=True, needs_tau=True),
    "rouge_l": SimilarityReward(_rouge_l, needs_embedder=False, needs_tau=False),
}


def similarity_rewards(name: str, predictions: Sequence[str | None], references: Sequence[str], *,
                       embedder: Embedder | None = None,
                       tau: float | None = None) -> tuple[np.ndarray, dict[str, float]]:
  """Reward of each prediction against its real next observation, and stats for the metrics.

  With τ the reward is 1[distance < τ]; without it (rouge_l only) the reward is the similarity itself, the
  rounded F1 (docs/RWML.md leaves open whether ROUGE-L is thresholded like the distance it replaces). A None
  prediction (no parsable `<next_state>`) gets 0 and counts against the parse rate. Stats: `parse_rate`,
  `nan_count` and `mean_<name>`, the mean similarity over parsed predictions (NaN when there are none).
  """
  if name not in SIMILARITY_REWARDS:
    raise ValueError(f"unknown similarity reward '{name}'; known: {', '.join(SIMILARITY_REWARDS)}")
  entry = SIMILARITY_REWARDS[name]
  if entry.needs_embedder and embedder is None:
    raise ValueError(f"similarity reward '{name}' needs an embedder")
  if entry.needs_tau and tau is None:
    raise ValueError(f"similarity reward '{name}' needs a threshold tau")
  if len(predictions) != len(references):
    raise ValueError(f"similarity_rewards: {len(predictions)} predictions but {len(references)} references")
  parsed_P = np.array([i for i, pred in enumerate(predictions) if pred is not None], np.int64)
  distance_P = np.zeros(0)
  if len(parsed_P):  # an embedder need not accept an empty batch
    distance_P = entry.fn([predictions[i] for i in parsed_P], [references[i] for i in parsed_P], embedder)
  if tau is None:
    reward_P, nan_count = np.nan_to_num(1.0 - distance_P).astype(np.float32), int(np.isnan(distance_P).sum())
  else:
    reward_P, nan_count = threshold_reward(distance_P, tau)
  reward_N = np.zeros(len(predictions), np.float32)
  reward_N[parsed_P] = reward_P
  similarity_P = 1.0 - distance_P[np.isfinite(distance_P)]
  stats = {"parse_rate": len(parsed_P) / max(len(predictions), 1), "nan_count": nan_count,
           f"mean_{name}": float(similarity_P.mean()) if len(similarity_P) else float("nan")}
  return reward_N, stats
