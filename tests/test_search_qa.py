"""Tests for paw_jax.envs.search_qa and paw_jax.envs.retrieval (built-in corpus, local JSONL, tfds offline)."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from paw_jax.envs import EnvError, Task, make
from paw_jax.envs.retrieval import BM25Retriever, DenseRetriever, Passage, load_corpus, passage_from_contents, tokenize
from paw_jax.envs.search_qa import BUILTIN_DATA_DIR, SearchQAEnv, exact_match, normalize_answer


@pytest.fixture(scope="module")
def env() -> SearchQAEnv:
  return make("search_qa")


@pytest.fixture(scope="module")
def builtin_bm25() -> BM25Retriever:
  return BM25Retriever(load_corpus(BUILTIN_DATA_DIR / "corpus.jsonl"))


# --- answer normalisation and matching ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("The Eiffel Tower", "eiffel tower"),
    ("  Kastel   Varo. ", "kastel varo"),
    ("an apple, a pear & THE plum!", "apple pear plum"),
    ("19.4 km", "194 km"),
    ("Rashid al-Tamar", "rashid altamar"),
    ("Theatre of Anthems", "theatre of anthems"),  # articles only as whole words
    ("A", ""),
])
def test_normalize_answer(text: str, expected: str):
  assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction, golds, expected", [
    ("the Veche", ["Veche"], True),
    ("VECHE!", ["Veche"], True),
    ("Veche Hall", ["Veche"], False),
    ("4,812 metres", ["4812 metres", "4812"], True),
    ("an eight-hour day", ["eight-hour day"], True),
    ("Sarnov", ["Lake Vesk", "Vesk"], False),
    ("", ["Sarnov"], False),
])
def test_exact_match(prediction: str, golds: list[str], expected: bool):
  assert exact_match(prediction, golds) is expected


# --- retrieval ----------------------------------------------------------------------------------------------------
def test_tokenize_drops_case_punctuation_and_stop_words():
  assert tokenize("What is the Capital of Brennia?") == ["capital", "brennia"]


def test_passage_from_contents_splits_search_r1_format():
  assert passage_from_contents("7", '"Lake Vesk"\nLake Vesk is a lake.') == Passage("7", "Lake Vesk", "Lake Vesk is a lake.")


@pytest.mark.parametrize("query, title", [
    ("What is the capital of Kethmar?", "Kethmar"),
    ("Who invented Vant glass?", "Vant glass"),
    ("Who designed the Copper Bridge?", "Copper Bridge"),
    ("Who sculpted The Glass Heron?", "The Glass Heron"),
    ("What is the national flower of Eskarra?", "Fire lily"),
])
def test_bm25_top1_is_the_answer_passage(builtin_bm25: BM25Retriever, query: str, title: str):
  assert builtin_bm25.search(query, k=1)[0].title == title


def test_bm25_finds_an_answer_for_most_builtin_questions(env: SearchQAEnv, builtin_bm25: BM25Retriever):
  questions = env.questions("train") + env.questions("test")
  found = [any(normalize_answer(gold) in normalize_answer(f"{p.title} {p.text}")
               for p in builtin_bm25.search(q.question, k=3) for gold in q.golden_answers) for q in questions]
  assert len(questions) == 100
  assert np.mean(found) >= 0.9  # measured 0.99 (multi-hop questions need a second search)


_VOCAB = ["red", "apple", "green", "pear", "car"]


def _count_embed(texts: list[str]) -> np.ndarray:
  """Deterministic bag-of-words counts over a 5-word vocabulary."""
  return np.array([[tokenize(text).count(word) for word in _VOCAB] for text in texts], dtype=np.float32)


def test_dense_retriever_ranks_by_cosine():
  passages = [Passage("0", "A", "green pear"), Passage("1", "B", "red car"), Passage("2", "C", "red apple")]
  retriever = DenseRetriever(passages, _count_embed, batch_size=2)
  # Query "red apple": cosine 1 with C, 1/2 with B (one shared word of two), 0 with A.
  assert [p.id for p in retriever.search("a red apple", k=3)] == ["2", "1", "0"]


def test_dense_retriever_rejects_bad_embeddings():
  with pytest.raises(EnvError, match=r"shape \(1, dim\)"):
    DenseRetriever([Passage("0", "A", "x")], lambda texts: np.zeros((len(texts) + 1, 4)))


def test_env_uses_a_plugged_retriever():
  passages = [Passage("0", "Fruit", "green pear"), Passage("1", "Car", "red car")]
  dense_env = SearchQAEnv(retriever=DenseRetriever(passages, _count_embed), top_k=1)
  dense_env.reset(Task("train", 0))
  assert dense_env.step("<search>red car</search>").observation == "<information>Doc 1(Title: Car) red car</information>"


# --- the environment ----------------------------------------------------------------------------------------------
def test_reset_is_deterministic_and_covers_the_split(env: SearchQAEnv):
  first = env.reset(Task("train", 7))
  assert env.reset(Task("train", 7)) == first
  ids = {env.reset(Task("train", seed))[1]["question_id"] for seed in range(80)}
  assert len(ids) == 80
  assert env.reset(Task("train", 80))[1]["question_id"] == env.reset(Task("train", 0))[1]["question_id"]
  test_ids = {q.id for q in env.questions("test")}
  assert len(test_ids) == 20 and not test_ids & ids


def test_reset_info_and_prompt(env: SearchQAEnv):
  observation, info = env.reset(Task("test", 0))
  question = env.questions("test")[0]
  assert observation == f"Question: {question.question}"
  assert question.question in info["task"] and "<search>" in info["task"] and "<answer>" in info["task"]
  assert info["task_type"] == question.data_source in ("builtin_simple", "builtin_multihop")
  assert info["admissible_actions"] is None and env.format_admissible(info["admissible_actions"]) == ""


def test_gold_answer_wins_every_question(env: SearchQAEnv):
  for split, count in (("train", 80), ("test", 20)):
    for seed in range(count):
      env.reset(Task(split, seed))
      result = env.step(f"<think>I know it.</think><answer> {env.question.golden_answers[0]} </answer>")
      assert (result.reward, result.done, result.info["won"]) == (1.0, True, True)


def test_search_then_answer(env: SearchQAEnv):
  env.reset(Task("train", 0))  # "What is the capital of Brennia?"
  result = env.step("<search>capital of Brennia</search>")
  assert (result.reward, result.done, result.info["won"]) == (0.0, False, False)
  assert result.observation.startswith("<information>Doc 1(Title: Brennia) Brennia is a mountainous country")
  assert "\nDoc 3(Title: " in result.observation and "Doc 4(" not in result.observation
  assert result.observation.endswith("</information>")
  result = env.step("<answer>the Kastel Varo</answer>")
  assert (result.reward, result.done, result.info["won"], result.observation) == (1.0, True, True, "")


def test_wrong_answer_ends_without_reward(env: SearchQAEnv):
  env.reset(Task("train", 0))
  result = env.step("<answer>Sarnov</answer>")
  assert (result.reward, result.done, result.info["won"]) == (0.0, True, False)


def test_four_searches_truncate(env: SearchQAEnv):
  env.reset(Task("train", 3))
  results = [env.step(f"<search>query {i}</search>") for i in range(4)]
  assert [r.done for r in results] == [False, False, False, True]
  assert results[-1].info["truncated"] and sum(r.reward for r in results) == 0.0


@pytest.mark.parametrize("reply", [
    "Kastel Varo",  # no tag
    "<search>   </search>",  # empty query
    "<answer></answer>",
    "<answer>Kastel Varo",  # unclosed
    "<action>Kastel Varo</action>",  # a tag this env does not take
    "<answer>" + "Kastel Varo " * 900 + "</answer>",  # 10,800 characters
])
def test_invalid_reply_is_penalised_and_changes_nothing(env: SearchQAEnv, reply: str):
  env.reset(Task("train", 0))
  result = env.step(reply)
  assert (result.reward, result.done, result.info["invalid"], result.info["invalid_count"]) == (-0.01, False, True, 1)
  assert result.observation.startswith("Invalid action")
  assert env.step("<answer>Kastel Varo</answer>").info["won"]


def test_random_play_mostly_fails(env: SearchQAEnv):
  rng = random.Random(0)
  answers = [q.golden_answers[0] for q in env.questions("train")]
  words = tokenize(" ".join(q.question for q in env.questions("train")))
  wins = 0
  for seed in range(100):
    env.reset(Task("train", seed))
    result = env.step(f"<search>{' '.join(rng.sample(words, 3))}</search>")
    result = env.step(f"<answer>{rng.choice(answers)}</answer>")
    wins += result.info["won"]
  assert wins <= 5  # chance level is ~1/80


# --- data loading ---------------------------------------------------------------------------------------------------
def _write_jsonl(path, records) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def search_r1_dir(tmp_path):
  _write_jsonl(tmp_path / "corpus.jsonl", [
      {"id": "0", "contents": '"Zorblax"\nZorblax is the largest moon of Quibb.'},
      {"id": "1", "contents": '"Quibb"\nQuibb is a gas giant with nine moons.'}])
  _write_jsonl(tmp_path / "nq" / "train.jsonl", [
      {"id": "train_0", "question": "what is the largest moon of quibb?", "golden_answers": ["Zorblax"],
       "data_source": "nq"}])
  _write_jsonl(tmp_path / "nq" / "test.jsonl", [{"question": "which planet has zorblax?", "golden_answers": ["Quibb"]}])
  # No test.jsonl: the test split falls back to dev, as Search-R1 evaluates hotpotqa.
  _write_jsonl(tmp_path / "hotpotqa" / "dev.jsonl", [
      {"question": "how many moons does quibb have?", "golden_answers": ["nine", "9"]}])
  return tmp_path


def test_local_jsonl_loader_reads_search_r1_files(search_r1_dir):
  qa_env = SearchQAEnv(datasets={"train": ["nq"], "test": ["nq", "hotpotqa"]}, data_dir=search_r1_dir, top_k=1)
  _, info = qa_env.reset(Task("train", 0))
  assert info["task_type"] == "nq" and info["question_id"] == "train_0"
  assert qa_env.step("<search>largest moon of quibb</search>").observation == (
      "<information>Doc 1(Title: Zorblax) Zorblax is the largest moon of Quibb.</information>")
  assert qa_env.step("<answer>zorblax</answer>").reward == 1.0
  _, info = qa_env.reset(Task("test", 0))
  assert (info["task_type"], info["question_id"]) == ("nq", "nq_1")  # defaults: data_source = name, id = name_line
  _, info = qa_env.reset(Task("test", 1))
  assert (info["task_type"], info["question_id"]) == ("hotpotqa", "hotpotqa_1")
  assert qa_env.step("<answer>9</answer>").info["won"]


def test_missing_split_names_the_expected_files(search_r1_dir):
  qa_env = SearchQAEnv(datasets="hotpotqa", data_dir=search_r1_dir)
  with pytest.raises(EnvError, match=r"no 'train' questions for dataset 'hotpotqa'.*train\.jsonl; splits present: \['dev'\]"):
    qa_env.reset(Task("train", 0))
  with pytest.raises(EnvError, match=r"no 'test' questions for dataset 'popqa'.*test\.jsonl or .*dev\.jsonl"):
    SearchQAEnv(datasets=["popqa"], data_dir=search_r1_dir).reset(Task("test", 0))
  with pytest.raises(EnvError, match=r"no datasets for split 'dev'"):
    SearchQAEnv(datasets={"train": ["nq"]}, data_dir=search_r1_dir).reset(Task("dev", 0))


def test_bad_question_line_names_file_line_and_field(search_r1_dir):
  path = search_r1_dir / "nq" / "train.jsonl"
  path.write_text(path.read_text() + '{"question": "q?", "golden_answers": "not a list"}\n')
  with pytest.raises(EnvError, match=r"train\.jsonl:2: 'golden_answers' must be a non-empty list"):
    SearchQAEnv(datasets="nq", data_dir=search_r1_dir).reset(Task("train", 0))


def test_bad_corpus_line_is_named(tmp_path):
  (tmp_path / "corpus.jsonl").write_text('{"id": "0", "text": "no contents field"}\n')
  with pytest.raises(EnvError, match=r"corpus\.jsonl:1: expected"):
    load_corpus(tmp_path / "corpus.jsonl")


def test_tfds_offline_gives_a_clear_error(tmp_path):
  qa_env = SearchQAEnv(datasets="tfds:natural_questions_open", tfds_data_dir=str(tmp_path))
  with pytest.raises(EnvError, match=r"cannot load 'natural_questions_open' split 'validation'.*nq/test\.jsonl"):
    qa_env.reset(Task("test", 0))


def test_unsupported_tfds_dataset_is_named():
  with pytest.raises(EnvError, match="unsupported tfds dataset 'squad'"):
    SearchQAEnv(datasets="tfds:squad").reset(Task("train", 0))
