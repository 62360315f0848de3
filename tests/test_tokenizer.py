"""Tokenizer: in-process BPE, ChatML rendering, save/load through transformers, SmolLM2 from GGUF, stop tokens."""
from __future__ import annotations

import pathlib

import pytest
import transformers
from etils import epath

from paw_jax.models import assets
from paw_jax.models.tokenizer import Tokenizer

CORPUS = [f"You are in room {i}. You see a {obj} on the {place}. > take {obj} from {place}"
          for i, (obj, place) in enumerate([("apple", "table"), ("knife", "counter"), ("mug", "shelf"),
                                            ("key", "desk"), ("book", "bed")] * 40)]
UNICODE_TEXTS = ["héllo wörld", "日本語のテキスト", "emoji 🍎🧪 mix", "  leading spaces\n\ttabs\r\n", "Ω≈ç√∫",
                 "<|im_start|>user\nhi<|im_end|>"]
MESSAGES = [{"role": "system", "content": "You play a text game."},
            {"role": "user", "content": "You see a mug."},
            {"role": "assistant", "content": "<action>take mug</action>"},
            {"role": "user", "content": "Taken."}]
CHATML = ("<|im_start|>system\nYou play a text game.<|im_end|>\n"
          "<|im_start|>user\nYou see a mug.<|im_end|>\n"
          "<|im_start|>assistant\n<action>take mug</action><|im_end|>\n"
          "<|im_start|>user\nTaken.<|im_end|>\n")


@pytest.fixture(scope="module")
def bpe() -> Tokenizer:
  return Tokenizer.train_bpe(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def smollm2() -> Tokenizer:
  return Tokenizer.load("smollm2")


@pytest.fixture(scope="module")
def smollm2_hf() -> transformers.PreTrainedTokenizerBase:
  path = assets.smollm2_gguf_path()
  return transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def test_bpe_vocabulary_and_special_ids(bpe):
  assert bpe.vocab_size == 320
  assert bpe.hf.convert_ids_to_tokens([0, 1, 2, 3]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
  assert (bpe.eos_token_id, bpe.pad_token_id, bpe.stop_token_ids) == (2, 3, (2, 0))
  assert bpe.encode("<|im_end|><|endoftext|>") == [2, 0]
  # A character never seen in training falls back to its UTF-8 bytes (U+03A9 = CE A9, GPT-2 byte chars Î ©).
  assert bpe.hf.convert_ids_to_tokens(bpe.encode("Ω")) == ["Î", "©"]
  assert bpe.hf.convert_ids_to_tokens(bpe.encode(" You take")) == ["ĠYou", "Ġtake"]  # frequent words are merged


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_bpe_round_trip(bpe, text):
  assert bpe.decode(bpe.encode(text)) == text


def test_token_bytes_concatenate_to_utf8(bpe):
  token_bytes = bpe.token_bytes()
  assert len(token_bytes) == bpe.vocab_size and token_bytes[2] == b"<|im_end|>"
  assert token_bytes[bpe.encode("Ω")[0]] == b"\xce"  # half of a character: raw bytes, not U+FFFD
  for text in UNICODE_TEXTS:
    assert b"".join(token_bytes[i] for i in bpe.encode(text)) == text.encode("utf-8")


def test_decode_skips_special_tokens(bpe):
  assert bpe.decode(bpe.encode("<|im_start|>user\nhi<|im_end|><pad>"), skip_special_tokens=True) == "user\nhi"


def test_chatml_rendering(bpe):
  assert bpe.apply_chat_template(MESSAGES, add_generation_prompt=False) == CHATML
  assert bpe.apply_chat_template(MESSAGES) == CHATML + "<|im_start|>assistant\n"
  ids = bpe.encode_chat(MESSAGES)
  assert ids == bpe.encode(CHATML + "<|im_start|>assistant\n")
  assert ids.count(1) == 5 and ids.count(2) == 4 and ids[0] == 1  # 5 turns opened, 4 closed


def test_custom_chat_template():
  tok = Tokenizer.train_bpe(CORPUS[:20], 300, chat_template="{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
  assert tok.apply_chat_template(MESSAGES[:2]) == "[You play a text game.][You see a mug.]"


@pytest.mark.parametrize("as_path", [pathlib.Path, epath.Path])  # epath: the workdir's type (gs://... too)
def test_saved_directory_loads_identically_in_transformers(bpe, tmp_path, as_path):
  tmp_path = as_path(tmp_path)
  bpe.save(tmp_path)
  hf = transformers.AutoTokenizer.from_pretrained(tmp_path)
  for text in UNICODE_TEXTS + CORPUS[:3]:
    assert hf.encode(text, add_special_tokens=False) == bpe.encode(text)
  assert hf.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == bpe.apply_chat_template(
      MESSAGES)
  assert (hf.eos_token_id, hf.pad_token_id, len(hf)) == (2, 3, 320)
  reloaded = Tokenizer.load(tmp_path)
  assert reloaded.encode_chat(MESSAGES) == bpe.encode_chat(MESSAGES)
  assert reloaded.stop_token_ids == bpe.stop_token_ids


def test_smollm2_encode_matches_transformers(smollm2, smollm2_hf):
  assert smollm2.encode("Hello world") == [19556, 905]
  assert smollm2.hf.convert_ids_to_tokens([19556, 905]) == ["Hello", "Ġworld"]
  prompt = "You are in a kitchen. > take apple from table\n héllo 🌍 日本 <|im_end|>"
  ids = smollm2.encode(prompt)
  assert ids == smollm2_hf.encode(prompt, add_special_tokens=False)
  assert smollm2.encode(prompt, add_special_tokens=True) == smollm2_hf.encode(prompt, add_special_tokens=True)
  assert ids[-1] == 2 and smollm2.decode(ids) == prompt
  token_bytes = smollm2.token_bytes()
  assert b"".join(token_bytes[i] for i in ids) == prompt.encode("utf-8")
  assert (token_bytes[19556], token_bytes[905]) == (b"Hello", b" world")


def test_smollm2_chat_template(smollm2, smollm2_hf):
  messages = [{"role": "user", "content": "Go north."}]
  default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
  assert smollm2.apply_chat_template(messages) == (
      f"<|im_start|>system\n{default_system}<|im_end|>\n"
      "<|im_start|>user\nGo north.<|im_end|>\n<|im_start|>assistant\n")
  assert smollm2.apply_chat_template(MESSAGES, add_generation_prompt=False) == CHATML
  expected_ids = smollm2_hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                return_dict=False)
  assert smollm2.encode_chat(messages) == expected_ids
  assert expected_ids[:3] == [1, 9690, 198] and expected_ids[-4:] == [1, 520, 9531, 198]  # system, assistant


def test_smollm2_special_ids(smollm2, smollm2_hf):
  assert smollm2.hf.convert_ids_to_tokens([0, 1, 2]) == ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  assert (smollm2.eos_token_id, smollm2.pad_token_id, smollm2.stop_token_ids) == (2, 2, (2, 0))
  assert smollm2.vocab_size == len(smollm2_hf) == 49152


def test_minilm_wordpiece_without_chat_template():
  tok = Tokenizer.load("minilm")
  assert tok.encode("hello world", add_special_tokens=True) == [101, 7592, 2088, 102]  # [CLS] hello world [SEP]
  with pytest.raises(ValueError, match="has no chat_template"):
    tok.apply_chat_template(MESSAGES)
  with pytest.raises(ValueError, match="has no eos_token"):
    _ = tok.eos_token_id
  with pytest.raises(ValueError, match="needs a byte-level BPE vocabulary"):
    tok.token_bytes()


def test_bad_input(bpe, tmp_path):
  with pytest.raises(ValueError, match="vocab_size=100"):
    Tokenizer.train_bpe(CORPUS, vocab_size=100)
  with pytest.raises(ValueError, match="at least one training text"):
    Tokenizer.train_bpe([], vocab_size=300)
  with pytest.raises(ValueError, match="expected a .gguf file or a directory"):
    Tokenizer.load(tmp_path)
  with pytest.raises(FileNotFoundError, match="neither an alias"):
    Tokenizer.load(tmp_path / "missing")
  with pytest.raises(ValueError, match=r"messages\[1\] must be a dict"):
    bpe.apply_chat_template([MESSAGES[0], {"role": "user"}])
