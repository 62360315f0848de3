"""Embedders for RWML's reward: MiniLM equals sentence-transformers' recipe on transformers' BertModel, the decoder
embedder equals last-token pooling of transformers' Qwen3, and bad names and paths fail in one line."""
import numpy as np
import pytest
import tokenizers
import torch
import transformers

from hf_models import make_hf_model
from paw_jax.models import assets
from paw_jax.algos.rewards import cosine_distance
from paw_jax.models.embedders import DecoderEmbedder, MiniLMEmbedder, load_embedder
from paw_jax.models.tokenizer import ENDOFTEXT, PAD

SENTENCES = ["Hi.", "You open the fridge. It contains an apple.", "The fridge is open; inside is an apple.",
             "You are in the bathroom. There is a towel.", "Nothing happens.",
             "You arrive at countertop 1. On the countertop 1, you see a butterknife 2, a cellphone 1, a creditcard 1, "
             "a knife 1, a lettuce 1, a saltshaker 2, a saltshaker 1, a spatula 1, and a tomato 1.",
             "You pick up the mug 3 from the coffeemachine 1.", "Émile's café – naïve façade, 42 €!",
             "take apple from fridge 1 " * 60]  # past MiniLM's 256 tokens: truncated


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
  return MiniLMEmbedder()


def test_minilm_equals_transformers_bert_with_mean_pooling(minilm):
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(assets.minilm_dir())
  batch = hf_tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
  assert minilm.tokenize(SENTENCES) == [row[row != 0].tolist() for row in batch["input_ids"]]
  model = transformers.BertModel.from_pretrained(assets.minilm_dir()).eval()
  with torch.no_grad():
    hidden_NxTxD = model(**batch).last_hidden_state
  mask_NxTx1 = batch["attention_mask"][..., None].float()
  expected_NxD = torch.nn.functional.normalize((hidden_NxTxD * mask_NxTx1).sum(1) / mask_NxTx1.sum(1)).numpy()
  embeddings_NxD = minilm.embed(SENTENCES)
  assert embeddings_NxD.dtype == np.float32 and embeddings_NxD.shape == (len(SENTENCES), 384)
  np.testing.assert_allclose(embeddings_NxD, expected_NxD, atol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(embeddings_NxD, axis=1), 1.0, atol=1e-6)


def test_minilm_puts_the_same_state_closer_than_another_room(minilm):
  fridge, same, bathroom = minilm.embed(SENTENCES[1:4])
  assert cosine_distance(fridge[None], same[None])[0] < cosine_distance(fridge[None], bathroom[None])[0]


@pytest.fixture(scope="module")
def qwen3_dir(tmp_path_factory):
  """A random tiny Qwen3 causal LM saved by transformers, with a whitespace-split BPE that fits its 97 ids."""
  path = tmp_path_factory.mktemp("qwen3")
  raw = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
  raw.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
  raw.train_from_iterator(SENTENCES + ["Instruct: Query:"], tokenizers.trainers.BpeTrainer(
      vocab_size=97, special_tokens=[ENDOFTEXT, PAD, "<unk>"], show_progress=False))
  assert raw.get_vocab_size() <= 97
  transformers.PreTrainedTokenizerFast(tokenizer_object=raw, eos_token=ENDOFTEXT, pad_token=PAD).save_pretrained(path)
  make_hf_model("qwen3").save_pretrained(path)
  return path


def test_decoder_embedder_equals_last_token_of_transformers_qwen3(qwen3_dir):
  embedder = DecoderEmbedder(qwen3_dir, instruction="Find the state")
  hf_tokenizer = transformers.AutoTokenizer.from_pretrained(qwen3_dir)
  end_id = hf_tokenizer.convert_tokens_to_ids(ENDOFTEXT)
  texts = SENTENCES[:6]
  ids = embedder.tokenize(texts)
  assert ids == [hf_tokenizer.encode(text) + [end_id] for text in texts]
  assert embedder.tokenize(texts[1:2], query=True) == [
      hf_tokenizer.encode("Instruct: Find the state\nQuery:" + texts[1]) + [end_id]]
  backbone = make_hf_model("qwen3").model.eval()
  with torch.no_grad():  # one unpadded row at a time: the reference knows nothing of our padding
    expected_NxD = np.stack([torch.nn.functional.normalize(
        backbone(torch.tensor([row])).last_hidden_state[0, -1], dim=0).numpy() for row in ids])
  embeddings_NxD = embedder.embed(texts)
  np.testing.assert_allclose(embeddings_NxD, expected_NxD, atol=1e-5)
  np.testing.assert_allclose(embedder.embed(texts[:1]), embeddings_NxD[:1], atol=1e-6)  # alone: no left padding
  assert cosine_distance(embedder.embed(texts[1:2], query=True), embeddings_NxD[1:2])[0] > 1e-3


def test_a_bare_backbone_checkpoint_loads_as_qwen3_embedding_ships_it(qwen3_dir, tmp_path):
  # Qwen3-Embedding's safetensors hold `layers.0...` (no `model.` prefix) and no lm_head, even when untied.
  make_hf_model("qwen3").model.save_pretrained(tmp_path)
  transformers.AutoTokenizer.from_pretrained(qwen3_dir).save_pretrained(tmp_path)
  np.testing.assert_array_equal(DecoderEmbedder(tmp_path).embed(SENTENCES[:3]),
                                DecoderEmbedder(qwen3_dir).embed(SENTENCES[:3]))


def test_decoder_embedder_truncates_before_the_end_token(qwen3_dir):
  embedder = DecoderEmbedder(qwen3_dir, max_length=8)
  (ids,) = embedder.tokenize([SENTENCES[-1]])
  assert len(ids) == 8 and ids[-1] == embedder.end_id
  assert DecoderEmbedder(qwen3_dir, end_token=None).tokenize(["Hi."])[0][-1] != embedder.end_id


def test_unknown_names_and_bad_paths_fail_in_one_line(tmp_path, qwen3_dir):
  with pytest.raises(ValueError, match=r"^unknown embedder 'bert'; valid names: minilm, qwen3_embedding$"):
    load_embedder("bert")
  for name, path in [("minilm", tmp_path), ("minilm", qwen3_dir), ("qwen3_embedding", tmp_path),
                     ("qwen3_embedding", assets.minilm_dir())]:
    with pytest.raises(ValueError) as error:
      load_embedder(name, path)
    assert f"'{path}'" in str(error.value) and "\n" not in str(error.value)
  with pytest.raises(ValueError, match="end_token '<missing>' is not in the vocabulary"):
    DecoderEmbedder(qwen3_dir, end_token="<missing>")
