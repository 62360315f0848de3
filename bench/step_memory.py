"""Per-device memory of the train step and the log-prob pass at real size, from XLA's compiled estimate (compile only).

  XLA_FLAGS=--xla_force_host_platform_device_count=8 .venv/bin/python bench/step_memory.py [--layers 2] [--mesh 1,8,1]
                                                                       [--ref_dtype bfloat16]

The model is Qwen2.5-7B's shape (hidden 3584, 28 heads, 4 KV heads, MLP 18944, vocab 152,064, untied head) cut to
--layers layers, with the paper configs' numerics (fp32 weights and Adam state, bf16 matmuls, remat, scanned layers);
one mini-batch is one micro-batch of --micro_batch rows of --seq_len tokens, PaW's CMAE on and a KL reference. Params,
optimizer state and rows are abstract (jax.ShapeDtypeStruct carrying the rule table's shardings): nothing of the model
is allocated and nothing runs; `lower(...).compile().memory_analysis()` gives XLA's per-device sizes. Not a test:
record the table in bench/RESULTS.md.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from paw_jax import sharding
from paw_jax.algos.losses import LossConfig
from paw_jax.config import OptimConfig
from paw_jax.learner import init_state, jit_logprobs, jit_update, make_optimizer, rl_loss
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig

GB = 1e9


def qwen25_7b(layers: int) -> ModelConfig:
  return ModelConfig("qwen2", 152064, 3584, 18944, layers, 28, 4, 128, rope_theta=1e6, qkv_bias=True,
                     param_dtype="float32", compute_dtype="bfloat16", remat=True, scan_layers=True)


def abstract_state(cfg: ModelConfig, mesh: jax.sharding.Mesh, ref_dtype: str):
  """(graphdef, params, train state) as shapes with shardings: params-shaped subtrees (params, reference, Adam
  moments) by the rule table, the rest replicated."""
  model = hf_io.abstract_model(cfg)
  graphdef, params = nnx.split(model)
  shardings = nnx.state(model)
  nnx.replace_by_pure_dict(shardings, sharding.param_shardings(model, mesh))
  params_def = jax.tree.structure(params)
  replicated = NamedSharding(mesh, PartitionSpec())

  def placed(node):
    if jax.tree.structure(node) == params_def:
      return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), node, shardings)
    return jax.ShapeDtypeStruct(node.shape, node.dtype, sharding=replicated)

  is_params = lambda node: jax.tree.structure(node) == params_def  # noqa: E731
  params = placed(params)
  state = jax.eval_shape(lambda p: init_state(p, make_optimizer(OptimConfig()), True, ref_dtype), params)
  return graphdef, params, jax.tree.map(placed, state, is_leaf=is_params)


def abstract_rows(mesh: jax.sharding.Mesh, rows: int, length: int, num_micro: int | None) -> dict:
  """A mini-batch's step inputs ([num_micro, rows, T] with `num_micro`, else [rows, T]), rows over data x fsdp."""
  lead = () if num_micro is None else (num_micro,)
  fields = {"tokens_BxT": ((rows, length), jnp.int32), "mask_BxT": ((rows, length), bool),
            "action_mask_BxT": ((rows, length), bool), "obs_mask_BxT": ((rows, length), bool),
            "old_logp_BxT": ((rows, length), jnp.float32), "ref_logp_BxT": ((rows, length), jnp.float32),
            "valid_B": ((rows,), bool), "advantage_B": ((rows,), jnp.float32), "wm_weight_B": ((rows,), jnp.float32)}

  def placed(shape, dtype):
    shape = lead + shape
    spec = sharding.logical_to_spec(sharding.row_axes(len(shape), len(lead)), shape, mesh)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec))
  return {k: placed(shape, dtype) for k, (shape, dtype) in fields.items()}


def report(name: str, compiled) -> None:
  mem = compiled.memory_analysis()
  total = mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes + mem.temp_size_in_bytes
  print(f"| {name:<22} | {mem.temp_size_in_bytes / GB:9.2f} | {mem.argument_size_in_bytes / GB:9.2f} | "
        f"{mem.output_size_in_bytes / GB:7.2f} | {total / GB:9.2f} |", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--mesh", default="1,8,1", help="data,fsdp,tensor (the paper configs: FSDP over every device)")
  parser.add_argument("--micro_batch", type=int, default=16)
  parser.add_argument("--seq_len", type=int, default=3072)
  parser.add_argument("--ref_dtype", default="float32", help="the KL reference's weights (model.ref_dtype)")
  args = parser.parse_args()
  mesh = sharding.make_mesh(*(int(n) for n in args.mesh.split(",")))
  cfg = qwen25_7b(args.layers)
  graphdef, params, state = abstract_state(cfg, mesh, args.ref_dtype)
  loss_fn = rl_loss(LossConfig(kl_coef=0.01), "cmae")
  print(f"Qwen2.5-7B shape, {args.layers} layers; mesh {dict(mesh.shape)} on {jax.device_count()} "
        f"{jax.devices()[0].platform} devices; micro-batch {args.micro_batch} x T={args.seq_len}; reference in "
        f"{args.ref_dtype}; GB per device\n"
        "| function               |      temp | arguments | outputs | total     |\n"
        "|------------------------|-----------|-----------|---------|-----------|")
  rows = abstract_rows(mesh, args.micro_batch, args.seq_len, None)
  logprobs = jit_logprobs(graphdef, mesh).lower(params, rows["tokens_BxT"], rows["mask_BxT"], rows["action_mask_BxT"])
  report("log-prob pass", logprobs.compile())
  step = jit_update(graphdef, make_optimizer(OptimConfig()), loss_fn, mesh)
  report("train step", step.lower(state, abstract_rows(mesh, args.micro_batch, args.seq_len, 1)).compile())


if __name__ == "__main__":
  main()
