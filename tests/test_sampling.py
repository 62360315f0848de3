"""Sampler against references: uncached greedy decoding, full-forward log-probs, known distributions, one device vs
an 8-device mesh, one prefill chunk vs several; the compiled decode loop against the copies it must not make."""
import re

import jax
import jax.extend.core
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_models import make_hf_model
from paw_jax import sharding
from paw_jax.models import hf_io
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import positions_from_mask
from paw_jax.sampling import Sampler, SamplingConfig, generate, sample_logits, stop_string_table

VOCAB = 97
TOKEN_BYTES = [bytes([97 + i % 26]) * (1 + i // 26) for i in range(VOCAB)]  # 'a'..'z', 'aa'..'zz', ...
PROMPTS = [[5, 17, 3, 44, 60, 2, 9, 11], [7, 1], [30, 31, 32, 33, 34]]
NO_STOP, NO_EOS = stop_string_table(TOKEN_BYTES, []), np.asarray([VOCAB + 1], np.int32)  # generate's own arguments


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  path = tmp_path_factory.mktemp("qwen3")  # 3 layers, 4 query heads, 2 KV heads of 24
  make_hf_model("qwen3").save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def model(checkpoint):
  return hf_io.load_model(checkpoint)


def make_sampler(model, stop_strings=(), eos_ids=(), max_prompt_len=16, **kwargs):
  return Sampler(nnx.graphdef(model), TOKEN_BYTES, eos_ids=list(eos_ids) or [VOCAB + 1], pad_id=0,
                 stop_strings=stop_strings, max_prompt_len=max_prompt_len, **kwargs)


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


def assert_same_samples(got, expected, atol):
  for a, b in zip(got, expected, strict=True):
    assert a["tokens"].tolist() == b["tokens"].tolist()
    np.testing.assert_allclose(a["logprobs"], b["logprobs"], atol=atol)
    np.testing.assert_allclose(a["entropy"], b["entropy"], atol=atol)


SAMPLING_CASES = [SamplingConfig(temperature=0, max_new_tokens=10), SamplingConfig(temperature=1.0, max_new_tokens=10)]


@pytest.mark.parametrize("cfg", SAMPLING_CASES, ids=["greedy", "seeded"])
def test_sharded_sampler_equals_one_device(model, checkpoint, cfg):
  """Rows over data x fsdp (2 x 2), KV heads over tensor (2): the same tokens, log-probs and entropies."""
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = hf_io.load_model(checkpoint, shardings=sharding.param_shardings(hf_io.abstract_model(model.cfg), mesh))
  prompts = PROMPTS + [[3, 3, 9], [60, 61]]  # 5 prompts: a batch bucket of 8, two rows per row shard
  expected = make_sampler(model)(nnx.state(model), prompts, jax.random.key(7), cfg)
  sampler = make_sampler(sharded, mesh=mesh)
  assert sampler.batch_buckets[:3] == (4, 8, 16)  # multiples of the 4 row shards
  assert_same_samples(sampler(nnx.state(sharded), prompts, jax.random.key(7), cfg), expected, atol=1e-5)


def test_sharded_sampler_splits_the_cache_rows_and_kv_heads(model, checkpoint):
  """Each device's KV cache (and any cache-sized temporary) is [L, B/4, S, K/2, H]: no replicated copy exists."""
  mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
  sharded = hf_io.load_model(checkpoint, shardings=sharding.param_shardings(hf_io.abstract_model(model.cfg), mesh))
  batch, prompt_len, steps = 8, 16, 4
  inputs = sharding.shard_rows({"prompt": np.ones((batch, prompt_len), np.int32),
                                "mask": np.ones((batch, prompt_len), bool)}, mesh)
  hlo = generate.lower(nnx.graphdef(sharded), nnx.state(sharded), inputs["prompt"], inputs["mask"], jax.random.key(0),
                       NO_STOP, NO_EOS, 0, SamplingConfig(max_new_tokens=steps), mesh).compile().as_text()
  cfg = model.cfg
  layers, slots, kv_heads, head_dim = cfg.num_layers, prompt_len + steps, cfg.num_kv_heads, cfg.head_dim
  assert f"f32[{layers},{batch // 4},{slots},{kv_heads // 2},{head_dim}]" in hlo
  assert f"f32[{layers},{batch},{slots},{kv_heads},{head_dim}]" not in hlo
  assert f"f32[{layers},{batch // 4},{slots},{kv_heads},{head_dim}]" not in hlo


@pytest.mark.parametrize("cfg", SAMPLING_CASES, ids=["greedy", "seeded"])
def test_chunked_prefill_equals_one_chunk(model, cfg):
  """Prompts of a 16-token bucket prefilled 4 tokens at a time give what one 16-token prefill gives."""
  one_chunk = make_sampler(model, prefill_chunk=16)
  chunked = make_sampler(model, prefill_chunk=4)
  assert one_chunk.length_buckets == chunked.length_buckets == (16,)
  expected = one_chunk(nnx.state(model), PROMPTS, jax.random.key(5), cfg)
  assert_same_samples(chunked(nnx.state(model), PROMPTS, jax.random.key(5), cfg), expected, atol=1e-5)


def test_length_buckets_are_multiples_of_the_prefill_chunk(model):
  assert make_sampler(model, max_prompt_len=100, prefill_chunk=32).length_buckets == (64, 128)
  assert make_sampler(model, max_prompt_len=300, prefill_chunk=128).length_buckets == (64, 128, 256, 384)


def _loop_bodies(hlo: str) -> dict[str, str]:
  """Optimized HLO text: every computation a while loop runs per iteration (bodies and what they call)."""
  computations = dict(re.findall(r"^(?:ENTRY )?%([\w.-]+) .*?\{\n(.*?)^\}", hlo, re.S | re.M))
  callees = {name: set(re.findall(r"(?:calls|body|condition|to_apply)=%?([\w.-]+)", text))
             for name, text in computations.items()}
  pending = [body for text in computations.values() for body in re.findall(r"body=%?([\w.-]+)", text)]
  reached = set()
  while pending:
    name = pending.pop()
    if name not in reached:
      reached.add(name)
      pending += callees[name]
  return {name: computations[name] for name in reached}


def test_decode_loop_updates_the_cache_in_place(model):
  """In the compiled program, no loop iteration creates a cache-sized buffer (a copy, a zero fill, a rebuilt stack):
  the only cache-sized results inside loops are dynamic-update-slices of the loop-carried cache."""
  batch, prompt_len, steps = 4, 16, 6
  hlo = generate.lower(nnx.graphdef(model), nnx.state(model), np.ones((batch, prompt_len), np.int32),
                       np.ones((batch, prompt_len), bool), jax.random.key(0), NO_STOP, NO_EOS, 0,
                       SamplingConfig(max_new_tokens=steps)).compile().as_text()
  cfg = model.cfg
  cache_shape = f"f32[{cfg.num_layers},{batch},{prompt_len + steps},{cfg.num_kv_heads},{cfg.head_dim}]"
  bodies = _loop_bodies(hlo)
  assert len(bodies) > 3  # the decode loop, the prefill loop, their layer loops
  made = []
  for name, text in bodies.items():
    for line in text.splitlines():
      result = re.match(r"\s*(?:ROOT )?%\S+ = (\S+?)\{[^}]*\} (\S+?)\(", line)
      if result and result.group(1) == cache_shape and result.group(2) not in ("parameter", "get-tuple-element",
                                                                                  "bitcast", "while"):
        made.append((name, result.group(2), line.strip()))
  dus = [m for m in made if m[1] == "dynamic-update-slice"]
  fusions = [m for m in made if m[1] == "fusion"]
  assert not [m for m in made if m[1] not in ("dynamic-update-slice", "fusion")], made
  for _, _, line in fusions:  # a fusion is in place when its root is a dynamic-update-slice (of the carried cache)
    fused = re.search(r"calls=%?([\w.-]+)", line).group(1)
    assert re.search(r"ROOT %\S+ = \S+ dynamic-update-slice\(", bodies[fused]), line
  assert len(dus) + len(fusions) >= 2  # keys and values are written


def _eqns(jaxpr, in_loop=False):
  """Every eqn of a jaxpr and of its nested jaxprs, with whether it runs inside a while loop."""
  for eqn in jaxpr.eqns:
    yield eqn, in_loop
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from _eqns(sub, in_loop or eqn.primitive.name == "while")


def _is_weight_cast(eqn, weight_shapes) -> bool:
  return (eqn.primitive.name == "convert_element_type" and eqn.invars[0].aval.dtype == jnp.float32
          and eqn.outvars[0].aval.dtype == jnp.bfloat16 and tuple(eqn.invars[0].aval.shape) in weight_shapes)


def test_weights_are_cast_to_the_compute_dtype_once_per_call(checkpoint):
  """With bf16 compute, the loops read bf16 weights: the fp32 -> bf16 casts sit outside them (one per weight)."""
  model = hf_io.load_model(checkpoint, compute_dtype="bfloat16")
  params = nnx.state(model)
  weights = jax.tree.leaves(params)
  layer_slices = {w.shape[1:] for w in jax.tree.leaves(params["layers"])}
  shapes = {w.shape for w in weights} | layer_slices
  jaxpr = jax.make_jaxpr(generate.__wrapped__, static_argnums=(0, 8))(
      nnx.graphdef(model), params, np.ones((2, 16), np.int32), np.ones((2, 16), bool), jax.random.key(0), NO_STOP,
      NO_EOS, 0, SamplingConfig(max_new_tokens=4)).jaxpr
  assert not [eqn for eqn, in_loop in _eqns(jaxpr) if in_loop and _is_weight_cast(eqn, shapes)]
  assert len([eqn for eqn in jaxpr.eqns if _is_weight_cast(eqn, shapes)]) == len(weights)
