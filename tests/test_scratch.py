"""What a from-scratch model starts from: the env tokenizer keeps one token per grid cell, and warm-up rows are
random play: a random admissible action in the reply format, followed by the observation it led to."""
import numpy as np

from paw_jax.envs import make
from paw_jax.envs.frozenlake import MOVES
from paw_jax.prompts import PromptConfig
from paw_jax.scratch import train_env_tokenizer, warmup_turns

PROMPT = PromptConfig(history=0, think=False, list_admissible=False)


def test_warmup_rows_are_random_moves_in_the_reply_format_with_their_next_observation():
  env = make("frozenlake", size=3, max_steps=6)
  tokenizer = train_env_tokenizer(env, PROMPT, vocab_size=600, episodes=40, seed=0)
  turns = warmup_turns(env, tokenizer, PROMPT, episodes=20, seed=1)
  assert len(turns) >= 20
  chosen = []
  for turn in turns:
    response = turn.response_ids.tolist()
    assert response[-1] == tokenizer.eos_token_id
    reply = tokenizer.decode(response[:-1])
    assert reply.startswith("<action>") and reply.endswith("</action>")
    chosen.append(reply[len("<action>"):-len("</action>")])
    assert turn.next_observation.startswith(f"You went {chosen[-1]}.")  # the outcome of this very action
    assert "You hit the edge" not in turn.next_observation  # random play explores moves that do something
  assert set(chosen) == set(MOVES)  # random play uses every action


def test_env_tokenizer_gives_each_grid_cell_its_own_token():
  env = make("frozenlake", size=3)
  tokenizer = train_env_tokenizer(env, PROMPT, vocab_size=600, episodes=40, seed=0)
  grid = "P _ O\n_ _ _\nO _ G"
  pieces = [tokenizer.decode([i]) for i in tokenizer.encode(grid)]
  assert [p.strip() for p in pieces if p.strip()] == grid.split()
  assert np.all([len(p.strip()) <= 1 for p in pieces])
