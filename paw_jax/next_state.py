"""The next-state task on a policy (docs/RWML.md): a triplet's world-model prompt and SFT label, sampled predictions,
and the judge that rewards them by similarity to the real next observation.

RWML's GRPO, next-state SFT, the too-easy filter and the world-model eval all pose the same task through here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np

from paw_jax.algos.rewards import extract_next_state, similarity_rewards
from paw_jax.models.embedders import Embedder, load_embedder
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.prompts import PromptConfig, fitted_prompt_ids, next_state_label, render_next_state
from paw_jax.rollout import Turn
from paw_jax.sampling import Sampler, SamplingConfig
from paw_jax.triplets import Triplet

CHARS_PER_TOKEN = 32  # a parsed prediction is first cut to this many characters per allowed token (no token is longer)


def prompt_ids(tokenizer: Tokenizer, cfg: PromptConfig, instruction: str, triplet: Triplet,
               max_prompt_len: int) -> list[int] | None:
  """The chat tokens of the triplet's next-state prompt, the oldest history dropped until it fits (None: no fit)."""
  return fitted_prompt_ids(
      tokenizer, cfg, lambda history: render_next_state(cfg, triplet.task, triplet.step, history, triplet.observation,
                                                        triplet.action, instruction),
      list(triplet.history), max_prompt_len)


def sft_turns(tokenizer: Tokenizer, cfg: PromptConfig, instruction: str, triplets: Sequence[Triplet],
              max_prompt_len: int, max_len: int) -> list[Turn]:
  """Next-state SFT rows (the paper's "WM SFT"): the prompt, then an empty think block and the real next observation
  in <next_state> tags, then end of turn. Triplets whose prompt or row (`max_len`) cannot fit are left out: a cut
  label would teach a wrong next observation."""
  turns = []
  for i, triplet in enumerate(triplets):
    ids = prompt_ids(tokenizer, cfg, instruction, triplet, max_prompt_len)
    if ids is None:
      continue
    response = np.asarray(tokenizer.encode(next_state_label(triplet.next_observation)) + [tokenizer.eos_token_id],
                          np.int32)
    if len(ids) + len(response) > max_len:
      continue
    zeros = np.zeros(len(response), np.float32)
    turns.append(Turn(i, 0, 0, ids, response, zeros, zeros, triplet.observation, "", 0.0, True, False, 0,
                      triplet.action))  # no next observation to append: the label holds it
  return turns


@dataclasses.dataclass
class Predictions:
  prompts: list[list[int]]  # one per prediction (triplet-major: the samples of triplet i are rows i*G .. i*G+G-1)
  samples: list[dict[str, np.ndarray]]  # the sampler's tokens, log-probs, entropies
  replies: list[str]


def sample(sampler: Sampler, params: Any, tokenizer: Tokenizer, prompts: Sequence[list[int]], num_samples: int,
           rng: jax.Array, cfg: SamplingConfig, wave: int) -> Predictions:
  """`num_samples` replies to each prompt, in sampler calls of at most `wave` rows (the rollouts' wave size)."""
  repeated = [p for p in prompts for _ in range(num_samples)]
  samples = []
  for start in range(0, len(repeated), wave):
    samples += sampler(params, repeated[start:start + wave], jax.random.fold_in(rng, start), cfg)
  return Predictions(repeated, samples, [tokenizer.decode(s["tokens"].tolist(), skip_special_tokens=True)
                                         for s in samples])


@dataclasses.dataclass
class Judge:
  """Rewards replies against the real next observations: the last <next_state> block, cut to
  `max_prediction_tokens` tokens of the policy's tokenizer, compared by `similarity` (with `embedder` for cosine)."""
  similarity: str
  embedder: Embedder | None
  tokenizer: Tokenizer
  max_prediction_tokens: int

  @classmethod
  def load(cls, similarity: str, embedder: str, embedder_path: str, tokenizer: Tokenizer,
           max_prediction_tokens: int) -> Judge:
    model = load_embedder(embedder, embedder_path or None) if similarity == "cosine" else None
    return cls(similarity, model, tokenizer, max_prediction_tokens)

  def parse(self, reply: str) -> str | None:
    prediction = extract_next_state(reply, max_chars=self.max_prediction_tokens * CHARS_PER_TOKEN)
    if prediction is None:
      return None
    return self.tokenizer.decode(self.tokenizer.encode(prediction)[:self.max_prediction_tokens]).strip() or None

  def __call__(self, replies: Sequence[str], references: Sequence[str],
               tau: float) -> tuple[np.ndarray, dict[str, float]]:
    """reward_N in {0, 1} and stats: parse_rate, nan_count, mean_<similarity> (over parsed predictions)."""
    return similarity_rewards(self.similarity, [self.parse(r) for r in replies], list(references),
                              embedder=self.embedder, tau=tau)
