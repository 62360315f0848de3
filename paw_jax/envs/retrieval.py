r"""Passage retrieval for search-augmented QA: a corpus in Search-R1's JSONL layout, BM25 and dense top-k retrievers.

Corpus file: one JSON object per line, `{"id": "12", "contents": "\"Title\"\npassage text"}` (Search-R1's wiki-18).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from paw_jax.envs.base import EnvError, read_jsonl


@dataclasses.dataclass(frozen=True)
class Passage:
  id: str
  title: str
  text: str


class Retriever(Protocol):
  """Anything that returns the `k` best passages for a query, best first."""

  def search(self, query: str, k: int) -> list[Passage]:
    ...


def passage_from_contents(passage_id: str, contents: str) -> Passage:
  """Splits Search-R1's `contents` ('"Title"\\ntext') into title and text."""
  title, _, text = contents.partition("\n")
  return Passage(passage_id, title.strip().strip('"'), text.strip())


def load_corpus(path: str | Path) -> list[Passage]:
  """Reads a Search-R1 corpus JSONL file; a malformed line raises EnvError naming the file and line."""
  path = Path(path)
  if not path.is_file():
    raise EnvError(f"corpus file not found: {path}")
  passages = []
  for line_number, record in read_jsonl(path):
    if "id" not in record or not isinstance(record.get("contents"), str):
      raise EnvError(f"{path}:{line_number}: expected {{\"id\", \"contents\": str}}, got {record!r:.80}")
    passages.append(passage_from_contents(str(record["id"]), record["contents"]))
  if not passages:
    raise EnvError(f"corpus file {path} has no passages")
  return passages


# Function words carry no signal for BM25 and let long questions match everything.
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have he her his how in is it its of on or she that the "
    "their them they this to was were what when where which who whom whose why will with".split())


def tokenize(text: str) -> list[str]:
  """Lowercased word tokens without stop words."""
  return [token for token in re.findall(r"\w+", text.lower()) if token not in _STOPWORDS]


def _top_k(passages: list[Passage], scores: np.ndarray, k: int) -> list[Passage]:
  # A stable sort keeps corpus order among ties, so results are deterministic.
  order = np.argsort(-scores, kind="stable")[:k]
  return [passages[i] for i in order]


class BM25Retriever:
  """Okapi BM25 over title + text (rank_bm25)."""

  def __init__(self, passages: list[Passage], k1: float = 0.9, b: float = 0.4):
    # k1 = 0.9, b = 0.4: the Lucene / Pyserini defaults that Search-R1's BM25 baseline uses.
    from rank_bm25 import BM25Okapi  # pylint: disable=import-outside-toplevel
    if not passages:
      raise EnvError("BM25Retriever needs at least one passage")
    self.passages = passages
    self._bm25 = BM25Okapi([tokenize(f"{p.title} {p.text}") for p in passages], k1=k1, b=b)

  def search(self, query: str, k: int) -> list[Passage]:
    return _top_k(self.passages, self._bm25.get_scores(tokenize(query)), k)


EmbedFn = Callable[[list[str]], np.ndarray]


def _unit_rows(embeddings: np.ndarray, expected_rows: int) -> np.ndarray:
  embeddings = np.asarray(embeddings, dtype=np.float32)
  if embeddings.ndim != 2 or embeddings.shape[0] != expected_rows:
    raise EnvError(f"embed_fn must return an array of shape ({expected_rows}, dim), got {embeddings.shape}")
  norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
  return embeddings / np.maximum(norms, 1e-12)


class DenseRetriever:
  """Cosine top-k over embeddings from `embed_fn` (a batch of texts -> [batch, dim] array), e.g. a MiniLM encoder."""

  def __init__(self, passages: list[Passage], embed_fn: EmbedFn, batch_size: int = 256):
    if not passages:
      raise EnvError("DenseRetriever needs at least one passage")
    self.passages = passages
    self._embed_fn = embed_fn
    texts = [f"{p.title}\n{p.text}" for p in passages]
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    self._passage_units = np.concatenate([_unit_rows(embed_fn(batch), len(batch)) for batch in batches])

  def search(self, query: str, k: int) -> list[Passage]:
    query_unit = _unit_rows(self._embed_fn([query]), 1)[0]
    return _top_k(self.passages, self._passage_units @ query_unit, k)


@functools.lru_cache(maxsize=4)
def bm25_for_corpus(path: str) -> BM25Retriever:
  """One BM25 index per corpus file and process, shared by every env instance that uses it."""
  return BM25Retriever(load_corpus(path))
