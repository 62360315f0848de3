"""What a from-scratch model needs before RL: a tokenizer trained on the env's own text, and warm-up rows.

Both come from random play (uniform over the env's `exploratory_actions`: the admissible ones, less moves that do
nothing), so neither carries any signal about which action reaches the goal: the warm-up teaches the reply format
`<action>...</action>` + end of turn and, through the appended next observation, the env's dynamics (how an action
changes what the model sees), never which action wins. Leaving out the do-nothing moves makes the warm-up's choice
depend on the observation (in FrozenLake: not into the edge). Measured: after a warm-up on uniform labels, RL got
stuck at a policy whose choice ignored the prompt (the same move probabilities with a random prompt).
"""
from __future__ import annotations

import random

import numpy as np

from paw_jax.envs.base import Task, TextEnv, tagged
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.prompts import PromptConfig, chat_messages, next_state_label, render_next_state, render_turn
from paw_jax.rollout import Turn

TASKS_PER_SEED = 100_003  # random play of seed s uses tasks s * this + episode: disjoint task ranges per seed


def random_play(env: TextEnv, split: str, episodes: int, seed: int):
  """Yields (task_text, step, history, observation, admissible, action, next_observation) for every turn of random
  episodes."""
  rng = random.Random(seed)
  for episode in range(episodes):
    observation, info = env.reset(Task(split, seed * TASKS_PER_SEED + episode))
    task_text, admissible, history = str(info.get("task", "")), info.get("admissible_actions"), []
    for step in range(env.max_steps):
      if not admissible:
        break
      action = rng.choice(env.exploratory_actions() or admissible)
      result = env.step(reply_text(type(env), action))
      yield task_text, step, list(history), observation, admissible, action, result.observation
      history.append((observation, action))
      observation, admissible = result.observation, result.info.get("admissible_actions")
      if result.done:
        break


def reply_text(env_cls: type[TextEnv], action: str) -> str:
  return tagged(env_cls.action_tags[0], action)


def train_env_tokenizer(env: TextEnv, prompt_cfg: PromptConfig, vocab_size: int, episodes: int, seed: int,
                        next_state_instruction: str | None = None) -> Tokenizer:
  """A byte-level BPE trained on rendered prompts, replies and observations of random play; with a
  `next_state_instruction` ('' for the standard one) also on next-state prompts and labels (RWML's)."""
  texts = ["system", "user", "assistant"] * 64  # the chat template's role names: one token each
  for task_text, step, history, observation, admissible, action, next_observation in random_play(
      env, "train", episodes, seed):
    texts.append(render_turn(type(env), prompt_cfg, task_text, step, history, observation, admissible))
    texts.append(reply_text(type(env), action))
    texts.append(observation)
    if next_state_instruction is not None:
      texts.append(render_next_state(prompt_cfg, task_text, step, history, observation, action,
                                     next_state_instruction))
      texts.append(next_state_label(next_observation))
  return Tokenizer.train_bpe(texts, vocab_size=vocab_size)


def warmup_turns(env: TextEnv, tokenizer: Tokenizer, prompt_cfg: PromptConfig, episodes: int, seed: int) -> list[Turn]:
  """(prompt, random admissible action + end of turn, next observation) rows."""
  turns = []
  plays = list(random_play(env, "train", episodes, seed))
  for i, (task_text, step, history, observation, admissible, action, next_observation) in enumerate(plays):
    text = render_turn(type(env), prompt_cfg, task_text, step, history, observation, admissible)
    prompt_ids = tokenizer.encode_chat(chat_messages(prompt_cfg, text), add_generation_prompt=True)
    response = np.asarray(tokenizer.encode(reply_text(type(env), action)) + [tokenizer.eos_token_id], np.int32)
    zeros = np.zeros(len(response), np.float32)
    turns.append(Turn(0, i, 0, prompt_ids, response, zeros, zeros, observation, next_observation, 0.0, True, False, 0,
                      action, admissible))
  return turns
