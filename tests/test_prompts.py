"""Turn prompts against hand-written expected text (the paper's structure)."""
import pytest

from paw_jax.envs.frozenlake import FrozenLakeEnv
from paw_jax.envs.search_qa import SearchQAEnv
from paw_jax.algos.rewards import extract_next_state
from paw_jax.prompts import PromptConfig, next_state_label, render_next_state, render_turn

HISTORY = [("obs one", "left"), ("obs two", "up"), ("obs three", "down")]


def test_last_k_pairs_step_count_admissible_and_think_instruction():
  text = render_turn(FrozenLakeEnv, PromptConfig(history=2), "Reach the goal.", 3, HISTORY, "grid now", ["up", "down"])
  assert text == (
      "Reach the goal.\n\n"
      "Prior to this step, you have already taken 3 step(s). Below are the most recent 2 observations and the "
      "corresponding actions you took:\n"
      "[Observation 2: obs two]\n[Action 2: up]\n[Observation 3: obs three]\n[Action 3: down]\n\n"
      "You are now at step 4 and your current observation is:\ngrid now\n\n"
      "Your admissible actions of the current situation are:\n'up'\n'down'\n\n"
      "You should first reason step-by-step about the current situation. This reasoning process MUST be enclosed "
      "within <think> </think> tags. Once you've finished your reasoning, you should choose an action for the "
      "current step and present it within <action> </action> tags.")


def test_no_history_first_step_and_free_form_env_tags():
  first = render_turn(FrozenLakeEnv, PromptConfig(history=0, think=False, list_admissible=False), "T.", 0, [],
                      "start", ["up"])
  assert first == ("T.\n\nYou are now at step 1 and your current observation is:\nstart\n\n"
                   "Reply with your action for the current step enclosed within <action> </action> tags, "
                   "and nothing else.")
  later = render_turn(FrozenLakeEnv, PromptConfig(history=0, think=False), "T.", 2, HISTORY[:2], "o", None)
  assert "Prior to this step, you have already taken 2 step(s).\n\nYou are now at step 3" in later
  full = render_turn(SearchQAEnv, PromptConfig(history=-1), "Q?", 3, HISTORY, "info", None)
  assert "[Observation 1: obs one]" in full and "<search> </search> or <answer> </answer>" in full
  assert "admissible" not in full


def test_configured_task_instruction_and_order():
  cfg = PromptConfig(history=0, think=False, task="Reach G.", instruction="Reply <action>move</action>.",
                     order=("instruction", "task", "history", "admissible", "observation"))
  text = render_turn(FrozenLakeEnv, cfg, "the env's long task text", 0, [], "start", ["up", "down"])
  assert text == ("Reply <action>move</action>.\n\nReach G.\n\nYour admissible actions of the current situation are:\n"
                  "'up'\n'down'\n\nYou are now at step 1 and your current observation is:\nstart")
  with pytest.raises(ValueError, match="prompt.order must name each of task, history, observation, admissible, "
                                       "instruction once; got task, observation"):
    PromptConfig(order=("task", "observation"))


def test_next_state_prompt_puts_the_potential_action_where_the_actions_were():
  text = render_next_state(PromptConfig(history=1), "Reach the goal.", 3, HISTORY, "grid now", "left")
  assert text == (
      "Reach the goal.\n\n"
      "Prior to this step, you have already taken 3 step(s). Below are the most recent 1 observations and the "
      "corresponding actions you took:\n[Observation 3: obs three]\n[Action 3: down]\n\n"
      "You are now at step 4 and your current observation is:\ngrid now\n\n"
      "Potential action: left\n\n"
      "Predict the observation you will see right after taking the potential action. You should first reason "
      "step-by-step about how the action changes the situation, inside <think> </think> tags, then give the "
      "predicted next observation inside <next_state> </next_state> tags.")


def test_next_state_label_is_what_the_reward_parses():
  label = next_state_label("  You see a fridge.\n")
  assert label == "<think></think><next_state>You see a fridge.</next_state>"
  assert extract_next_state(label, max_chars=1000) == "You see a fridge."
