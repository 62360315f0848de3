"""Per-device memory of a run's train step and sampler, read from XLA's compiled programs on N fake CPU devices.

  python -m paw_jax.tools.memory --config=configs/alfworld.py:model=qwen2.5-7b --devices=8 [--device-memory=80GB]
      [--layers=K] [--json=PATH] [--config.batch.micro_batch=8 ...]

Nothing is run and no weights are read: the programs are compiled (not executed) for abstract parameters
(`jax.ShapeDtypeStruct`s placed by `sharding.param_shardings` on the config's mesh over `--devices` CPU devices made
with XLA_FLAGS=--xla_force_host_platform_device_count). The architecture comes from `model.path`'s config.json (or
GGUF header) when it exists, else from ARCHITECTURES, keyed by the HF repo id the path ends with (the paper's models).
`--layers=K` keeps K layers (quick runs; with `model.scan_layers` the compile time hardly depends on depth).

Three programs, compiled as the RL program runs them (`programs/rl.py`):
  policy step  `learner.jit_update` with `rl_loss(algo.loss, PaW's wm_loss)` on one mini-batch
               [mini_batch / micro_batch, micro_batch, batch.max_len], its rows placed by `sharding.shard_rows`
  critic step  (algorithms whose estimator needs a critic: PPO) `critic.critic_loss`'s update on the same mini-batch
  rollout      `sampling.generate` for the rollout batch (groups_per_update x group_size prompts, or the eval
               episodes, in the Sampler's batch bucket) of `sampling.max_prompt_len` + `max_new_tokens` tokens,
               prompts passed as host arrays, as `Sampler.__call__` passes them

Rows, in bytes per device (GB = 1e9 bytes):
  params, optimizer state, reference, critic
      the train states every phase keeps on the device, summed over their leaves' shards (`shard_shape` of each
      leaf's sharding): the policy's params (`model.param_dtype`), its Adam moments and count, the frozen KL reference
      (`algo.loss.kl_coef != 0`) and PPO's critic (params + Adam). Adam's moments and the reference take their
      params' sharding, as `init_state` makes them (zeros_like / copy keep a committed array's sharding).
  inputs + outputs
      the program's `argument_size` minus the train state it reads (so: the mini-batch, or the prompts and the
      stop-string table), plus `output_size - alias_size` (outputs that do not reuse a donated input's buffer).
  temporaries
      `temp_size` of the compiled program: activations, remat residuals, logits, gradient accumulators, attention
      scores ... as XLA's buffer assignment lays them out (the rollout's minus its KV cache, shown apart).
  KV cache
      the sampler's key and value caches as the compiled per-device program allocates them: the largest
      [layers, batch, slots, kv_heads, head_dim] buffer of the compute dtype in its HLO, times two.
  total
      the sum: the phase's peak. The largest total over the phases is what the device must hold.
Below the table, each program's three largest array shapes (from its HLO): what its temporaries are made of.

The programs are compiled by XLA's CPU backend: its fusion and scheduling differ from a GPU's or TPU's, so
temporaries are an estimate of the same program's needs there, not a measurement (bench/gpu.sh reads the GPU's own
peak). The log-prob passes before an update (forward only, micro-batches of the same rows) need less than the
policy step and are not compiled here.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import pathlib
import re
import sys
from typing import Any, Sequence

# Only the standard library at import time: JAX (imported inside the functions below) must start after
# `use_fake_devices` has set its device count.

# The shape fields of each paper model's HF config.json (Instruct checkpoints; memory depends on nothing else).
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-1.5B-Instruct": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536, intermediate_size=8960,
                                       num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2,
                                       tie_word_embeddings=True),
    "Qwen/Qwen2.5-3B-Instruct": dict(model_type="qwen2", vocab_size=151936, hidden_size=2048, intermediate_size=11008,
                                     num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
                                     tie_word_embeddings=True),
    "Qwen/Qwen2.5-7B-Instruct": dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
                                     num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
                                     tie_word_embeddings=False),
    "Qwen/Qwen2.5-14B-Instruct": dict(model_type="qwen2", vocab_size=152064, hidden_size=5120,
                                      intermediate_size=13824, num_hidden_layers=48, num_attention_heads=40,
                                      num_key_value_heads=8, tie_word_embeddings=False),
    "Qwen/Qwen3-1.7B": dict(model_type="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                            num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                            tie_word_embeddings=True),
    "meta-llama/Llama-3.2-3B-Instruct": dict(model_type="llama", vocab_size=128256, hidden_size=3072,
                                             intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                                             num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}
ROWS = ("params", "optimizer state", "reference", "critic", "inputs + outputs", "temporaries", "KV cache")
_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30,
          "TIB": 2**40}


class _OneLineParser(argparse.ArgumentParser):
  def error(self, message: str):
    raise SystemExit(f"memory: {message}")


def parse_bytes(text: str) -> int:
  """'80GB' (1e9), '141GiB' (2**30), '8e10' -> bytes."""
  match = re.fullmatch(r"\s*([0-9.eE+]+)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
  try:
    value = float(match[1]) * _UNITS[(match[2] or "").upper()] if match else -1
  except ValueError:
    value = -1
  if value <= 0:
    raise SystemExit(f"memory: --device-memory={text!r}: expected a size such as 80GB, 141GiB or 8e10")
  return int(value)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
  """The flags, and the `--config.a.b=value` overrides in order."""
  parser = _OneLineParser(prog="python -m paw_jax.tools.memory", description=__doc__.splitlines()[0],
                          allow_abbrev=False)
  parser.add_argument("--config", required=True, help="configs/x.py[:variant]")
  parser.add_argument("--devices", type=int, default=1, help="fake CPU devices the config's mesh spans")
  parser.add_argument("--device-memory", type=parse_bytes, default=None, help="e.g. 80GB: say whether it fits")
  parser.add_argument("--layers", type=int, default=0, help="keep this many layers (0: the model's own)")
  parser.add_argument("--json", default="", help="also write the rows to this file")
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    key, sep, value = item.partition("=")
    if not key.startswith("--config.") or not sep:
      parser.error(f"unrecognized argument {item!r} (overrides are --config.a.b=value)")
    overrides.append((key.removeprefix("--config."), value))
  if args.devices < 1:
    parser.error(f"--devices={args.devices}: expected an integer >= 1")
  if args.layers < 0:
    parser.error(f"--layers={args.layers}: expected an integer >= 1 (or 0: the model's own depth)")
  return args, overrides


def use_fake_devices(count: int) -> None:
  """`count` CPU devices for JAX; must run before JAX's backend starts (JAX is imported after it in `main`)."""
  if "jax" in sys.modules:
    import jax
    if jax.device_count() != count:
      raise SystemExit(f"memory: JAX already started with {jax.device_count()} devices; run the tool as its own "
                       "process (python -m paw_jax.tools.memory)")
    return
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()
  os.environ["JAX_PLATFORMS"] = "cpu"


# --- config and model --------------------------------------------------------------------------------------------
def load_config(spec: str, overrides: list[tuple[str, str]]):
  """The typed config of `configs/x.py[:variant]` (its `get_config(variant)`) with `--config.a.b=value` overrides."""
  import importlib.util

  from paw_jax.config import from_configdict
  path, sep, variant = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"--config={spec}: no config file {path!r}")
  module_spec = importlib.util.spec_from_file_location("paw_jax_memory_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config_dict = module.get_config(*([variant] if sep else []))
  for key, text in overrides:
    *parents, name = key.split(".")
    section = config_dict
    for part in parents:
      section = section.get(part) if hasattr(section, "get") else None
    if not hasattr(section, "keys") or name not in section:
      raise KeyError(f"--config.{key}: no such field")
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      value = text  # a bare word: a string
    try:
      section[name] = value
    except TypeError as error:
      raise TypeError(f"--config.{key}={text}: {error}") from None
  return from_configdict(config_dict)


def model_config(config, layers: int):
  """The run's ModelConfig from its checkpoint's header, or from ARCHITECTURES when the checkpoint is absent."""
  from paw_jax.models import hf_io
  from paw_jax.models.config import ModelConfig
  from paw_jax.models.gguf_io import gguf_config, open_gguf

  spec = config.model
  numerics = dict(param_dtype=spec.param_dtype, compute_dtype=spec.compute_dtype, remat=spec.remat,
                  scan_layers=spec.scan_layers, attention_impl=spec.attention_impl)
  path = pathlib.Path(spec.path).expanduser()
  if not spec.path:
    cfg = ModelConfig(vocab_size=config.tokenizer.vocab_size, tie_word_embeddings=True,
                      **dataclasses.asdict(spec.scratch), **numerics)
  elif path.is_dir():
    cfg = ModelConfig.from_hf(hf_io.read_config(path), **numerics)
  elif path.suffix == ".gguf" and path.is_file():
    cfg = ModelConfig.from_hf(gguf_config(open_gguf(path)), **numerics)
  else:
    repo = next((r for r in ARCHITECTURES if path.as_posix().endswith(r)), None)
    if repo is None:
      raise FileNotFoundError(f"model.path={spec.path!r} does not exist and does not end with a known model "
                              f"({', '.join(ARCHITECTURES)})")
    cfg = ModelConfig.from_hf(ARCHITECTURES[repo], **numerics)
  return cfg.replace(num_layers=layers) if layers else cfg


# --- abstract, placed arrays -------------------------------------------------------------------------------------
def abstract_params(module_fn, mesh):
  """(graphdef, nnx.State of ShapeDtypeStructs) of the module `module_fn()` builds, placed by the rule table."""
  import jax
  from flax import nnx

  from paw_jax import sharding
  module = nnx.eval_shape(module_fn)
  graphdef, state = nnx.split(module)
  placed = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                        nnx.to_pure_dict(state), sharding.param_shardings(module, mesh))
  nnx.replace_by_pure_dict(state, placed)
  return graphdef, state


def abstract_train_state(params, optimizer, with_ref: bool, mesh):
  """`learner.init_state`'s TrainState as ShapeDtypeStructs: a leaf under a params-shaped subtree (Adam's moments,
  the reference) takes that param's sharding, the scalars are replicated."""
  import functools

  import jax
  from jax.sharding import NamedSharding, PartitionSpec

  from paw_jax.learner import init_state
  state = jax.eval_shape(functools.partial(init_state, optimizer=optimizer, with_ref=with_ref), params)
  sharding_of = {path: leaf.sharding for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  replicated = NamedSharding(mesh, PartitionSpec())

  def place(path, leaf):
    sharding = next((sharding_of[path[i:]] for i in range(len(path)) if path[i:] in sharding_of), replicated)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)
  return jax.tree_util.tree_map_with_path(place, state)


def shard_bytes(tree) -> int:
  """Bytes one device holds of `tree`'s placed leaves (the largest shard where a split is uneven)."""
  import jax
  return sum(math.prod(leaf.sharding.shard_shape(leaf.shape)) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def abstract_minibatch(config, mesh, with_critic: bool) -> dict[str, Any]:
  """One mini-batch as `Learner.step` places it: the fields `batch.prepare` fills, laid out by
  `TrainBatch.mini_batches` at the longest row bucket, then `sharding.shard_rows` (zeros: a few MB)."""
  import jax
  import numpy as np

  from paw_jax import sharding
  from paw_jax.batch import TrainBatch
  rows, length = config.batch.mini_batch, config.batch.max_len
  zeros = lambda dtype=np.float32: np.zeros((rows, length), dtype)  # noqa: E731
  per_row = lambda: np.zeros((rows,), np.float32)  # noqa: E731
  batch = TrainBatch(tokens_BxT=zeros(np.int32), mask_BxT=zeros(bool), action_mask_BxT=zeros(bool),
                     obs_mask_BxT=zeros(bool), valid_B=np.zeros((rows,), bool), sampler_logp_BxT=zeros(),
                     entropy_BxT=zeros(), trainer_logp_BxT=zeros() if config.algo.old_logp == "trainer" else None,
                     ref_logp_BxT=zeros() if config.algo.loss.kl_coef else None,
                     old_value_B=per_row() if with_critic else None, advantage_B=per_row(),
                     return_B=per_row() if with_critic else None, wm_weight_B=per_row())
  minibatch = next(batch.mini_batches(rows, config.batch.micro_batch, config.algo.old_logp))
  placed = sharding.shard_rows(dict(minibatch), mesh, row_axis=1)
  return {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=v.sharding) for k, v in placed.items()}


# --- compiled programs -------------------------------------------------------------------------------------------
_ITEMSIZE = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
             "s64": 8, "u64": 8, "f64": 8}


def hlo_arrays(hlo_text: str) -> list[tuple[int, str]]:
  """(bytes, 'dtype[dims]') of every distinct array shape in a compiled per-device program, largest first."""
  shapes = set(re.findall(rf"\b((?:{'|'.join(_ITEMSIZE)})\[[\d,]*\])", hlo_text))
  sized = [(_ITEMSIZE[s.split("[")[0]] * math.prod(int(d) for d in s[s.index("[") + 1:-1].split(",") if d), s)
           for s in shapes]
  return sorted(sized, reverse=True)


@dataclasses.dataclass
class Program:
  """What one compiled program adds to the resident train states, per device."""
  io: int  # arguments other than the resident state, and outputs not aliased to inputs
  temp: int
  kv_cache: int = 0
  largest: tuple[str, ...] = ()  # its largest array shapes: what dominates the temporaries


def measure(compiled, resident_arguments: int, cfg=None) -> Program:
  """The program's rows; with `cfg` (the sampler), its KV cache apart from the other temporaries."""
  stats = compiled.memory_analysis()
  arrays = hlo_arrays(compiled.as_text())
  kv_cache = kv_cache_bytes(arrays, cfg) if cfg is not None else 0
  io = stats.argument_size_in_bytes - resident_arguments + stats.output_size_in_bytes - stats.alias_size_in_bytes
  return Program(io=io, temp=stats.temp_size_in_bytes - kv_cache, kv_cache=kv_cache,
                 largest=tuple(f"{shape} {size / 1e9:.2f} GB" for size, shape in arrays[:3]))


def kv_cache_bytes(arrays: list[tuple[int, str]], cfg) -> int:
  """Bytes of the key and value caches in a compiled per-device program: the largest rank-5 array of the compute
  dtype that starts with the layer count and ends with head_dim ([layers, batch, slots, kv_heads, head_dim]), x 2."""
  dtype = {"bfloat16": "bf16", "float32": "f32", "float16": "f16"}[cfg.compute_dtype]
  pattern = re.compile(rf"{dtype}\[{cfg.num_layers},\d+,\d+,\d+,{cfg.head_dim}\]")
  return 2 * next((size for size, shape in arrays if pattern.fullmatch(shape)), 0)


def rollout_batch(config) -> int:
  """Prompts per `generate` call: a rollout's playable episodes (or the evaluation's), in the Sampler's bucket."""
  from paw_jax.sampling import Sampler, power_of_two_buckets
  prompts = max(config.algo.groups_per_update * config.algo.group_size, config.train.eval_episodes)
  buckets = power_of_two_buckets(1, next(f.default for f in dataclasses.fields(Sampler) if f.name == "max_batch"))
  return next((b for b in buckets if b >= prompts), prompts)


def compile_programs(config, cfg, mesh) -> tuple[dict[str, int], dict[str, Program], dict[str, Any]]:
  """(resident bytes by row, programs by phase, shapes) for the config on `mesh`."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from paw_jax.algos.advantages import ADVANTAGES
  from paw_jax.critic import Critic, critic_loss
  from paw_jax.learner import jit_update, make_optimizer, rl_loss
  from paw_jax.models.transformer import Decoder
  from paw_jax.sampling import generate, stop_string_table

  with_ref = config.algo.loss.kl_coef != 0
  with_critic = ADVANTAGES[config.algo.name].needs_critic
  graphdef, params = abstract_params(lambda: Decoder(cfg, rngs=nnx.Rngs(0)), mesh)
  optimizer = make_optimizer(config.optim)
  state = abstract_train_state(params, optimizer, with_ref, mesh)
  resident = {"params": shard_bytes(state.params), "optimizer state": shard_bytes(state.opt_state),
              "reference": shard_bytes(state.ref_params) if with_ref else 0, "critic": 0}
  minibatch = abstract_minibatch(config, mesh, with_critic)
  loss_fn = rl_loss(config.algo.loss, config.paw.wm_loss if config.paw.enabled else None)
  print("compiling the policy step ...", file=sys.stderr, flush=True)
  step = jit_update(graphdef, optimizer, loss_fn, mesh).lower(state, minibatch).compile()
  programs = {"policy step": measure(step, shard_bytes(state))}

  if with_critic:  # a copy of the policy with a value head and its own optimizer (critic.CriticPlugin)
    critic_graphdef, critic_params = abstract_params(lambda: Critic(Decoder(cfg, rngs=nnx.Rngs(0))), mesh)
    critic_optimizer = make_optimizer(dataclasses.replace(config.optim, learning_rate=config.critic.learning_rate))
    critic_state = abstract_train_state(critic_params, critic_optimizer, False, mesh)
    resident["critic"] = shard_bytes(critic_state)
    print("compiling the critic step ...", file=sys.stderr, flush=True)
    critic_step = jit_update(critic_graphdef, critic_optimizer, critic_loss(config.critic.value_clip), mesh)
    programs["critic step"] = measure(critic_step.lower(critic_state, minibatch).compile(), shard_bytes(critic_state))

  batch, prompt_len = rollout_batch(config), config.sampling.max_prompt_len
  stop_table = jnp.asarray(stop_string_table([b""] * cfg.vocab_size, ()))
  print("compiling the sampler ...", file=sys.stderr, flush=True)
  sampler = generate.lower(graphdef, params, np.zeros((batch, prompt_len), np.int32),
                           np.ones((batch, prompt_len), bool), jax.random.key(0), stop_table,
                           jnp.zeros((1,), jnp.int32), 0, config.sampling, mesh).compile()
  programs["rollout"] = measure(sampler, shard_bytes(params), cfg)
  shapes = {"minibatch": list(minibatch["tokens_BxT"].shape), "rollout_batch": batch, "prompt_len": prompt_len,
            "max_new_tokens": config.sampling.max_new_tokens}
  return resident, programs, shapes


# --- the report --------------------------------------------------------------------------------------------------
def phase_rows(resident: dict[str, int], program: Program) -> dict[str, int]:
  rows = {**resident, "inputs + outputs": program.io, "temporaries": program.temp, "KV cache": program.kv_cache}
  return {**rows, "total": sum(rows.values()), "largest arrays": list(program.largest)}


def format_report(report: dict[str, Any]) -> str:
  gb = lambda b: f"{b / 1e9:.2f}"  # noqa: E731
  phases = report["phases"]
  lines = [f"| per device, GB | {' | '.join(phases)} |", f"|---|{'---:|' * len(phases)}"]
  for row in (*ROWS, "total"):
    cells = [gb(phases[p][row]) if row not in ("KV cache", "inputs + outputs") or phases[p][row] else "-"
             for p in phases]
    name = f"**{row}**" if row == "total" else row
    lines.append(f"| {name} | {' | '.join(f'**{c}**' if row == 'total' else c for c in cells)} |")
  peak_phase = max(phases, key=lambda p: phases[p]["total"])
  peak = phases[peak_phase]["total"]
  verdict = f"peak {gb(peak)} GB per device ({peak_phase})"
  if report["device_memory"]:
    fits = peak <= report["device_memory"]
    verdict += (f": {'fits' if fits else 'does NOT fit'} {gb(report['device_memory'])} GB "
                f"({'headroom' if fits else 'short by'} {gb(abs(report['device_memory'] - peak))} GB)")
  largest = [f"largest arrays, {p}: {'; '.join(phases[p]['largest arrays'])}" for p in phases]
  return "\n".join([report["title"], *lines, verdict, *largest])


def describe(config, cfg, mesh, shapes, spec: str, layers: int) -> str:
  algo = config.algo.name + (f" + PaW ({config.paw.wm_loss})" if config.paw.enabled else "")
  extras = ", ".join(filter(None, ["KL reference" if config.algo.loss.kl_coef else "",
                                   "remat" if cfg.remat else "", "scan" if cfg.scan_layers else ""]))
  depth = f"{cfg.num_layers} layers" + (" (reduced by --layers)" if layers else "")
  mesh_text = " x ".join(f"{name}={size}" for name, size in mesh.shape.items())
  num_micro, micro, length = shapes["minibatch"]
  return (f"{spec} on {mesh.size} device(s), mesh {mesh_text}\n"
          f"model {cfg.model_type} {depth}, {cfg.num_params / 1e9:.2f}B params ({cfg.param_dtype} params, "
          f"{cfg.compute_dtype} compute); {algo}; {extras}\n"
          f"policy step: {num_micro} micro-batches x {micro} rows x T={length}; rollout: {shapes['rollout_batch']} "
          f"prompts x {shapes['prompt_len']} + {shapes['max_new_tokens']} new tokens")


def main(argv: Sequence[str] | None = None) -> None:
  args, overrides = parse_args(sys.argv[1:] if argv is None else argv)
  use_fake_devices(args.devices)
  from paw_jax.config import ConfigError
  try:
    config = load_config(args.config, overrides)
    cfg = model_config(config, args.layers)
  except (ConfigError, OSError, ValueError, KeyError, TypeError, AttributeError) as error:
    message = error.args[0] if isinstance(error, KeyError) and error.args else error
    raise SystemExit(f"memory: {' '.join(str(message).split())}") from None
  import jax

  from paw_jax import sharding
  try:
    mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, jax.devices()[:args.devices])
  except ValueError as error:
    raise SystemExit(f"memory: mesh: {error} (--devices={args.devices})") from None
  resident, programs, shapes = compile_programs(config, cfg, mesh)
  report = {"title": describe(config, cfg, mesh, shapes, args.config, args.layers), "devices": args.devices,
            "layers": cfg.num_layers, "device_memory": args.device_memory, "shapes": shapes,
            "phases": {name: phase_rows(resident, program) for name, program in programs.items()}}
  print(format_report(report))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
