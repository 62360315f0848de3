"""The train step's matmuls alone, XLA (JAX) vs torch, one config: GFLOP/s per projection and pass on the CPU.

  python bench/gemm_speed.py [--model smollm2] [--batch 4] [--train_len 256]

`bench/model_speed.py`'s forward+backward is ~85% matmuls on the CPU. This times each of them in isolation, in the
layouts the step uses: rows R = batch * (train_len - 1) flattened ([R, D] activations, `transformer.dense`), a
projection D -> F run forward ([R, D] @ [D, F]), for the input gradient ([R, F] @ [D, F]^T) and for the weight
gradient ([R, D]^T @ [R, F]); a tied LM head's weight is the [V, D] embedding. The last lines sum each library's
time over the step's count of every matmul: the step's matmul time if each ran as fast as it does alone.
Attention's batched matmuls are left out (~5% of the FLOPs). Not a test: record the rows in bench/RESULTS.md with
the device named.
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import torch

from model_speed import best_of  # bench/ is the script's directory, first on sys.path
from paw_jax.models import hf_io


def step_matmuls(cfg, rows: int) -> list[tuple[str, str, int, int, int, str, int]]:
  """(name, pass, M, K, N, layout, count per step): out[M, N] = a[M, K] @ b[K, N], b given as "NN" [K, N] or "NT"
  [N, K]; the weight gradient's a is given as [K, M] ("TN")."""
  d, f, v, layers = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.num_layers
  q_width, kv_width = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  projections = [("q", d, q_width, 1), ("k, v", d, kv_width, 2), ("o", q_width, d, 1), ("gate, up", d, f, 2),
                 ("down", f, d, 1)]
  matmuls = []
  for name, fan_in, fan_out, per_layer in projections:
    count = per_layer * layers
    matmuls += [(name, "forward", rows, fan_in, fan_out, "NN", count),
                (name, "input grad", rows, fan_out, fan_in, "NT", count),
                (name, "weight grad", fan_in, rows, fan_out, "TN", count)]
  if cfg.tie_word_embeddings:  # the head is the [V, D] embedding
    return matmuls + [("LM head", "forward", rows, d, v, "NT", 1), ("LM head", "input grad", rows, v, d, "NN", 1),
                      ("LM head", "weight grad", v, rows, d, "TN", 1)]
  return matmuls + [("LM head", "forward", rows, d, v, "NN", 1), ("LM head", "input grad", rows, v, d, "NT", 1),
                    ("LM head", "weight grad", d, rows, v, "TN", 1)]


def operands(m: int, k: int, n: int, layout: str) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.RandomState(0)
  a = rng.randn(*((k, m) if layout == "TN" else (m, k))).astype(np.float32)
  b = rng.randn(*((n, k) if layout == "NT" else (k, n))).astype(np.float32)
  return a, b


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="smollm2")
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--train_len", type=int, default=256)
  args = parser.parse_args()
  cfg, _ = hf_io.load_checkpoint(args.model)
  rows = args.batch * (args.train_len - 1)
  jax_fns = {"NN": jax.jit(lambda a, b: a @ b), "NT": jax.jit(lambda a, b: a @ b.T),
             "TN": jax.jit(lambda a, b: a.T @ b)}
  torch_fns = {"NN": lambda a, b: a @ b, "NT": lambda a, b: a @ b.t(), "TN": lambda a, b: a.t() @ b}
  print(f"{cfg.model_type} {cfg.num_params / 1e6:.0f}M, fp32, {rows} rows, device: {jax.devices()[0].device_kind}, "
        f"torch threads {torch.get_num_threads()}")
  print(f"| {'matmul':<8} | {'pass':<11} | {'M x K x N':<18} | {'count':>5} | {'GFLOP/step':>10} | "
        f"{'XLA GF/s':>8} | {'torch GF/s':>10} |")
  print(f"|{'-' * 10}|{'-' * 13}|{'-' * 20}|{'-' * 7}|{'-' * 12}|{'-' * 10}|{'-' * 12}|")
  totals = {"flop": 0.0, "xla": 0.0, "torch": 0.0}
  for name, step_pass, m, k, n, layout, count in step_matmuls(cfg, rows):
    a, b = operands(m, k, n, layout)
    a_jax, b_jax = jnp.asarray(a), jnp.asarray(b)
    a_torch, b_torch = torch.from_numpy(a), torch.from_numpy(b)
    xla_s = best_of(lambda: jax.block_until_ready(jax_fns[layout](a_jax, b_jax)), repeats=9)
    torch_s = best_of(lambda: torch_fns[layout](a_torch, b_torch), repeats=9)
    flop = 2.0 * m * k * n
    totals["flop"] += count * flop
    totals["xla"] += count * xla_s
    totals["torch"] += count * torch_s
    print(f"| {name:<8} | {step_pass:<11} | {f'{m} x {k} x {n}':<18} | {count:>5} | {count * flop / 1e9:>10.1f} | "
          f"{flop / xla_s / 1e9:>8.0f} | {flop / torch_s / 1e9:>10.0f} |")
  print(f"all {totals['flop'] / 1e9:.0f} GFLOP per step: XLA {totals['xla']:.2f} s "
        f"({totals['flop'] / totals['xla'] / 1e9:.0f} GF/s), torch {totals['torch']:.2f} s "
        f"({totals['flop'] / totals['torch'] / 1e9:.0f} GF/s); XLA/torch time {totals['xla'] / totals['torch']:.2f}")


if __name__ == "__main__":
  main()
