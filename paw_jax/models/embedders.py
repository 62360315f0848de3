"""Text embedders for RWML's similarity reward: one interface, a BERT (MiniLM) and a decoder (Qwen3-Embedding) backend.

Every backend returns L2-normalised float32 rows, so 1 − cos is 1 − a·b (`algos.rewards.cosine_distance`). Texts are tokenized on the host,
sorted by length and run in batches whose rows and length are padded to powers of two (capped at `batch_size` and
`max_length`), so a backend compiles at most log2(batch_size) x log2(max_length) programs however many texts come.
Texts longer than `max_length` tokens are truncated from the right.
"""
from __future__ import annotations

import functools
import json
import os
import pathlib
from typing import Callable, Protocol, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tokenizers
from flax import nnx

from paw_jax.models import assets, bert, hf_io
from paw_jax.models.config import SUPPORTED_MODEL_TYPES
from paw_jax.models.tokenizer import ENDOFTEXT, Tokenizer
from paw_jax.models.transformer import positions_from_mask

MIN_BUCKET = 16  # shortest padded length: tiny texts share one program
# RWML embeds the real next observation as the instructed query and the prediction as a plain document.
DEFAULT_INSTRUCTION = "Given an observation from a text environment, retrieve predictions that describe the same state"


class Embedder(Protocol):
  def embed(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
    """float32 [N, D], each row L2-normalised; `query` marks texts embedded as queries (instructed backends)."""
    ...


def _next_power_of_two(n: int) -> int:
  return 1 << max(n - 1, 0).bit_length()


def _l2_normalise(x_BxD: jax.Array) -> jax.Array:
  return x_BxD / jnp.maximum(jnp.linalg.norm(x_BxD, axis=-1, keepdims=True), 1e-12)


def _embed_batched(ids: list[list[int]], pooled: Callable[[np.ndarray, np.ndarray], jax.Array], dim: int, *,
                   pad_id: int, batch_size: int, max_length: int, left_pad: bool) -> np.ndarray:
  """Runs `pooled(tokens_BxT, mask_BxT) -> BxD` over length-sorted, bucket-padded batches; rows in input order."""
  if any(not row for row in ids):
    raise ValueError("a text tokenized to no tokens: nothing to pool (keep the end token for the decoder embedder)")
  order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
  out_NxD = np.zeros((len(ids), dim), np.float32)
  for start in range(0, len(ids), batch_size):
    rows = order[start:start + batch_size]
    seq_len = min(max(_next_power_of_two(len(ids[rows[-1]])), MIN_BUCKET), max_length)
    batch = min(_next_power_of_two(len(rows)), batch_size)
    tokens_BxT = np.full((batch, seq_len), pad_id, np.int32)
    mask_BxT = np.zeros((batch, seq_len), bool)  # filler rows stay all-padding; rows never mix, so they are inert
    for r, i in enumerate(rows):
      span = slice(seq_len - len(ids[i]), seq_len) if left_pad else slice(0, len(ids[i]))
      tokens_BxT[r, span] = ids[i]
      mask_BxT[r, span] = True
    out_NxD[rows] = np.asarray(pooled(tokens_BxT, mask_BxT))[:len(rows)]
  return out_NxD


@functools.partial(jax.jit, static_argnums=0)
def _mean_pooled(graphdef: nnx.GraphDef, state: nnx.State, tokens_BxT: jax.Array, mask_BxT: jax.Array) -> jax.Array:
  """Sentence-transformers' mean pooling over real tokens of right-padded rows, then L2 norm."""
  hidden_BxTxD = nnx.merge(graphdef, state)(tokens_BxT, mask_BxT)
  weights_BxTx1 = mask_BxT[..., None].astype(jnp.float32)
  mean_BxD = jnp.sum(hidden_BxTxD * weights_BxTx1, axis=1) / jnp.maximum(jnp.sum(weights_BxTx1, axis=1), 1e-9)
  return _l2_normalise(mean_BxD)


@functools.partial(jax.jit, static_argnums=0)
def _last_token_pooled(graphdef: nnx.GraphDef, state: nnx.State, tokens_BxT: jax.Array,
                       mask_BxT: jax.Array) -> jax.Array:
  """Final-normed hidden state of each left-padded row's last slot (its last real token), then L2 norm."""
  decoder = nnx.merge(graphdef, state)
  hidden_BxTxD, _ = decoder.hidden_states(tokens_BxT, positions_from_mask(mask_BxT), mask_BxT)
  return _l2_normalise(hidden_BxTxD[:, -1].astype(jnp.float32))


class MiniLMEmbedder:
  """all-MiniLM-L6-v2 (or any BERT directory with config.json, model.safetensors, tokenizer.json): mean pooling over
  real tokens, L2 norm. The model is symmetric, so `query` changes nothing. Rows are right-padded."""

  def __init__(self, path: str | os.PathLike | None = None, *, max_length: int | None = None, batch_size: int = 64):
    path = pathlib.Path(assets.minilm_dir() if path is None else path)
    if not (path / "tokenizer.json").is_file():
      raise ValueError(f"'{path}' is not a BERT checkpoint directory (needs config.json, model.safetensors and "
                       "tokenizer.json)")
    encoder = bert.load_bert(path)
    self.dim = encoder.cfg.hidden_size
    self.batch_size = batch_size
    # sentence-transformers truncates at its own max_seq_length (256 for MiniLM), below the 512 positions.
    self.max_length = min(max_length or _sentence_transformers_max_length(path) or encoder.cfg.max_position_embeddings,
                          encoder.cfg.max_position_embeddings)
    self.tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    self.tokenizer.no_padding()  # MiniLM's file pads every text to 128; batches are padded to buckets instead
    self.tokenizer.enable_truncation(self.max_length)  # [CLS] and [SEP] included
    self._graphdef, self._state = nnx.split(encoder)

  def tokenize(self, texts: Sequence[str], *, query: bool = False) -> list[list[int]]:
    """[CLS] wordpieces [SEP] per text, at most `max_length` ids."""
    return [encoding.ids for encoding in self.tokenizer.encode_batch(list(texts))]

  def embed(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
    return _embed_batched(self.tokenize(texts), functools.partial(_mean_pooled, self._graphdef, self._state),
                          self.dim, pad_id=0, batch_size=self.batch_size, max_length=self.max_length, left_pad=False)


def _sentence_transformers_max_length(path: pathlib.Path) -> int | None:
  config_file = path / "sentence_bert_config.json"
  return json.loads(config_file.read_text()).get("max_seq_length") if config_file.is_file() else None


class DecoderEmbedder:
  """Qwen3-Embedding style through paw_jax's decoder: last-token pooling of the final-normed hidden states, L2 norm.

  Each text is `tokens(text)[:max_length - 1] + [end_token]`, as Qwen3-Embedding does with <|endoftext|> (its
  tokenizer's post-processor appends it; set `end_token=None` for checkpoints trained without one). Queries get the
  prefix "Instruct: {instruction}\\nQuery:" with no space before the text. Rows are left-padded, so the last slot of
  every row holds its last real token; RoPE positions count from each row's first real token.
  """

  def __init__(self, path: str | os.PathLike | None = None, *, instruction: str = DEFAULT_INSTRUCTION,
               end_token: str | None = ENDOFTEXT, max_length: int = 8192, batch_size: int = 16, **cfg_overrides):
    if path is None:
      raise ValueError("the decoder embedder needs a checkpoint directory (none ships offline)")
    path = pathlib.Path(path)
    config_file = path / "config.json"
    hf_config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if hf_config.get("model_type") not in SUPPORTED_MODEL_TYPES or not (path / "tokenizer.json").is_file():
      raise ValueError(f"'{path}' is not a decoder checkpoint directory (needs config.json with model_type "
                       f"{', '.join(SUPPORTED_MODEL_TYPES)}, safetensors and tokenizer.json)")
    try:
      # The LM head is never used, and Qwen3-Embedding-8B ships none although its config says untied.
      cfg, params = hf_io.load_checkpoint(path, tie_word_embeddings=True, **cfg_overrides)
    except ValueError as e:
      raise ValueError(f"'{path}' is not a supported decoder checkpoint: {e}") from None
    self._graphdef, self._state = nnx.split(hf_io.model_from_params(cfg, params))
    self.dim = cfg.hidden_size
    self.instruction = instruction
    self.batch_size = batch_size
    self.max_length = min(max_length, cfg.max_position_embeddings)
    self.tokenizer = Tokenizer.load(path)
    self.end_id = None
    if end_token is not None:
      self.end_id = self.tokenizer.hf.convert_tokens_to_ids(end_token)
      if self.end_id is None or self.end_id == self.tokenizer.hf.unk_token_id:
        raise ValueError(f"end_token {end_token!r} is not in the vocabulary of '{path}'")

  def tokenize(self, texts: Sequence[str], *, query: bool = False) -> list[list[int]]:
    """Token ids per text: instruction prefix when `query`, truncated to leave room for the end token."""
    prefix = f"Instruct: {self.instruction}\nQuery:" if query else ""
    end = [] if self.end_id is None else [self.end_id]
    ids = self.tokenizer.hf([prefix + text for text in texts], add_special_tokens=False)["input_ids"]
    return [row[:self.max_length - len(end)] + end for row in ids]

  def embed(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
    return _embed_batched(self.tokenize(texts, query=query),
                          functools.partial(_last_token_pooled, self._graphdef, self._state), self.dim,
                          pad_id=self.tokenizer.pad_token_id, batch_size=self.batch_size,
                          max_length=self.max_length, left_pad=True)


EMBEDDERS: dict[str, Callable[..., Embedder]] = {"minilm": MiniLMEmbedder, "qwen3_embedding": DecoderEmbedder}


def load_embedder(name: str, path: str | os.PathLike | None = None, **options) -> Embedder:
  """The embedder `name` from `path` (its default when None); `options` go to its constructor."""
  if name not in EMBEDDERS:
    raise ValueError(f"unknown embedder {name!r}; valid names: {', '.join(EMBEDDERS)}")
  return EMBEDDERS[name](path, **options)
