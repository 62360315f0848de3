"""Tokenizer: a thin wrapper over a transformers fast tokenizer, plus in-process BPE training and stop tokens.

Loaded from a checkpoint directory (tokenizer.json + tokenizer_config.json), from a GGUF's embedded vocabulary and
chat template, or an alias ("smollm2"). `train_bpe` builds the byte-level BPE with a ChatML template that the small
from-scratch models use; `save` writes a directory that `transformers.AutoTokenizer` loads back identically.
"""
from __future__ import annotations

import functools
import os
import tempfile
from typing import Sequence

import tokenizers
import transformers
from etils import epath

from paw_jax.models.assets import resolve_model_path

ENDOFTEXT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"
BPE_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, PAD)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Tokens that end a turn or a document in the chat formats we meet (ChatML, Llama 3, Gemma); generation stops there.
END_OF_TURN_TOKENS = (IM_END, ENDOFTEXT, "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>")


def _byte_level_char_to_byte() -> dict[str, int]:
  """Inverse of GPT-2's bytes_to_unicode (the ByteLevel pre-tokenizer's map): printable bytes stand for
  themselves, the other 68 bytes for chr(256), chr(257), ... in byte order."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  others = [b for b in range(256) if b not in printable]
  return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


BYTE_LEVEL_CHAR_TO_BYTE = _byte_level_char_to_byte()


class Tokenizer:
  """Text <-> token ids, chat rendering and stop tokens over a `transformers` fast tokenizer."""

  def __init__(self, hf_tokenizer: transformers.PreTrainedTokenizerBase):
    self.hf = hf_tokenizer

  @classmethod
  def load(cls, name_or_path: str | os.PathLike) -> Tokenizer:
    """From an alias ("smollm2"), a `.gguf` file or a directory with tokenizer.json (local or gs://...)."""
    if "://" in str(name_or_path):  # transformers reads local files: a copy of the directory
      with tempfile.TemporaryDirectory() as local:
        _copy_files(name_or_path, local)
        return cls.load(local)
    path = resolve_model_path(str(name_or_path))
    if path.is_file() and path.suffix == ".gguf":
      return cls(transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    if path.is_dir() and (path / "tokenizer.json").is_file():
      return cls(transformers.AutoTokenizer.from_pretrained(path))
    raise ValueError(f"cannot load a tokenizer from {path}: expected a .gguf file or a directory "
                     "containing tokenizer.json")

  @classmethod
  def train_bpe(cls, texts: Sequence[str], vocab_size: int, chat_template: str | None = None) -> Tokenizer:
    """Byte-level BPE trained on `texts` in-process; ChatML special tokens and template (eos = <|im_end|>)."""
    min_size = len(tokenizers.pre_tokenizers.ByteLevel.alphabet()) + len(BPE_SPECIAL_TOKENS)
    if vocab_size < min_size:
      raise ValueError(f"vocab_size={vocab_size} is below the byte alphabet plus special tokens ({min_size})")
    if not texts:
      raise ValueError("train_bpe needs at least one training text")
    raw = tokenizers.Tokenizer(tokenizers.models.BPE())
    raw.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(BPE_SPECIAL_TOKENS), show_progress=False,
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())  # every byte encodable, whatever `texts`
    raw.train_from_iterator(texts, trainer)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_object=raw, eos_token=IM_END, pad_token=PAD,
        chat_template=chat_template or CHATML_TEMPLATE)
    return cls(hf)

  def save(self, directory: str | os.PathLike) -> epath.Path:
    """Writes tokenizer.json, tokenizer_config.json and the chat template (to any filesystem etils.epath knows);
    AutoTokenizer reads the directory."""
    directory = epath.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as local:  # transformers writes local files
      self.hf.save_pretrained(local)
      _copy_files(local, directory)
    return directory

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`; special-token strings in `text` (e.g. <|im_end|>) map to their ids."""
    return self.hf.encode(text, add_special_tokens=add_special_tokens)

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    """Text of `ids`, exact (no clean-up of spaces), so decode(encode(text)) == text."""
    return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)

  def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The chat rendered by the tokenizer's template (as transformers' apply_chat_template with tokenize=False)."""
    if not self.hf.chat_template:
      raise ValueError(f"tokenizer {self.hf.name_or_path!r} has no chat_template")
    for i, message in enumerate(messages):
      if not (isinstance(message, dict) and isinstance(message.get("role"), str)
              and isinstance(message.get("content"), str)):
        raise ValueError(f"messages[{i}] must be a dict with str 'role' and 'content', got {message!r}")
    return self.hf.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)

  def encode_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of the rendered chat (the template already holds every special token)."""
    return self.encode(self.apply_chat_template(messages, add_generation_prompt))

  def token_bytes(self) -> list[bytes]:
    """Per token id, the bytes it contributes to decode(..., skip_special_tokens=False); added tokens give their
    literal text. Exact across multi-byte characters split between tokens (what stop-string automata need)."""
    if not isinstance(self.hf.backend_tokenizer.decoder, tokenizers.decoders.ByteLevel):
      raise ValueError(f"token_bytes needs a byte-level BPE vocabulary; {self.hf.name_or_path!r} decodes with "
                       f"{type(self.hf.backend_tokenizer.decoder).__name__}")
    added = {i: token.content.encode() for i, token in self.hf.added_tokens_decoder.items()}
    tokens = self.hf.convert_ids_to_tokens(range(self.vocab_size))
    return [added[i] if i in added else bytes(BYTE_LEVEL_CHAR_TO_BYTE[c] for c in token)
            for i, token in enumerate(tokens)]

  @property
  def vocab_size(self) -> int:
    """Number of token ids, added tokens included (the embedding needs at least this many rows)."""
    return len(self.hf)

  @property
  def eos_token_id(self) -> int:
    if self.hf.eos_token_id is None:
      raise ValueError(f"tokenizer {self.hf.name_or_path!r} has no eos_token")
    return self.hf.eos_token_id

  @property
  def pad_token_id(self) -> int:
    """The vocabulary's pad token, else eos (padding is masked out, so any id works)."""
    return self.eos_token_id if self.hf.pad_token_id is None else self.hf.pad_token_id

  @functools.cached_property
  def stop_token_ids(self) -> tuple[int, ...]:
    """eos first, then every end-of-turn / end-of-text token the vocabulary has."""
    vocab = self.hf.get_vocab()
    ids = [self.eos_token_id] + [vocab[token] for token in END_OF_TURN_TOKENS if token in vocab]
    return tuple(dict.fromkeys(ids))


def _copy_files(source: str | os.PathLike, destination: str | os.PathLike) -> None:
  """The files of directory `source` into directory `destination`, either on any filesystem etils.epath knows."""
  for file in epath.Path(source).iterdir():
    (epath.Path(destination) / file.name).write_bytes(file.read_bytes())
