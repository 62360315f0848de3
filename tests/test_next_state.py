"""The next-state task: prompts fit by dropping the oldest history, SFT rows hold the paper's label, and the judge
parses the last <next_state> block, cuts it to a token budget and rewards it by similarity (hand-computed cases)."""
import numpy as np
import pytest

from paw_jax.models.tokenizer import Tokenizer
from paw_jax.next_state import Judge, prompt_ids, sft_turns
from paw_jax.prompts import PromptConfig, next_state_label
from paw_jax.triplets import Triplet

GRID = "_ _ G\n_ O _\nP _ _"


@pytest.fixture(scope="module")
def tokenizer():
  texts = [GRID, "Reply with the map after this move", "<think></think><next_state>", "</next_state>"] * 20
  return Tokenizer.train_bpe(texts, vocab_size=300)


def triplet(history=(), next_observation="_ _ G\n_ O _\n_ P _"):
  return Triplet("frozenlake", "train", 7, 0, len(history), "Reach G.", tuple(history), GRID, "right",
                 next_observation)


def test_the_prompt_drops_the_oldest_history_pairs_until_it_fits(tokenizer):
  cfg = PromptConfig(history=-1, think=False)
  history = [(GRID, "up"), (GRID, "left"), (GRID, "down")]
  full = prompt_ids(tokenizer, cfg, "", triplet(history), max_prompt_len=10_000)
  fitted = tokenizer.decode(prompt_ids(tokenizer, cfg, "", triplet(history), max_prompt_len=len(full) - 1))
  assert "[Action 1: up]" not in fitted and "[Action 2: left]" in fitted  # the oldest pair went; steps keep numbers
  assert "[Action 1: up]" in tokenizer.decode(full)
  assert prompt_ids(tokenizer, cfg, "", triplet(), max_prompt_len=5) is None
  text = tokenizer.decode(prompt_ids(tokenizer, cfg, "Say the map.", triplet(), 10_000))
  assert "Potential action: right" in text and "Say the map." in text and GRID in text


def test_sft_rows_end_with_the_label_and_the_end_of_turn(tokenizer):
  (turn,) = sft_turns(tokenizer, PromptConfig(history=0), "", [triplet()], max_prompt_len=10_000, max_len=10_000)
  label = tokenizer.encode(next_state_label("_ _ G\n_ O _\n_ P _")) + [tokenizer.eos_token_id]
  assert turn.response_ids.tolist() == label
  assert tokenizer.decode(label[:-1]) == "<think></think><next_state>_ _ G\n_ O _\n_ P _</next_state>"
  assert sft_turns(tokenizer, PromptConfig(history=0), "", [triplet()], max_prompt_len=5, max_len=10_000) == []
  row = len(turn.prompt_ids) + len(turn.response_ids)
  assert sft_turns(tokenizer, PromptConfig(history=0), "", [triplet()], 10_000, max_len=row - 1) == []  # no cut label


def test_the_judge_rewards_the_last_block_cut_to_its_token_budget(tokenizer):
  judge = Judge("rouge_l", None, tokenizer, max_prediction_tokens=1000)
  real = "_ _ G\n_ O _\n_ P _"
  replies = [f"<next_state>{GRID}</next_state> then <next_state>{real}</next_state>",  # the last block wins: 1
             f"<next_state>{real}</next_state> then <next_state>{GRID}</next_state>",  # the last block is wrong
             "no tag at all", "<next_state>  </next_state>", f"<next_state>{real}",  # missing, empty, unclosed
             f"<next_state>a <next_state>{real}</next_state></next_state>"]  # nested: malformed
  reward_N, stats = judge(replies, [real] * len(replies), tau=0.1)
  np.testing.assert_array_equal(reward_N, [1, 0, 0, 0, 0, 0])
  assert stats["parse_rate"] == pytest.approx(2 / 6)
  huge = "<next_state>" + "_ " * 50_000 + "</next_state>"  # 100k characters
  assert len(tokenizer.encode(Judge("rouge_l", None, tokenizer, max_prediction_tokens=7).parse(huge))) <= 7
  assert judge.parse(huge).startswith("_ _")
