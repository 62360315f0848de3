r"""Search-augmented QA (Search-R1 style): `<search>query</search>` retrieves passages, `<answer>...</answer>` ends.

Reward: 1 when the answer exactly matches a gold answer after SQuAD normalisation, else 0; an empty query or a reply
with neither tag costs -0.01. At most 4 turns, and the prompt keeps the full history.

Data (`data_dir`, default: the built-in set in paw_jax/envs/data/search_qa/):
  {data_dir}/corpus.jsonl        passages, `{"id", "contents": "\"Title\"\ntext"}` (override with `corpus_path`)
  {data_dir}/{name}/{split}.jsonl questions, `{"id", "question", "golden_answers": [...], "data_source"}`
This is FlashRAG's layout, from which Search-R1 builds its nq / triviaqa / popqa / hotpotqa / 2wikimultihopqa / musique
/ bamboogle sets; a split without a test file is evaluated on dev.jsonl. A dataset named `tfds:<name>`
(natural_questions_open, trivia_qa/...) is read with tensorflow-datasets instead, from its prepared local copy.
The built-in set (datasets="builtin") is 198 made-up encyclopedia passages and 100 questions (80 train / 20 test; 70
single-hop, 30 two-hop), so answers must come from search rather than from pretraining.
"""
from __future__ import annotations

import dataclasses
import re
import string
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from paw_jax.envs.base import Action, EnvError, Task, TextEnv, read_jsonl
from paw_jax.envs.retrieval import Passage, Retriever, bm25_for_corpus

BUILTIN_DATA_DIR = Path(__file__).parent / "data" / "search_qa"
TFDS_PREFIX = "tfds:"

# Datasets without a labelled test file are evaluated on dev, as Search-R1 does.
_SPLIT_FILES = {"test": ("test", "dev")}


@dataclasses.dataclass(frozen=True)
class Question:
  id: str
  question: str
  golden_answers: tuple[str, ...]
  data_source: str


def normalize_answer(text: str) -> str:
  """SQuAD / Search-R1 normalisation: lowercase, drop punctuation and articles, collapse whitespace."""
  text = "".join(char for char in text.lower() if char not in string.punctuation)
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match(prediction: str, golden_answers: Sequence[str]) -> bool:
  normalized = normalize_answer(prediction)
  return any(normalized == normalize_answer(gold) for gold in golden_answers)


def _question_from_record(record: dict[str, Any], default_id: str, default_source: str) -> Question:
  if not isinstance(record.get("question"), str):
    raise ValueError("expected a string 'question'")
  answers = record.get("golden_answers")
  if not isinstance(answers, list) or not answers or not all(isinstance(a, str) for a in answers):
    raise ValueError("'golden_answers' must be a non-empty list of strings")
  return Question(str(record.get("id", default_id)), record["question"], tuple(answers),
                  str(record.get("data_source", default_source)))


def load_jsonl_questions(path: str | Path, default_source: str) -> list[Question]:
  """Reads a Search-R1 / FlashRAG question file; a bad line raises EnvError naming the file, line and field."""
  questions = []
  for line_number, record in read_jsonl(path):
    try:
      questions.append(_question_from_record(record, f"{default_source}_{line_number}", default_source))
    except ValueError as error:
      raise EnvError(f"{path}:{line_number}: {error}") from error
  if not questions:
    raise EnvError(f"question file {path} is empty")
  return questions


def load_local_questions(data_dir: Path, name: str, split: str) -> list[Question]:
  candidates = [data_dir / name / f"{file_split}.jsonl" for file_split in _SPLIT_FILES.get(split, (split,))]
  for path in candidates:
    if path.is_file():
      return load_jsonl_questions(path, default_source=name)
  present = sorted(p.stem for p in (data_dir / name).glob("*.jsonl"))
  raise EnvError(f"search_qa: no '{split}' questions for dataset '{name}': expected "
                 f"{' or '.join(map(str, candidates))}; splits present: {present or 'none'}")


@dataclasses.dataclass(frozen=True)
class _TfdsSource:
  short_name: str  # the Search-R1 name, used as data_source and in the suggested local path
  answers: Callable[[dict[str, Any]], list[Any]]


_TFDS_SOURCES = {
    "natural_questions_open": _TfdsSource("nq", lambda example: list(example["answer"])),
    "trivia_qa": _TfdsSource("triviaqa", lambda example: list(example["answer"]["aliases"])),
}
# Both sets hide their test answers; the labelled validation split is the evaluation split.
_TFDS_SPLITS = {"test": "validation", "dev": "validation"}


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_tfds_questions(name: str, split: str, data_dir: Path, tfds_data_dir: str | None = None) -> list[Question]:
  """Questions from a tensorflow-datasets copy prepared beforehand (nothing downloads here)."""
  source = _TFDS_SOURCES.get(name.split("/")[0])
  if source is None:
    raise EnvError(f"search_qa: unsupported tfds dataset '{name}'; supported: {', '.join(sorted(_TFDS_SOURCES))}")
  tfds_split = _TFDS_SPLITS.get(split, split)
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    examples = tfds.as_numpy(tfds.load(name, split=tfds_split, data_dir=tfds_data_dir, download=False))
    return [Question(f"{source.short_name}_{i}", _text(example["question"]),
                     tuple(_text(a) for a in source.answers(example)), source.short_name)
            for i, example in enumerate(examples)]
  except Exception as error:  # tfds raises many types (AssertionError, DatasetNotFoundError, ImportError, ...)
    raise EnvError(f"search_qa: tensorflow-datasets cannot load '{name}' split '{tfds_split}' offline "
                   f"({type(error).__name__}); put it as Search-R1 JSONL at "
                   f"{data_dir / source.short_name / (split + '.jsonl')} and use datasets=['{source.short_name}']"
                   ) from error


def format_information(passages: list[Passage]) -> str:
  """Search-R1's observation for a search: numbered passages inside <information>."""
  docs = "\n".join(f"Doc {i}(Title: {p.title}) {p.text}" for i, p in enumerate(passages, start=1))
  return f"<information>{docs}</information>"


class SearchQAEnv(TextEnv):
  """Answer a question, searching a local corpus as needed; a Task (split, seed) picks question seed % count."""
  name = "search_qa"
  r_max = 1.0
  invalid_penalty = -0.01
  max_steps = 4
  action_tags = ("search", "answer")

  def __init__(self, datasets: str | Sequence[str] | Mapping[str, Sequence[str]] = "builtin",
               data_dir: str | Path | None = None, corpus_path: str | Path | None = None,
               retriever: Retriever | None = None, top_k: int = 3, tfds_data_dir: str | None = None,
               max_steps: int | None = None):
    """`datasets`: names used for every split, or a mapping split -> names (e.g. Search-R1 trains on nq + hotpotqa
    and evaluates on all seven)."""
    super().__init__(max_steps)
    if top_k < 1:
      raise EnvError(f"search_qa: top_k must be >= 1, got {top_k}")
    self.datasets = datasets
    self.data_dir = Path(data_dir) if data_dir is not None else BUILTIN_DATA_DIR
    self.top_k = top_k
    self._tfds_data_dir = tfds_data_dir
    self._retriever = retriever or bm25_for_corpus(str(corpus_path or self.data_dir / "corpus.jsonl"))
    self._questions_by_split: dict[str, list[Question]] = {}
    self.question: Question | None = None

  def dataset_names(self, split: str) -> tuple[str, ...]:
    if isinstance(self.datasets, str):
      return (self.datasets,)
    if isinstance(self.datasets, Mapping):
      if split not in self.datasets:
        raise EnvError(f"search_qa: no datasets for split '{split}'; datasets has splits {sorted(self.datasets)}")
      return tuple(self.datasets[split])
    return tuple(self.datasets)

  def questions(self, split: str) -> list[Question]:
    """All questions of `split`, over its datasets in order (loaded once)."""
    if split not in self._questions_by_split:
      questions = [q for name in self.dataset_names(split) for q in self._load(name, split)]
      if not questions:
        raise EnvError(f"search_qa: split '{split}' has no questions (datasets: {self.datasets})")
      self._questions_by_split[split] = questions
    return self._questions_by_split[split]

  def _load(self, name: str, split: str) -> list[Question]:
    if name.startswith(TFDS_PREFIX):
      return load_tfds_questions(name[len(TFDS_PREFIX):], split, self.data_dir, self._tfds_data_dir)
    return load_local_questions(self.data_dir, name, split)

  def _reset(self, task: Task) -> tuple[str, dict[str, Any]]:
    questions = self.questions(task.split)
    self.question = questions[task.seed % len(questions)]
    info = dict(task=self._task_description(self.question.question), task_type=self.question.data_source,
                question_id=self.question.id)
    return f"Question: {self.question.question}", info

  def _task_description(self, question: str) -> str:
    return (f"Answer the given question. When you lack some knowledge, call a search engine with "
            f"<search> query </search>; it returns the top {self.top_k} passages between <information> and "
            f"</information>. You may search several times, but you have {self.max_steps} turns in all. When you "
            f"know the answer, give it inside <answer> and </answer> as a short phrase without explanation, for "
            f"example <answer> Beijing </answer>. Answering ends the episode. Question: {question}")

  def _step(self, action: Action) -> tuple[str, float, bool, dict[str, Any]]:
    if action.tag == "search":
      return format_information(self._retriever.search(action.text, self.top_k)), 0.0, False, {"won": False}
    won = exact_match(action.text, self.question.golden_answers)
    # The episode ends here, so there is no next observation (and no world-model target).
    return "", self.r_max if won else 0.0, True, {"won": won, "golden_answers": list(self.question.golden_answers)}
