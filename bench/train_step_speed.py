"""Speed of the jitted RL train step, base algorithm vs PaW: step time, tokens/s, MFU, memory, PaW's overhead.

  python bench/train_step_speed.py [--model scratch|smollm2|PATH] [--batch 64] [--micro_batch 8] [--seq_len 1024]
                                   [--obs_len 256] [--action_len 128] [--steps 10] [--dtype bfloat16] [--peak_tflops X]

One optimizer step (`learner.jit_update` with `rl_loss`) on a synthetic mini-batch of --batch rows laid out as
`batch.pack_rows` lays them out: [prompt | response | header + next observation | padding], each length drawn
per row between half and all of its budget. Base: no WM loss (`rl_loss(..., wm_loss=None)`) on the same rows cut after the response
(as the trainer packs them without PaW), the advantage being just a per-row number (GRPO and GiGPO cost the same
here); PaW: `wm_loss="cmae"`, a positive weight on ~75% of the rows (α = 0.75). Both use the same padded length T, so
the overhead shown is PaW's loss term; appended observations cost more only when they push rows into a longer T
bucket. tokens/s counts the PaW rows' real tokens for both.

Model FLOPs per real token, forward + backward (PaLM appendix B): 6·N + 12·L·(heads·head_dim)·T, with N the
parameters that enter matmuls (all but the input embedding table, a lookup; a tied table counts once, as the LM
head) and T the padded row length (attention is dense over it). MFU = real tokens · that / step time / peak FLOP/s.
Step time: median of --steps steps after a warm-up step, the batch already on the device. Memory: XLA's compiled
estimate (arguments + outputs − aliased + temporaries) per step, and the backend's peak_bytes_in_use where it reports
one (process-wide: base runs first, so PaW's reading is the larger of the two). Not a test: record the table in
bench/RESULTS.md with the device named.
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from paw_jax.algos.losses import LossConfig
from paw_jax.batch import micro_batches
from paw_jax.config import OptimConfig
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig
from paw_jax.models.transformer import Decoder
from paw_jax.learner import init_state, jit_update, make_optimizer, rl_loss

DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "default.py"
PEAK_BF16_TFLOPS = {"NVIDIA H100 80GB HBM3": 989.0, "NVIDIA H200": 989.0}  # dense, SXM; keyed by device_kind
HEADER_LEN = 3  # "\nObservation: ": context between the response and the observation (no loss)


def load_model(args) -> Decoder:
  numerics = dict(param_dtype="float32", compute_dtype=args.dtype, remat=args.remat)
  if args.model != "scratch":
    return hf_io.load_model(args.model, **numerics)
  default = ConfigFileFlagParser("config").parse(str(DEFAULT_CONFIG))
  cfg = ModelConfig(vocab_size=args.vocab_size or default.tokenizer.vocab_size, tie_word_embeddings=True,
                    **default.model.scratch.to_dict(), **numerics)
  return Decoder(cfg, rngs=nnx.Rngs(0))


def synthetic_batch(args, vocab_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
  rows, length = args.batch, args.seq_len
  prompt_budget = length - args.action_len - HEADER_LEN - args.obs_len
  if prompt_budget < 2:
    raise SystemExit(f"--seq_len {length} leaves no room for a prompt next to --action_len and --obs_len")
  draw = lambda budget: rng.integers(max(budget // 2, 1), budget + 1, rows)[:, None]  # noqa: E731
  prompt_Bx1, action_Bx1, obs_Bx1 = draw(prompt_budget), draw(args.action_len), draw(args.obs_len)
  t_1xT = np.arange(length)[None]
  obs_start_Bx1 = prompt_Bx1 + action_Bx1 + HEADER_LEN
  action_mask_BxT = (t_1xT >= prompt_Bx1) & (t_1xT < prompt_Bx1 + action_Bx1)
  old_logp_BxT = np.where(action_mask_BxT, -rng.exponential(0.5, (rows, length)), 0.0).astype(np.float32)
  selected_B = rng.random(rows) < 0.75
  batch = {
      "tokens_BxT": rng.integers(0, vocab_size, (rows, length), dtype=np.int32),
      "mask_BxT": t_1xT < obs_start_Bx1 + obs_Bx1,
      "action_mask_BxT": action_mask_BxT,
      "obs_mask_BxT": (t_1xT >= obs_start_Bx1) & (t_1xT < obs_start_Bx1 + obs_Bx1),
      "old_logp_BxT": old_logp_BxT,
      "entropy_BxT": np.where(action_mask_BxT, rng.exponential(1.0, (rows, length)), 0.0).astype(np.float32),
      "valid_B": np.ones(rows, bool),
      "advantage_B": rng.standard_normal(rows).astype(np.float32),
      "wm_weight_B": (selected_B / max(selected_B.sum(), 1)).astype(np.float32),
  }
  if args.kl_coef:
    batch["ref_logp_BxT"] = old_logp_BxT + np.float32(0.05) * rng.standard_normal(old_logp_BxT.shape, np.float32)
  return batch


def time_step(graphdef, params, loss_cfg: LossConfig, wm_loss: str | None, batch,
              steps: int) -> dict[str, float | None]:
  optimizer = make_optimizer(OptimConfig())
  state = init_state(jax.tree.map(jnp.copy, params), optimizer, with_ref=False)  # the step donates its state
  start = time.perf_counter()
  step = jit_update(graphdef, optimizer, rl_loss(loss_cfg, wm_loss)).lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  mem = step.memory_analysis()
  state, _ = jax.block_until_ready(step(state, batch))
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, _ = jax.block_until_ready(step(state, batch))
    times.append(time.perf_counter() - start)
  stats = jax.devices()[0].memory_stats() or {}
  return {"step_s": statistics.median(times), "compile_s": compile_s, "peak": stats.get("peak_bytes_in_use"),
          "xla": mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
          + mem.temp_size_in_bytes}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="scratch", help="'scratch' (configs/default.py), an alias or a path")
  parser.add_argument("--vocab_size", type=int, default=0, help="scratch only; 0: the default config's")
  parser.add_argument("--batch", type=int, default=64, help="rows per optimizer step (the mini-batch)")
  parser.add_argument("--micro_batch", type=int, default=8)
  parser.add_argument("--seq_len", type=int, default=1024, help="padded row length T")
  parser.add_argument("--obs_len", type=int, default=256, help="most observation tokens of a row")
  parser.add_argument("--action_len", type=int, default=128, help="most response tokens of a row")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--dtype", default="float32", help="compute dtype; parameters stay float32")
  parser.add_argument("--remat", action="store_true")
  parser.add_argument("--kl_coef", type=float, default=0.0, help="> 0 adds the KL term and ref_logp_BxT")
  parser.add_argument("--peak_tflops", type=float, default=0.0, help="0: from the device kind where known")
  args = parser.parse_args()
  model = load_model(args)
  cfg = model.cfg
  graphdef, params = nnx.split(model)
  del model
  batch = synthetic_batch(args, cfg.vocab_size, np.random.default_rng(0))
  # Without PaW a row ends at its response (`pack_rows(..., with_observation=False)`), in the same T bucket.
  response_end_Bx1 = (np.arange(args.seq_len)[None] * batch["action_mask_BxT"]).max(1, keepdims=True) + 1
  base_batch = {**batch, "mask_BxT": np.arange(args.seq_len)[None] < response_end_Bx1,
                "obs_mask_BxT": np.zeros_like(batch["obs_mask_BxT"]),
                "wm_weight_B": np.zeros_like(batch["wm_weight_B"])}
  real_tokens = int(batch["mask_BxT"].sum())
  on_device = lambda b: jax.device_put(micro_batches(b, args.micro_batch))  # noqa: E731
  base = time_step(graphdef, params, LossConfig(kl_coef=args.kl_coef), None, on_device(base_batch), args.steps)
  paw = time_step(graphdef, params, LossConfig(kl_coef=args.kl_coef), "cmae", on_device(batch), args.steps)

  kind = jax.devices()[0].device_kind
  peak_tflops = args.peak_tflops or PEAK_BF16_TFLOPS.get(kind)
  matmul_params = cfg.num_params - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
  flops_per_token = 6 * matmul_params + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * args.seq_len
  print(f"{args.model} ({cfg.model_type}, {cfg.num_params / 1e6:.1f}M params, vocab {cfg.vocab_size}), compute "
        f"{args.dtype}{', remat' if args.remat else ''}, device: {kind}; {args.batch} rows x {args.seq_len} in "
        f"micro-batches of {args.micro_batch}: {real_tokens} real tokens ({batch['action_mask_BxT'].sum()} action, "
        f"{batch['obs_mask_BxT'].sum()} observation), {flops_per_token / 1e6:.2f} MFLOPs/token, peak "
        f"{f'{peak_tflops:g} TFLOP/s' if peak_tflops else 'unknown'}")
  mib = lambda b: f"{b / 2**20:.1f} MiB" if b is not None else "n/a"  # noqa: E731
  print("| variant | step ms | tokens/s | MFU | XLA memory est. | peak memory | compile s |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  for name, r in (("base (no WM term)", base), ("PaW (cmae)", paw)):
    mfu = f"{real_tokens * flops_per_token / r['step_s'] / (peak_tflops * 1e12):.1%}" if peak_tflops else "n/a"
    print(f"| {name} | {r['step_s'] * 1e3:.1f} | {real_tokens / r['step_s']:,.0f} | {mfu} | {mib(r['xla'])} | "
          f"{mib(r['peak'])} | {r['compile_s']:.1f} |")
  more = lambda k: f"{paw[k] / base[k] - 1:+.1%}" if base[k] else "n/a"  # noqa: E731
  print(f"| PaW overhead | {more('step_s')} | | | {more('xla')} | {more('peak')} | |")


if __name__ == "__main__":
  main()
