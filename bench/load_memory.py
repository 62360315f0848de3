"""Host memory of loading a checkpoint in a multi-process run: each process's peak RSS while it loads a paper model's
shape (random bf16 safetensors, reduced depth) onto a mesh over all processes' devices, sharded loading
(`hf_io.load_sharded`: each process reads its devices' blocks) against reading the whole checkpoint (`load_checkpoint`
+ placement, what every process did before).

  python bench/load_memory.py [--model Qwen/Qwen2.5-7B-Instruct] [--layers 2] [--processes 2] [--devices 8]

The processes run on this machine (fake CPU devices, jax.distributed on 127.0.0.1), as launch/local.sh starts them.
Prints one row per process and method; record them in bench/RESULTS.md. Memory grows with depth as
embeddings + layers x one layer: the table says how much each part takes so the full depth follows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import resource
import socket
import subprocess
import sys

import ml_dtypes
import numpy as np


def write_checkpoint(model: str, layers: int, directory: pathlib.Path) -> None:
  """config.json and one safetensors file per tensor group (embeddings, head, each layer), random bf16 values."""
  from safetensors.numpy import save_file

  from paw_jax.models import hf_io
  from paw_jax.models.config import ModelConfig
  from paw_jax.tools.memory import ARCHITECTURES

  if (directory / "model.safetensors.index.json").is_file():
    return
  directory.mkdir(parents=True, exist_ok=True)
  hf_config = {**ARCHITECTURES[model], "num_hidden_layers": layers, "torch_dtype": "bfloat16"}
  cfg = ModelConfig.from_hf(hf_config)
  rng = np.random.default_rng(0)
  files: dict[str, dict[str, np.ndarray]] = {}
  for path, key, shape, in_dims in hf_io._param_table(cfg):  # noqa: SLF001 -- the table of HF names and shapes
    hf_shape = shape if in_dims is None else (math.prod(shape[in_dims:]), math.prod(shape[:in_dims]))
    if key.endswith(".bias"):
      hf_shape = (math.prod(shape),)
    # values in [2^-7, 1): finite, and as costly to read as any weights
    files.setdefault(path[0] if len(path) == 1 else f"layer{path[2]}", {})[key] = (
        rng.integers(0x3C00, 0x3F80, hf_shape, dtype=np.uint16).view(ml_dtypes.bfloat16))
  weight_map = {}
  for group, tensors in files.items():
    save_file(tensors, directory / f"{group}.safetensors", metadata={"format": "pt"})
    weight_map.update({key: f"{group}.safetensors" for key in tensors})
    tensors.clear()
  (directory / "config.json").write_text(json.dumps(hf_config))
  (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def worker(args) -> None:
  """One process: joins the run, loads the checkpoint with `args.method`, prints its figures as a JSON line."""
  from paw_jax.distributed import maybe_initialize_distributed
  maybe_initialize_distributed()
  import jax

  from paw_jax import sharding
  from paw_jax.models import hf_io

  mesh = sharding.make_mesh(data=1, fsdp=-1)
  jax.numpy.zeros(()).block_until_ready()
  before = peak_rss_gb()
  if args.method == "sharded":
    model = hf_io.load_sharded(args.dir, mesh, param_dtype=args.param_dtype)
  else:
    cfg, params = hf_io.load_checkpoint(args.dir, param_dtype=args.param_dtype)
    model = hf_io.model_from_params(cfg, params, sharding.param_shardings(hf_io.abstract_model(cfg), mesh))
    del params
  params = jax.block_until_ready(hf_io.model_params(model))
  on_devices = sum(s.data.nbytes for x in jax.tree.leaves(params) for s in x.addressable_shards)
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  print(json.dumps(dict(process=jax.process_index(), method=args.method, before_gb=before,
                        peak_gb=peak_rss_gb(), on_devices_gb=on_devices / 1e9, model_gb=total / 1e9)), flush=True)


def run(args, method: str) -> list[dict]:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    coordinator = f"127.0.0.1:{s.getsockname()[1]}"
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={args.devices // args.processes}",
         "PAW_COORDINATOR": coordinator, "PAW_NUM_PROCESSES": str(args.processes)}
  command = [sys.executable, __file__, "--worker", "--method", method, "--dir", str(args.dir),
             "--param_dtype", args.param_dtype]
  procs = [subprocess.Popen(command, env={**env, "PAW_PROCESS_ID": str(p)}, stdout=subprocess.PIPE, text=True)
           for p in range(args.processes)]
  rows = []
  for proc in procs:
    out, _ = proc.communicate()
    if proc.returncode:
      raise SystemExit(f"load_memory: a worker failed with status {proc.returncode}")
    rows += [json.loads(line) for line in out.splitlines() if line.startswith("{")]
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="Qwen/Qwen2.5-7B-Instruct")
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--processes", type=int, default=2)
  parser.add_argument("--devices", type=int, default=8, help="fake CPU devices over all processes")
  parser.add_argument("--param_dtype", default="float32", help="the paper configs' fp32 master weights")
  parser.add_argument("--dir", type=pathlib.Path, default=None, help="where the random checkpoint is written")
  parser.add_argument("--methods", default="sharded,whole")
  parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--method", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    return worker(args)
  args.dir = args.dir or pathlib.Path("/tmp") / f"paw_load_{args.model.split('/')[-1]}_{args.layers}l"
  write_checkpoint(args.model, args.layers, args.dir)
  print(f"{args.model}, {args.layers} layers, {args.param_dtype} params, {args.processes} processes x "
        f"{args.devices // args.processes} CPU devices (fsdp over all {args.devices})")
  print(f"{'method':8} {'process':>7} {'model GB':>9} {'on its devices GB':>18} {'peak RSS - start GB':>20}")
  for method in args.methods.split(","):
    for row in sorted(run(args, method), key=lambda r: r["process"]):
      print(f"{method:8} {row['process']:>7} {row['model_gb']:>9.2f} {row['on_devices_gb']:>18.2f} "
            f"{row['peak_gb'] - row['before_gb']:>20.2f}")


if __name__ == "__main__":
  main()
