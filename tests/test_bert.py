"""The Flax BERT encoder equals transformers' BertModel (torch CPU) on all-MiniLM-L6-v2's real weights: the hidden
state of every real token of a padded batch, and a malformed config is refused in one line."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from paw_jax.models import assets
from paw_jax.models.bert import BertConfig, load_bert

TEXTS = ["Nothing happens.", "You open the fridge. It contains an apple and a mug.", "go to countertop 1"]


def test_hidden_states_equal_transformers_bert_on_real_tokens():
  tokenizer = transformers.AutoTokenizer.from_pretrained(assets.minilm_dir())
  batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
  with torch.no_grad():
    expected_BxTxD = transformers.BertModel.from_pretrained(assets.minilm_dir()).eval()(**batch).last_hidden_state
  mask_BxT = batch["attention_mask"].numpy().astype(bool)
  hidden_BxTxD = load_bert(assets.minilm_dir())(jnp.asarray(batch["input_ids"].numpy()), jnp.asarray(mask_BxT))
  np.testing.assert_allclose(np.asarray(hidden_BxTxD)[mask_BxT], expected_BxTxD.numpy()[mask_BxT], atol=1e-5)


def test_a_config_it_does_not_implement_is_refused():
  hf = json.loads((assets.minilm_dir() / "config.json").read_text())
  with pytest.raises(ValueError, match=r"^hidden_act 'relu' is not supported \(only the exact-erf 'gelu'\)$"):
    BertConfig.from_hf({**hf, "hidden_act": "relu"})
  with pytest.raises(ValueError, match=r"^model_type 'qwen3' is not a BERT encoder"):
    BertConfig.from_hf({**hf, "model_type": "qwen3"})
