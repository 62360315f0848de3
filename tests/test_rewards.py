"""RWML's next-state reward: tag parsing, the threshold, ROUGE-L rounding and the registry, on hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer

from paw_jax.algos import rewards

REAL = "the key is on the table"


class BagOfWords:
  """Fake embedder: word counts over a fixed vocabulary, L2-normalised (a text with none of the words gives a NaN
  row); it records the query flag of every call."""
  VOCAB = ("the", "key", "is", "on", "table", "open", "door")

  def __init__(self):
    self.calls: list[tuple[list[str], bool]] = []

  def embed(self, texts, *, query=False):
    self.calls.append((list(texts), query))
    counts_NxD = np.array([[text.split().count(word) for word in self.VOCAB] for text in texts], np.float32)
    with np.errstate(invalid="ignore"):
      return counts_NxD / np.linalg.norm(counts_NxD, axis=1, keepdims=True)


@pytest.mark.parametrize("text, expected", [
    ("<think>hm</think><next_state>a</next_state> again <next_state> b c\n</next_state>", "b c"),  # last pair wins
    ("<next_state>a</next_state><next_state>unfinished", "a"),  # an opening after the last pair is ignored
    ("<next_state>stale <next_state>b</next_state>", "b"),  # the last closing tag takes the nearest opening
    ("no tags at all", None),
    ("<next_state> \n </next_state>", None),  # empty
    ("<next_state>unclosed", None),
    ("</next_state><next_state>a", None),  # the only closing tag comes before any opening
    ("<next_state>a<next_state>b</next_state></next_state>", None),  # nested
    ("<next_state>a</next_state></next_state>", None),  # a stray closing tag inside the last pair
    ("<NEXT_STATE>a</NEXT_STATE>", None),  # tags are case-sensitive
])
def test_extract_next_state(text, expected):
  assert rewards.extract_next_state(text, max_chars=100) == expected


def test_extract_next_state_long_output_is_truncated():
  # Thousands of unclosed openings before the real pair: a backtracking regex would go quadratic here.
  text = "<think>" + "<next_state>draft " * 3000 + "<next_state> " + "ab" * 30_000 + " </next_state>"
  assert len(text) > 100_000
  assert rewards.extract_next_state(text, max_chars=1001) == "ab" * 500 + "a"
  with pytest.raises(ValueError, match="max_chars"):
    rewards.extract_next_state(text, max_chars=0)


def test_threshold_reward_boundary_and_nan():
  tau = 0.2
  out = rewards.threshold_reward(np.array([tau, np.nextafter(tau, 0.0), 0.0, np.nan, 1.5, np.nan]), tau)
  np.testing.assert_array_equal(out.reward_N, [0.0, 1.0, 1.0, 0.0, 0.0, 0.0])  # strict: d == τ is not rewarded
  assert out.reward_N.dtype == np.float32
  assert out.nan_count == 2


@pytest.mark.parametrize("prediction, reference, expected", [
    ("the key is under the bed", REAL, 0.6),  # LCS 4, 6 and 6 tokens: F1 = 2·4/12 = 0.667 → 0.6
    ("open door", "the door is open", 0.4),  # LCS 1, 2 and 4 tokens: F1 = 2·1/6 = 0.333 → 0.4
    ("a b c x x x x x x x", "a b c d e f g h i j", 0.4),  # F1 = 2·3/20 = 0.3, a tie: half-up → 0.4
    ("a b c d e f g h i", "a b c d e f g h i j k", 1.0),  # F1 = 2·9/20 = 0.9, a tie → 1.0
    ("you see a lamp", REAL, 0.0),  # nothing in common
])
def test_rouge_l_rounding(prediction, reference, expected):
  np.testing.assert_allclose(rewards.rouge_l_reward([prediction], [reference]), [expected], atol=1e-6)


def test_rouge_l_keeps_grid_symbols_and_case():
  # Tokens #,#,_,#,P,_ against #,_,_,_,P,#: LCS 3 ("# _ P"), F1 = 3/6 = 0.5, a tie → 0.6. rouge-score's default
  # tokenizer would keep only "p" of each and give 1.0.
  grid_real, grid_predicted = "# # _\n# P _", "# _ _\n_ P #"
  # "P" alone: LCS 1, 1 and 6 tokens, F1 = 2/7 = 0.286 → 0.2; "key" against "Key": case is kept, F1 = 0.
  out_N = rewards.rouge_l_reward([grid_predicted, "P", "key"], [grid_real, grid_real, "Key"])
  np.testing.assert_allclose(out_N, [0.6, 0.2, 0.0], atol=1e-6)
  assert rouge_scorer.RougeScorer(["rougeL"]).score(grid_real, grid_predicted)["rougeL"].fmeasure == 1.0


def test_cosine_rewards_parse_rate_and_query_side():
  embedder = BagOfWords()
  # cos with REAL (counts the:2 key is on table, norm √8): itself 1; "the key" 3/(√8·√2) = 0.75; "open the door"
  # 2/(√8·√3) = 0.408; "xyz" has no known word, so a NaN row; None was not parsed.
  predictions = [REAL, "the key", None, "open the door", "xyz"]
  reward_N, stats = rewards.similarity_rewards("cosine", predictions, [REAL] * 5, embedder=embedder, tau=0.3)
  np.testing.assert_array_equal(reward_N, [1.0, 1.0, 0.0, 0.0, 0.0])  # distances 0, 0.25, −, 0.59, NaN
  assert reward_N.dtype == np.float32
  assert stats["parse_rate"] == 4 / 5 and stats["nan_count"] == 1
  assert math.isclose(stats["mean_cosine"], (1.0 + 0.75 + 2 / math.sqrt(24)) / 3, rel_tol=1e-6)
  # The real observation is the query; the unparsed prediction is never embedded.
  assert sorted(embedder.calls, key=lambda call: call[1]) == [
      ([REAL, "the key", "open the door", "xyz"], False), ([REAL] * 4, True)]
  reward_N, _ = rewards.similarity_rewards("cosine", predictions, [REAL] * 5, embedder=BagOfWords(), tau=0.25)
  np.testing.assert_array_equal(reward_N, [1.0, 0.0, 0.0, 0.0, 0.0])  # d = 0.25 is not < 0.25


def test_nothing_parsed_embeds_nothing():
  embedder = BagOfWords()
  reward_N, stats = rewards.similarity_rewards("cosine", [None, None], [REAL, REAL], embedder=embedder, tau=0.2)
  np.testing.assert_array_equal(reward_N, [0.0, 0.0])
  assert stats["parse_rate"] == 0.0 and math.isnan(stats["mean_cosine"]) and not embedder.calls


def test_rouge_l_rewards_graded_or_thresholded():
  predictions = ["the key is under the bed", None, REAL]
  reward_N, stats = rewards.similarity_rewards("rouge_l", predictions, [REAL] * 3)
  np.testing.assert_allclose(reward_N, [0.6, 0.0, 1.0], atol=1e-6)  # the rounded F1 itself
  assert stats["parse_rate"] == 2 / 3 and stats["nan_count"] == 0
  assert math.isclose(stats["mean_rouge_l"], 0.8, rel_tol=1e-6)
  reward_N, _ = rewards.similarity_rewards("rouge_l", predictions, [REAL] * 3, tau=0.4)
  np.testing.assert_array_equal(reward_N, [0.0, 0.0, 1.0])  # distance 1 − 0.6 = 0.4 is not < 0.4
  # F1 = 2·4/9 = 0.889 → 0.8: a distance of exactly 0.2, so τ = 0.2 does not reward it (1 − 0.8 in floats would).
  reward_N, _ = rewards.similarity_rewards("rouge_l", ["a b c d"], ["a b c d e"], tau=0.2)
  np.testing.assert_array_equal(reward_N, [0.0])


def test_registry_needs_and_errors():
  assert {name: entry.needs_embedder for name, entry in rewards.SIMILARITY_REWARDS.items()} == {
      "cosine": True, "rouge_l": False}
  with pytest.raises(ValueError) as error:
    rewards.similarity_rewards("bleu", ["a"], ["a"])
  assert str(error.value) == "unknown similarity reward 'bleu'; known: cosine, rouge_l"
  with pytest.raises(ValueError, match="needs an embedder"):
    rewards.similarity_rewards("cosine", ["a"], ["a"], tau=0.2)
  with pytest.raises(ValueError, match="needs a threshold"):
    rewards.similarity_rewards("cosine", ["a"], ["a"], embedder=BagOfWords())
  with pytest.raises(ValueError, match="1 predictions but 2 references"):
    rewards.similarity_rewards("rouge_l", ["a"], ["a", "b"])
