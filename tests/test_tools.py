"""paw_jax.tools.score and .generate on a tiny random HF checkpoint, against transformers on the same tokens."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from hf_models import make_hf_model
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.tools import generate, score

CORPUS = ["the cat sat on the mat", "a dog ran in the park", "go north, then take the key from the table",
          "open the door and look around the room"] * 4
TEXT = "the dog sat by the door, then ran north"
PROMPT = "where is the key?"
NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
  return Tokenizer.train_bpe(CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def hf_model(tokenizer) -> transformers.PreTrainedModel:
  """Tiny random Llama with one embedding row per token of `tokenizer`."""
  model = make_hf_model("llama3")
  # New rows drawn like the old ones (N(0, 0.2)); mean-resizing would make their logits nearly equal.
  model.resize_token_embeddings(tokenizer.vocab_size, mean_resizing=False)
  return model


@pytest.fixture(scope="module")
def checkpoint(hf_model, tokenizer, tmp_path_factory) -> pathlib.Path:
  """The model and its tokenizer in one directory, as transformers and Tokenizer.save write them."""
  path = tmp_path_factory.mktemp("tiny_llama")
  hf_model.save_pretrained(path)
  tokenizer.save(path)
  return path


def test_checkpoint_vocab_sizes_agree(hf_model, tokenizer, checkpoint):
  assert Tokenizer.load(checkpoint).vocab_size == tokenizer.vocab_size == hf_model.config.vocab_size
  assert hf_model.get_output_embeddings().weight.shape[0] == tokenizer.vocab_size > 260  # bytes + 4 specials + merges


def test_score_cli_writes_transformers_logprobs(hf_model, checkpoint, tmp_path):
  out = tmp_path / "scores.json"
  run = subprocess.run([sys.executable, "-m", "paw_jax.tools.score", "--model", str(checkpoint), "--text", TEXT,
                        "--out", str(out)], capture_output=True, text=True)
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith("wrote ")
  scores = json.loads(out.read_text())
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
  token_ids = hf_tokenizer.encode(TEXT, add_special_tokens=True)
  assert scores["token_ids"] == token_ids and len(token_ids) > 5
  assert "".join(scores["tokens"]) == TEXT
  with torch.no_grad():
    logp_TxV = torch.log_softmax(hf_model(torch.tensor([token_ids])).logits[0, :-1], dim=-1)
  expected = logp_TxV.gather(-1, torch.tensor(token_ids[1:])[:, None])[:, 0].numpy()
  assert scores["logprobs"][0] is None
  np.testing.assert_allclose(scores["logprobs"][1:], expected, rtol=0, atol=1e-4)


def test_generate_greedy_prints_transformers_greedy_text(hf_model, tokenizer, checkpoint, capsys):
  generate.main(["--model", str(checkpoint), "--prompt", PROMPT, "--temperature", "0",
                 "--max_new_tokens", str(NEW_TOKENS)])
  printed = capsys.readouterr().out
  prompt_ids = tokenizer.encode_chat([{"role": "user", "content": PROMPT}])
  prompt_1xT = torch.tensor([prompt_ids])
  with torch.no_grad():  # stops at the ids the tool stops at, so both end at the same token
    out_1xN = hf_model.generate(prompt_1xT, attention_mask=torch.ones_like(prompt_1xT), do_sample=False,
                                max_new_tokens=NEW_TOKENS, eos_token_id=list(tokenizer.stop_token_ids),
                                pad_token_id=tokenizer.pad_token_id)
  expected_ids = out_1xN[0, len(prompt_ids):].tolist()
  expected_text = tokenizer.decode(expected_ids, skip_special_tokens=True)
  assert expected_text.strip()  # a real comparison: the greedy text is not empty
  # Layout: "loaded ..." line, the generated text, a blank line, "[P prompt + N generated tokens ...]".
  loaded, rest = printed.split("\n", 1)
  text, stats = rest.rsplit("\n\n", 1)
  assert loaded.startswith("loaded llama")
  assert text == expected_text
  assert stats.startswith(f"[{len(prompt_ids)} prompt + {len(expected_ids)} generated tokens")


@pytest.mark.parametrize("tool, args", [(generate, ["--prompt", "hi"]), (score, ["--text", "hi", "--out", "x.json"])],
                         ids=["generate", "score"])
@pytest.mark.parametrize("bad_model", ["missing", "empty_dir"])
def test_bad_model_path_exits_with_one_line(tool, args, bad_model, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # where score's --out would land if it did not exit
  path = tmp_path / bad_model
  if bad_model == "empty_dir":
    path.mkdir()
  with pytest.raises(SystemExit) as exit_info:
    tool.main(["--model", str(path), *args])
  message = exit_info.value.code  # a str code: Python prints it to stderr and exits with status 1
  name = tool.__name__.rsplit(".", 1)[-1]
  assert isinstance(message, str) and "\n" not in message
  assert message.startswith(f"{name}: bad --model '{path}'")
  assert ("neither an alias" if bad_model == "missing" else "no config.json") in message
