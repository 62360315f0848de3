"""Turn prompts (paper / verl-agent structure): task, step count, last K (observation, action) pairs, current
observation, admissible actions, and the format instruction (reason in <think>, act in the env's action tags)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

from paw_jax.envs.base import TextEnv, tagged

if TYPE_CHECKING:
  from paw_jax.models.tokenizer import Tokenizer


PARTS = ("task", "history", "observation", "admissible", "instruction")  # the paper's order


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """What a turn's user message holds and in which order (`order`: every name of `PARTS` once)."""
  history: int = 2  # last K (observation, action) pairs; -1 = the full history (search-QA)
  think: bool = True  # ask for <think>...</think> before the action
  list_admissible: bool = True  # False when the task text already names every action (short prompts)
  system: str = ""  # an optional system message
  task: str = ""  # replaces the env's own task text ('' keeps it): a shorter wording for a small model
  instruction: str = ""  # replaces the format instruction ('' keeps the standard one)
  order: tuple[str, ...] = PARTS

  def __post_init__(self):
    if sorted(self.order) != sorted(PARTS):
      raise ValueError(f"prompt.order must name each of {', '.join(PARTS)} once; got {', '.join(self.order)}")


def format_instruction(env_cls: type[TextEnv], think: bool) -> str:
  tags = " or ".join(tagged(t, " ") for t in env_cls.action_tags)
  if not think:
    return f"Reply with your action for the current step enclosed within {tags} tags, and nothing else."
  return ("You should first reason step-by-step about the current situation. This reasoning process MUST be "
          "enclosed within <think> </think> tags. Once you've finished your reasoning, you should choose an "
          f"action for the current step and present it within {tags} tags.")


def _context(cfg: PromptConfig, task: str, step: int, history: list[tuple[str, str]],
             observation: str) -> dict[str, str]:
  """The task, the last K (observation, action) pairs and the current observation of turn `step` (0-based)."""
  kept = history if cfg.history < 0 else history[len(history) - cfg.history:] if cfg.history else []
  parts = {"task": (cfg.task or task).strip(), "history": ""}
  if step and not kept:
    parts["history"] = f"Prior to this step, you have already taken {step} step(s)."
  elif step:
    past = "\n".join(f"[Observation {step - len(kept) + i + 1}: {obs.strip()}]\n[Action {step - len(kept) + i + 1}: "
                     f"{action}]" for i, (obs, action) in enumerate(kept))
    parts["history"] = (f"Prior to this step, you have already taken {step} step(s). Below are the most recent "
                        f"{len(kept)} observations and the corresponding actions you took:\n{past}")
  parts["observation"] = f"You are now at step {step + 1} and your current observation is:\n{observation.strip()}"
  return parts


def render_turn(env_cls: type[TextEnv], cfg: PromptConfig, task: str, step: int, history: list[tuple[str, str]],
                observation: str, admissible: list[str] | None) -> str:
  """The user message of turn `step` (0-based); `history` holds every earlier (observation, action) pair."""
  parts = _context(cfg, task, step, history, observation)
  parts["admissible"] = env_cls.format_admissible(admissible) if cfg.list_admissible else ""
  parts["instruction"] = cfg.instruction or format_instruction(env_cls, cfg.think)
  return "\n\n".join(parts[name] for name in cfg.order if parts[name])


NEXT_STATE_TAG = "next_state"
NEXT_STATE_INSTRUCTION = (
    "Predict the observation you will see right after taking the potential action. You should first reason "
    f"step-by-step about how the action changes the situation, inside {tagged('think', ' ')} tags, then give the "
    f"predicted next observation inside {tagged(NEXT_STATE_TAG, ' ')} tags.")


def render_next_state(cfg: PromptConfig, task: str, step: int, history: list[tuple[str, str]], observation: str,
                      action: str, instruction: str = "") -> str:
  """RWML's world-model prompt (docs/RWML.md): the turn's context, the action to judge, and the instruction to predict
  its next observation in <next_state> tags (`instruction` replaces the standard one). Parts follow `cfg.order`, the
  potential action in the admissible slot."""
  parts = _context(cfg, task, step, history, observation)
  parts["admissible"] = f"Potential action: {action}"
  parts["instruction"] = instruction or NEXT_STATE_INSTRUCTION
  return "\n\n".join(parts[name] for name in cfg.order if parts[name])


def next_state_label(next_observation: str) -> str:
  """Next-state SFT's target (the paper's "WM SFT"): an empty think block, then the real next observation."""
  return tagged("think", "") + tagged(NEXT_STATE_TAG, next_observation.strip())


def chat_messages(cfg: PromptConfig, user_text: str) -> list[dict[str, str]]:
  messages = [{"role": "system", "content": cfg.system}] if cfg.system else []
  return messages + [{"role": "user", "content": user_text}]


def fitted_prompt_ids(tokenizer: Tokenizer, cfg: PromptConfig, render: Callable[[list[tuple[str, str]]], str],
                      history: list[tuple[str, str]], max_prompt_len: int) -> list[int] | None:
  """The chat tokens of `render(history)`, dropping the oldest history pairs until they fit `max_prompt_len`; None
  when even no history fits."""
  history = list(history)
  while True:
    ids = tokenizer.encode_chat(chat_messages(cfg, render(history)), add_generation_prompt=True)
    if len(ids) <= max_prompt_len:
      return ids
    if not history:
      return None
    history = history[1:]
