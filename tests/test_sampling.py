"""Sampler against references: uncached greedy decoding, full-forward log-probs, known distributions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_models import make_hf_model
from paw_jax.models import hf_io
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import positions_from_mask
from paw_jax.sampling import Sampler, SamplingConfig, generate, sample_logits, stop_string_table

VOCAB = 97
TOKEN_BYTES = [bytes([97 + i % 26]) * (1 + i // 26) for i in range(VOCAB)]  # 'a'..'z', 'aa'..'zz', ...
PROMPTS = [[5, 17, 3, 44, 60, 2, 9, 11], [7, 1], [30, 31, 32, 33, 34]]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen3")
  make_hf_model("qwen3").save_pretrained(path)
  return hf_io.load_model(path)


def make_sampler(model, stop_strings=(), eos_ids=(), max_prompt_len=16):
  return Sampler(nnx.graphdef(model), TOKEN_BYTES, eos_ids=list(eos_ids) or [VOCAB + 1], pad_id=0,
                 stop_strings=stop_strings, max_prompt_len=max_prompt_len)


WIDTH = 32


@jax.jit
def _forward(params, tokens_1xW):
  mask = jnp.ones(tokens_1xW.shape, bool)
  return nnx.merge(_GRAPHDEF[0], params)(tokens_1xW, positions_from_mask(mask), mask)[0][0]


_GRAPHDEF = []


def full_logits(model, row):
  """Uncached reference: one full forward pass over the row (right-padded to a fixed width, which causal
  attention makes irrelevant to the first len(row) positions); returns logits [len(row), V]."""
  if not _GRAPHDEF:
    _GRAPHDEF.append(nnx.graphdef(model))
  tokens = np.zeros((1, WIDTH), np.int32)
  tokens[0, :len(row)] = row
  return np.asarray(_forward(nnx.state(model), jnp.asarray(tokens)))[:len(row)]


def test_cached_greedy_equals_uncached_greedy(model):
  sampler = make_sampler(model)
  got = sampler(nnx.state(model), PROMPTS, jax.random.key(0), SamplingConfig(temperature=0, max_new_tokens=10))
  for prompt, result in zip(PROMPTS, got):
    row = list(prompt)
    for _ in range(10):  # greedy by repeated full forward passes, no cache
      row.append(int(np.argmax(full_logits(model, row)[-1])))
    assert result["tokens"].tolist() == row[len(prompt):]


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_sampler_logprobs_and_entropy_equal_full_forward(model, temperature):
  sampler = make_sampler(model)
  got = sampler(nnx.state(model), PROMPTS, jax.random.key(1),
                SamplingConfig(temperature=temperature, max_new_tokens=12))
  for prompt, result in zip(PROMPTS, got):
    sequence = list(prompt) + result["tokens"].tolist()
    logits = full_logits(model, sequence)[len(prompt) - 1:-1] / temperature
    logp = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
    expected_logprobs = np.take_along_axis(np.asarray(logp), result["tokens"][:, None], axis=-1)[:, 0]
    expected_entropy = -np.sum(np.exp(logp) * logp, axis=-1)
    np.testing.assert_allclose(result["logprobs"], expected_logprobs, atol=1e-5)
    np.testing.assert_allclose(result["entropy"], expected_entropy, atol=1e-5)
    assert result["entropy"].min() > 0.1  # non-trivial distributions


def test_top_k_one_equals_greedy(model):
  sampler = make_sampler(model)
  greedy = sampler(nnx.state(model), PROMPTS, jax.random.key(2), SamplingConfig(temperature=0, max_new_tokens=8))
  top1 = sampler(nnx.state(model), PROMPTS, jax.random.key(3),
                 SamplingConfig(temperature=1.5, top_k=1, max_new_tokens=8))
  for a, b in zip(greedy, top1):
    assert a["tokens"].tolist() == b["tokens"].tolist()


def test_a_key_per_prompt_and_fixed_rows_make_a_completion_independent_of_its_batch(model):
  sampler, cfg = make_sampler(model), SamplingConfig(temperature=1.0, max_new_tokens=12)
  keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(5), i))(jnp.arange(len(PROMPTS)))
  together = sampler(nnx.state(model), PROMPTS, keys, cfg, rows=4)
  for i, prompt in enumerate(PROMPTS):  # alone, with its own key, in a batch of the same size
    alone = sampler(nnx.state(model), [prompt], keys[i:i + 1], cfg, rows=4)[0]
    np.testing.assert_array_equal(alone["tokens"], together[i]["tokens"])
    np.testing.assert_array_equal(alone["logprobs"], together[i]["logprobs"])
  one_key = sampler(nnx.state(model), PROMPTS, jax.random.key(5), cfg)  # one key: rows share the call's stream
  assert any(a["tokens"].tolist() != b["tokens"].tolist() for a, b in zip(one_key, together))
  in_calls_of_two = sampler(nnx.state(model), PROMPTS, keys, cfg, rows=2)  # two calls of 2 rows
  alone = [sampler(nnx.state(model), [p], keys[i:i + 1], cfg, rows=2)[0] for i, p in enumerate(PROMPTS)]
  for a, b in zip(in_calls_of_two, alone):
    np.testing.assert_array_equal(a["logprobs"], b["logprobs"])
  with pytest.raises(ValueError, match="one key or one per prompt"):
    sampler(nnx.state(model), PROMPTS, keys[:2], cfg)


def test_top_p_never_samples_outside_the_nucleus():
  probs = np.array([0.5, 0.3, 0.15, 0.05])  # top_p = 0.7 -> nucleus {0, 1}: 0.5 < 0.7, 0.8 >= 0.7
  logits = jnp.log(jnp.asarray(np.tile(probs, (4000, 1)), jnp.float32))
  draws = np.asarray(sample_logits(jax.random.key(0), logits, SamplingConfig(temperature=1.0, top_p=0.7)))
  assert set(np.unique(draws)) == {0, 1}
  assert abs((draws == 0).mean() - 0.5 / 0.8) < 0.03  # renormalised within the nucleus
  draws_k2 = np.asarray(sample_logits(jax.random.key(1), logits, SamplingConfig(temperature=1.0, top_k=3)))
  assert set(np.unique(draws_k2)) == {0, 1, 2}


def test_stop_string_table_matches_across_token_boundaries():
  token_bytes = [b"<", b"/act", b"ion>", b"x", b"</action>", b"ion"]
  table = stop_string_table(token_bytes, ["</action>"])
  stopped = table.shape[0] - 1

  def run(tokens):
    state = 0
    for t in tokens:
      state = table[state, t]
    return state

  assert run([0, 1, 2]) == stopped  # "<" "/act" "ion>"
  assert run([4]) == stopped
  assert run([0, 1, 3, 2]) != stopped  # "</actxion>"
  assert run([3, 0, 0, 1, 2]) == stopped  # "x<</action>": restart after a failed prefix
  assert run([0, 1, 5]) != stopped
  assert table[stopped].tolist() == [stopped] * len(token_bytes)  # absorbing


def expected_truncation(tokens, eos=None, stop=None):
  """Host reference: cut after the first EOS token or the first token whose text so far contains `stop`."""
  text = b""
  for i, token in enumerate(tokens):
    text += TOKEN_BYTES[token]
    if token == eos or (stop is not None and stop in text):
      return tokens[:i + 1]
  return tokens


def test_rows_stop_at_eos_and_stop_strings(model):
  cfg = SamplingConfig(temperature=0, max_new_tokens=12)
  free = make_sampler(model)(nnx.state(model), PROMPTS, jax.random.key(4), cfg)
  third = int(free[0]["tokens"][2])  # EOS: row 0 stops at its third token, other rows wherever it appears
  stop = b"".join(TOKEN_BYTES[int(t)] for t in free[1]["tokens"][:2])  # a stop string spanning row 1's first two
  cases = [(make_sampler(model, eos_ids=[third]), dict(eos=third)),
           (make_sampler(model, stop_strings=[stop.decode()]), dict(stop=stop))]
  for sampler, rule in cases:
    got = sampler(nnx.state(model), PROMPTS, jax.random.key(4), cfg)
    for result, free_result in zip(got, free):
      assert result["tokens"].tolist() == expected_truncation(free_result["tokens"].tolist(), **rule)
  assert len(got[1]["tokens"]) <= 2 < len(free[1]["tokens"])  # row 1 stopped early


def test_same_bucket_does_not_recompile(model):
  sampler = make_sampler(model, max_prompt_len=64)
  cfg = SamplingConfig(temperature=1.0, max_new_tokens=4)
  sampler(nnx.state(model), [[1, 2, 3]], jax.random.key(0), cfg)
  before = generate._cache_size()
  sampler(nnx.state(model), [[4, 5, 6, 7, 8, 9]], jax.random.key(1), cfg)
  sampler(nnx.state(model), [[4], [2, 2]], jax.random.key(2), cfg)  # batch 2 bucket: one more compile
  assert generate._cache_size() == before + 1


def test_bad_prompts_raise_clear_errors(model):
  sampler = make_sampler(model, max_prompt_len=16)
  with pytest.raises(ValueError, match="prompt lengths must be in"):
    sampler(nnx.state(model), [list(range(20))], jax.random.key(0), SamplingConfig())
  with pytest.raises(ValueError, match="top_p"):
    SamplingConfig(top_p=0.0)


def test_from_tokenizer_takes_vocabulary_stop_and_pad_tokens_from_the_tokenizer(model):
  tokenizer = Tokenizer.train_bpe(["<action>go north</action>"] * 8, vocab_size=300)
  vocab_size = tokenizer.vocab_size + 8  # a model embedding padded past the tokenizer's ids
  sampler = Sampler.from_tokenizer(nnx.graphdef(model), tokenizer, vocab_size=vocab_size, max_prompt_len=64,
                                   stop_strings=["</action>"])
  assert list(sampler.token_bytes) == tokenizer.token_bytes()
  assert (sampler.eos_ids, sampler.pad_id) == (tokenizer.stop_token_ids, tokenizer.pad_token_id)
  assert (sampler.stop_strings, sampler.max_prompt_len, sampler.vocab_size) == (("</action>",), 64, vocab_size)
