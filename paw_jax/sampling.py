"""Jitted KV-cache sampler on the training model graph: chunked prefill + `lax.while_loop` decode over a fixed-size
cache.

Prompts are left-padded into a fixed bucket so every row's last prompt token sits at the same slot, and decoding
writes one slot per step for all rows. Rows stop at an EOS id or when their text contains a stop string; stop strings
are matched on device by a byte-level automaton whose per-token transition table is precomputed from the vocabulary,
so a stop string split across tokens is still caught and the loop never syncs with the host.

At scale (one `generate` call per turn of a wave): the weights are cast to the compute dtype once per call, and
gathered over the fsdp axis once (decode reads every weight every token; per-token all-gathers would dominate);
rows, the cache and the outputs are split over data x fsdp and KV heads over tensor (`paw_jax.sharding`'s rules);
the prompt is prefilled in chunks of C tokens, so its attention scores are [B, N, C, S], not [B, N, P, S]; the decode
loop writes the cache in place (one dynamic_update_slice per layer and token on the loop-carried buffers).

Per generated token the sampler returns the token, its log-prob and the full-vocabulary entropy of the
temperature-scaled distribution `softmax(logits / T)` — exactly what the trainer recomputes, so PPO ratios start at
1. top-k / top-p only restrict which token is drawn; they do not change the reported log-probs.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from paw_jax import multihost, sharding
from paw_jax.algos.losses import logprobs_from_logits
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder, KVCache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  temperature: float = 1.0  # 0 = greedy
  top_k: int = 0  # 0 = off
  top_p: float = 1.0  # 1 = off
  max_new_tokens: int = 512
  max_prompt_len: int = 2048  # the run's prompt cap (the Sampler's length buckets go up to it)
  eval_temperature: float = 0.4  # evaluation's temperature (the paper's); `for_eval()` samples with it
  # Rows of every evaluation sampler call (fewer eval episodes: that many): one fixed shape, so that each eval task's
  # outcome does not depend on env.num_envs. More prompts are decoded in several calls; lower it to save memory.
  eval_rows: int = 64

  def for_eval(self) -> SamplingConfig:
    return dataclasses.replace(self, temperature=self.eval_temperature)

  def __post_init__(self):
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if self.top_k < 0 or self.max_new_tokens < 1:
      raise ValueError(f"top_k must be >= 0 and max_new_tokens >= 1, got {self.top_k}, {self.max_new_tokens}")


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class SampleOutput:
  tokens_BxN: jax.Array  # generated tokens; pad_id after a row stopped
  logprobs_BxN: jax.Array  # log softmax(logits / T) of each generated token
  entropy_BxN: jax.Array  # full-vocabulary entropy of softmax(logits / T)
  mask_BxN: jax.Array  # token was generated (the EOS / stop token included)


# --- stop strings ----------------------------------------------------------------------------------------------
def stop_string_table(token_bytes: Sequence[bytes], stop_strings: Sequence[str]) -> np.ndarray:
  """[num_states + 1, V] transition table of an Aho-Corasick automaton over bytes; the last state means 'stopped'.

  A state is the longest suffix of the text so far that is a prefix of some stop string; feeding a token's bytes
  moves to the next state, or to the absorbing stopped state once any stop string has appeared.
  """
  stops = [s.encode() for s in stop_strings if s]
  prefixes = sorted({b""} | {stop[:i] for stop in stops for i in range(len(stop))}, key=lambda p: (len(p), p))
  state_of = {prefix: i for i, prefix in enumerate(prefixes)}
  stopped = len(prefixes)
  byte_delta = np.full((stopped + 1, 256), stopped, np.int32)
  for prefix, state in state_of.items():
    for byte in range(256):
      text = prefix + bytes([byte])
      if any(text.endswith(stop) for stop in stops):
        continue
      while text not in state_of:
        text = text[1:]
      byte_delta[state, byte] = state_of[text]
  table = np.empty((stopped + 1, len(token_bytes)), np.int32)
  by_length: dict[int, list[int]] = {}
  for token_id, raw in enumerate(token_bytes):
    by_length.setdefault(len(raw), []).append(token_id)
  for length, token_ids in by_length.items():  # vectorised over all tokens of one byte length
    bytes_NxL = np.frombuffer(b"".join(token_bytes[t] for t in token_ids), np.uint8).reshape(len(token_ids), length)
    states_SxN = np.broadcast_to(np.arange(stopped + 1)[:, None], (stopped + 1, len(token_ids)))
    for j in range(length):
      states_SxN = byte_delta[states_SxN, bytes_NxL[None, :, j]]
    table[:, token_ids] = states_SxN
  return table


# --- one decoding step's sampling ------------------------------------------------------------------------------
def split_keys(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(next, this step's) keys from one key for the whole batch, or from a key per row (shape [B]): then each row
  draws from its own stream, whatever the batch it is decoded in."""
  if rng.ndim == 0:
    next_rng, step_rng = jax.random.split(rng)
    return next_rng, step_rng
  pairs_Bx2 = jax.vmap(jax.random.split)(rng)
  return pairs_Bx2[:, 0], pairs_Bx2[:, 1]


def sample_logits(rng: jax.Array, logits_BxV: jax.Array, cfg: SamplingConfig) -> jax.Array:
  """Draws a token per row: greedy at T = 0, else from softmax(logits/T) restricted by top-k and top-p; `rng` is one
  key for the batch or one per row."""
  if cfg.temperature == 0:
    return jnp.argmax(logits_BxV, axis=-1)
  scaled_BxV = logits_BxV / cfg.temperature
  if cfg.top_k > 0:
    kth_Bx1 = jax.lax.top_k(scaled_BxV, cfg.top_k)[0][:, -1:]
    scaled_BxV = jnp.where(scaled_BxV < kth_Bx1, -jnp.inf, scaled_BxV)
  if cfg.top_p < 1.0:
    sorted_BxV = jnp.sort(scaled_BxV, axis=-1)[:, ::-1]
    probs_BxV = jax.nn.softmax(sorted_BxV, axis=-1)
    mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
    # The nucleus: the most probable tokens until their mass reaches top_p (the first token is always in).
    in_nucleus_BxV = mass_before_BxV < cfg.top_p
    threshold_Bx1 = jnp.min(jnp.where(in_nucleus_BxV, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
    scaled_BxV = jnp.where(scaled_BxV < threshold_Bx1, -jnp.inf, scaled_BxV)
  if rng.ndim:
    return jax.vmap(jax.random.categorical)(rng, scaled_BxV)
  return jax.random.categorical(rng, scaled_BxV, axis=-1)


# --- the jitted generation loop -------------------------------------------------------------------------------
# Prefill chunk: Qwen2.5-7B (28 heads) with 64 rows of 2,560 slots per device holds 4.7 GB of fp32 scores per chunk
# (75 GB for a whole 2,048-token prompt) and still multiplies 16k tokens per step.
DEFAULT_PREFILL_CHUNK = 256

# The sampler's layout: the training rules, but weights whole along `embed` (gathered over fsdp once per call).
SAMPLER_RULES = (("embed", None), *sharding.DEFAULT_RULES)


def _constrain(x: jax.Array, logical_axes: Sequence[str | None], mesh: Mesh | None) -> jax.Array:
  if mesh is None:
    return x
  spec = sharding.logical_to_spec(logical_axes, x.shape, mesh, SAMPLER_RULES)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def _rows(x: jax.Array, mesh: Mesh | None) -> jax.Array:
  return _constrain(x, ("batch",) + (None,) * (x.ndim - 1), mesh)


def _constrain_cache(cache: KVCache, mesh: Mesh | None) -> KVCache:
  return KVCache(_constrain(cache.keys_LxBxSxKxH, KVCache.LOGICAL_AXES, mesh),
                 _constrain(cache.values_LxBxSxKxH, KVCache.LOGICAL_AXES, mesh), _rows(cache.mask_BxS, mesh),
                 cache.index)


def _compute_params(params: nnx.State, dtype: jnp.dtype, mesh: Mesh | None) -> nnx.State:
  """Floating weights in the compute dtype, laid out by SAMPLER_RULES: made once per call, read every token."""
  def convert(variable: nnx.Variable) -> nnx.Variable:
    value = variable[...]
    if jnp.issubdtype(value.dtype, jnp.floating):
      value = value.astype(dtype)
    axes = variable.get_metadata().get("logical_axes") or (None,) * value.ndim
    return variable.replace(_constrain(value, axes, mesh))
  return jax.tree.map(convert, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg", "mesh", "prefill_chunk"))
def generate(graphdef: nnx.GraphDef, params: nnx.State, prompt_BxP: jax.Array, prompt_mask_BxP: jax.Array,
             rng: jax.Array, stop_table: jax.Array, eos_ids: jax.Array, pad_id: int | jax.Array,
             cfg: SamplingConfig, mesh: Mesh | None = None,
             prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> SampleOutput:
  """Samples up to `cfg.max_new_tokens` tokens after left-padded prompts (last prompt token at slot P-1).

  `mesh`: rows split over data x fsdp, KV heads over tensor (None: no constraints). The prompt is prefilled in
  chunks of min(prefill_chunk, P) tokens, which must divide P.
  """
  dtype = nnx.merge(graphdef, params).cfg.compute_jnp_dtype
  model: Decoder = nnx.merge(graphdef, _compute_params(params, dtype, mesh))
  batch, prompt_len = prompt_BxP.shape
  chunk = min(prefill_chunk, prompt_len)
  if prompt_len % chunk:
    raise ValueError(f"prefill_chunk={prefill_chunk}: expected a divisor of the prompt length {prompt_len}")
  steps = cfg.max_new_tokens
  stopped_state = stop_table.shape[0] - 1
  prompt_BxP, prompt_mask_BxP = _rows(prompt_BxP, mesh), _rows(prompt_mask_BxP, mesh)
  positions_BxP = jnp.maximum(jnp.cumsum(prompt_mask_BxP.astype(jnp.int32), axis=-1) - 1, 0)

  def prefill(i, carry):
    """Writes prompt slots [i*C, (i+1)*C) to the cache; carries the last slot's hidden state for the first token."""
    cache, _ = carry
    chunk_of = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=i * chunk, slice_size=chunk, axis=1)
    hidden_BxCxD, cache = model.hidden_states(chunk_of(prompt_BxP), chunk_of(positions_BxP),
                                              chunk_of(prompt_mask_BxP), cache)
    return _constrain_cache(cache, mesh), _rows(hidden_BxCxD[:, -1], mesh)

  cache = _constrain_cache(KVCache.init(model.cfg, batch, prompt_len + steps), mesh)
  last_hidden_BxD = _rows(jnp.zeros((batch, model.cfg.hidden_size), model.cfg.compute_jnp_dtype), mesh)
  cache, last_hidden_BxD = jax.lax.fori_loop(0, prompt_len // chunk, prefill, (cache, last_hidden_BxD))
  logits_BxV = model.logits(last_hidden_BxD[:, None])[:, 0]

  def record(carry, logits_BxV, step):
    """Samples this step's token and writes it (masked once a row is done); carry = (rng, done, stop state, out)."""
    rng, done_B, stop_state_B, out = carry
    rng, step_rng = split_keys(rng)
    token_B = sample_logits(step_rng, logits_BxV, cfg)
    # Greedy decoding (T = 0) reports the T = 1 distribution's log-probs.
    logprob_B, entropy_B = logprobs_from_logits(logits_BxV, token_B, cfg.temperature or 1.0, with_entropy=True)
    active_B = ~done_B
    out = SampleOutput(
        out.tokens_BxN.at[:, step].set(jnp.where(active_B, token_B, pad_id)),
        out.logprobs_BxN.at[:, step].set(jnp.where(active_B, logprob_B, 0.0)),
        out.entropy_BxN.at[:, step].set(jnp.where(active_B, entropy_B, 0.0)),
        out.mask_BxN.at[:, step].set(active_B))
    stop_state_B = stop_table[stop_state_B, token_B]
    done_B = done_B | jnp.isin(token_B, eos_ids) | (stop_state_B == stopped_state)
    return rng, done_B, stop_state_B, out, token_B

  empty = SampleOutput(jnp.full((batch, steps), pad_id, jnp.int32), jnp.zeros((batch, steps), jnp.float32),
                       jnp.zeros((batch, steps), jnp.float32), jnp.zeros((batch, steps), bool))
  empty = jax.tree.map(lambda x: _rows(x, mesh), empty)
  start = (rng, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.int32), empty)
  rng, done_B, stop_state_B, out, token_B = record(start, logits_BxV, 0)
  last_position_B = positions_BxP[:, -1]

  def cond(carry):
    step, _, done_B, *_ = carry
    return (step < steps) & ~jnp.all(done_B)

  def body(carry):
    step, rng, done_B, stop_state_B, out, token_B, cache = carry
    positions_Bx1 = (last_position_B + step)[:, None]
    logits_Bx1xV, cache = model(token_B[:, None], positions_Bx1, ~done_B[:, None], cache)
    rng, done_B, stop_state_B, out, token_B = record((rng, done_B, stop_state_B, out), logits_Bx1xV[:, 0], step)
    return step + 1, rng, done_B, stop_state_B, out, token_B, _constrain_cache(cache, mesh)

  carry = (jnp.ones((), jnp.int32), rng, done_B, stop_state_B, out, token_B, cache)
  return jax.lax.while_loop(cond, body, carry)[4]


def _bucket(n: int, buckets: Sequence[int]) -> int:
  for b in buckets:
    if n <= b:
      return b
  raise ValueError(f"length {n} exceeds the largest bucket {buckets[-1]}")


def power_of_two_buckets(minimum: int, maximum: int) -> tuple[int, ...]:
  sizes, n = [], minimum
  while n < maximum:
    sizes.append(n)
    n *= 2
  return (*sizes, maximum)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@dataclasses.dataclass
class Sampler:
  """Host-side front end: pads prompts into (batch, length) buckets so `generate` compiles once per bucket.

  `params` is passed per call (the train state's own; `generate` makes the compute-dtype copy it decodes with, which
  at bf16 costs half the fp32 weights' memory, whole along `embed`, during the call). Length buckets are powers of two
  from 64 to `max_prompt_len`, those above `prefill_chunk` rounded up to a multiple of it; batch buckets are the mesh's
  row shards (data x fsdp) times powers of two, up to `max_batch` rounded up likewise. So a run compiles `generate`
  at most len(length_buckets) x len(batch_buckets) times per SamplingConfig (an RL run has two: training's and
  evaluation's): with max_prompt_len=2048 and max_batch=512 on one row shard, 6 x 10 x 2 = 120; on 8 row shards,
  6 x 7 x 2 = 84. The persistent compilation cache (`Run.open`) keeps them across restarts.
  """
  graphdef: nnx.GraphDef
  token_bytes: Sequence[bytes]
  eos_ids: Sequence[int]
  pad_id: int
  stop_strings: Sequence[str] = ()
  max_prompt_len: int = 2048
  vocab_size: int | None = None  # model vocabulary when larger than the tokenizer's (e.g. Qwen's padded embedding)
  mesh: Mesh | None = None  # rows over data x fsdp, KV heads over tensor; None: wherever the inputs are
  prefill_chunk: int = DEFAULT_PREFILL_CHUNK  # prompt tokens per prefill step
  max_batch: int = 512  # the largest batch bucket (a larger call raises)

  def __post_init__(self):
    if self.prefill_chunk < 1 or self.max_batch < 1:
      raise ValueError(f"prefill_chunk and max_batch must be >= 1, got {self.prefill_chunk}, {self.max_batch}")
    token_bytes = list(self.token_bytes)
    if self.vocab_size is not None:
      if self.vocab_size < len(token_bytes):
        raise ValueError(f"model vocab_size={self.vocab_size} is smaller than the tokenizer's {len(token_bytes)}")
      token_bytes += [b""] * (self.vocab_size - len(token_bytes))  # ids the tokenizer never produces
    self._stop_table = jnp.asarray(stop_string_table(token_bytes, self.stop_strings))
    self._eos_ids = jnp.asarray(list(self.eos_ids), jnp.int32)
    chunk = self.prefill_chunk
    self.length_buckets = tuple(sorted({_round_up(n, chunk) if n > chunk else n
                                        for n in power_of_two_buckets(min(64, self.max_prompt_len),
                                                                      self.max_prompt_len)}))
    row_shards = 1 if self.mesh is None else self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    self.batch_buckets = power_of_two_buckets(row_shards, _round_up(self.max_batch, row_shards))

  @classmethod
  def from_tokenizer(cls, graphdef: nnx.GraphDef, tokenizer: Tokenizer, *, vocab_size: int, max_prompt_len: int,
                     stop_strings: Sequence[str] = (), mesh: Mesh | None = None) -> Sampler:
    """A sampler that stops at the tokenizer's end-of-turn tokens and pads with its pad token."""
    return cls(graphdef, tokenizer.token_bytes(), eos_ids=tokenizer.stop_token_ids, pad_id=tokenizer.pad_token_id,
               stop_strings=tuple(stop_strings), max_prompt_len=max_prompt_len, vocab_size=vocab_size, mesh=mesh)

  def __call__(self, params: nnx.State, prompts: Sequence[Sequence[int]], rng: jax.Array, cfg: SamplingConfig,
               rows: int = 0) -> list[dict[str, np.ndarray]]:
    """Samples one completion per prompt; returns per row `tokens`, `logprobs`, `entropy` (numpy, unpadded).

    `rng`: one key for the call, or one per prompt (a prompt's draws then do not depend on the other prompts).
    `rows` > 0: decode in calls of exactly the batch bucket of `rows` rows (several calls for more prompts), whatever
    the number of prompts. The compiled kernels, and so their rounding, depend on the batch size; with a key per
    prompt and `rows`, a prompt's completion does not depend on which or how many other prompts share the call."""
    if not prompts:
      return []
    too_long = [len(p) for p in prompts if len(p) > self.max_prompt_len]
    if too_long or any(len(p) == 0 for p in prompts):
      raise ValueError(f"prompt lengths must be in [1, {self.max_prompt_len}]; got {too_long or 'an empty prompt'}")
    if rng.ndim and rng.shape != (len(prompts),):
      raise ValueError(f"rng: expected one key or one per prompt ({len(prompts)}), got shape {rng.shape}")
    if rows and len(prompts) > rows:
      return [result for start in range(0, len(prompts), rows)
              for result in self(params, prompts[start:start + rows],
                                 rng[start:start + rows] if rng.ndim else jax.random.fold_in(rng, start), cfg, rows)]
    batch = _bucket(max(len(prompts), rows), self.batch_buckets)
    length = _bucket(max(len(p) for p in prompts), self.length_buckets)
    prompt_BxP = np.full((batch, length), self.pad_id, np.int32)
    mask_BxP = np.zeros((batch, length), bool)
    for row, prompt in enumerate(prompts):
      prompt_BxP[row, length - len(prompt):] = prompt
      mask_BxP[row, length - len(prompt):] = True
    mask_BxP[len(prompts):, -1] = True  # filler rows: one real token, so no row attends to nothing
    if rng.ndim:
      rng = jnp.concatenate([rng, jnp.broadcast_to(rng[:1], (batch - len(prompts),))])  # filler rows: any key
    inputs = {"prompt_BxP": prompt_BxP, "mask_BxP": mask_BxP}
    if self.mesh is not None:  # each device receives its own rows
      inputs = sharding.shard_rows(inputs, self.mesh)
    out = multihost.fetch(generate(self.graphdef, params, inputs["prompt_BxP"], inputs["mask_BxP"], rng,
                                  self._stop_table, self._eos_ids, self.pad_id, cfg, self.mesh, self.prefill_chunk))
    results = []
    for row in range(len(prompts)):
      n = int(out.mask_BxN[row].sum())
      results.append({"tokens": out.tokens_BxN[row, :n], "logprobs": out.logprobs_BxN[row, :n],
                      "entropy": out.entropy_BxN[row, :n]})
    return results
