"""GPU benchmark on the Qwen2.5-1.5B shape with random weights: train-step MFU, PaW's cost, decode against the HBM
bound, and forward+backward against transformers on torch. Run it with `bench/gpu.sh` (bench/README.md).

  bench/gpu.sh [--rows 32] [--micro_batch 4] [--seq_len 2048] [--decode_batch 128] ...   # one H100 / H200
  bench/gpu.sh --smoke                                                                   # tiny shape, any device

Numerics as the paper configs train: float32 parameters and Adam state, bfloat16 matmuls, remat, scanned layers.
  train step  `learner.jit_update` with `rl_loss` (ppo_clip + KL; base: no WM term) on --rows rows of --seq_len in
              micro-batches of --micro_batch, laid out as `batch.pack_rows` lays them out (train_step_speed's
              synthetic rows) with every position a real token; tokens/s = rows x T / median step time.
              MFU = tokens/s x (6·N + 12·L·heads·head_dim·T) / the device's peak dense bf16 FLOP/s (PaLM's model
              FLOPs: N the parameters in matmuls; remat's recomputation does not count).
  PaW         the same step with PaW's clipped-MAE WM term on ~75% of the rows: step time and memory against base
              (the paper: +2.1% time, +2.4% memory). Memory: XLA's compiled estimate (arguments + temporaries +
              unaliased outputs), and the process's peak_bytes_in_use after each variant (monotone: base runs first).
  decode      `sampling.generate` at --decode_batch prompts of --prompt_len, no stop: tokens/s = B x (new - 1) /
              (t(new tokens) - t(1 token)), the prefill cancelling out. Bound = HBM bandwidth / the bytes a decode
              step must read: the weights as stored + keys and values of the filled slots at the mean position
              (P + new/2). The sampler reads the float32 master weights, as the RL loop's rollouts do.
  fwd+bwd     mean next-token NLL and its gradient, --fb_rows x --seq_len: JAX (`learner.token_logprobs`) against
              transformers' model on torch (bf16 autocast, gradient checkpointing as remat, its default attention),
              torch run first in a child process so that neither framework holds the other's GPU memory.
  attention   `model.attention_impl`: the rows above run "auto" (cuDNN flash attention on an NVIDIA GPU in bf16);
              the fwd+bwd again with "xla" gives the kernel's speed-up, and cuDNN against XLA on the same weights
              gives its numerics: token log-probs and gradients of --fb_rows right-padded rows (random lengths),
              and the last-slot logits of a cached prefill of left-padded prompts (the sampler's layout).
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # train_step_speed, beside this file

from paw_jax.tools.memory import ARCHITECTURES  # noqa: E402 (stdlib-only at import: safe before torch)

MODEL = "Qwen/Qwen2.5-1.5B-Instruct"
SMOKE_MODEL = dict(model_type="qwen2", vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
SMOKE_SHAPES = dict(rows=8, micro_batch=4, seq_len=128, obs_len=32, action_len=16, decode_batch=8, prompt_len=32,
                    new_tokens=16, fb_rows=4, steps=2)
HBM_TBPS = {"NVIDIA H100 80GB HBM3": 3.35, "NVIDIA H200": 4.8}  # SXM; keyed by device_kind like PEAK_BF16_TFLOPS


def parse_args(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="a tiny model and shapes: the whole script in a minute")
  parser.add_argument("--rows", type=int, default=32, help="train step: rows per optimizer step (the mini-batch)")
  parser.add_argument("--micro_batch", type=int, default=4)
  parser.add_argument("--seq_len", type=int, default=2048, help="padded row length T (train step and fwd+bwd)")
  parser.add_argument("--obs_len", type=int, default=256, help="most observation tokens of a row (PaW's target)")
  parser.add_argument("--action_len", type=int, default=256, help="most response tokens of a row")
  parser.add_argument("--kl_coef", type=float, default=0.01, help="the paper configs' KL to the reference")
  parser.add_argument("--decode_batch", type=int, default=128)
  parser.add_argument("--prompt_len", type=int, default=512)
  parser.add_argument("--new_tokens", type=int, default=256)
  parser.add_argument("--fb_rows", type=int, default=8, help="forward+backward rows (JAX and torch)")
  parser.add_argument("--steps", type=int, default=5, help="timed repetitions after a warm-up (median)")
  parser.add_argument("--peak_tflops", type=float, default=0.0, help="0: from the device kind where known")
  parser.add_argument("--hbm_tbps", type=float, default=0.0, help="0: from the device kind where known")
  parser.add_argument("--torch_only", action="store_true", help=argparse.SUPPRESS)  # the child process
  args = parser.parse_args(argv)
  if args.smoke:
    parser.set_defaults(**SMOKE_SHAPES)
    args = parser.parse_args(argv)
  return args


def median_time(fn: Callable[[], Any], sync: Callable[[Any], Any], steps: int) -> float:
  sync(fn())  # warm-up (and compile)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    sync(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


# --- torch (the child process) -----------------------------------------------------------------------------------
def torch_fwd_bwd(hf: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
  """tokens/s of transformers' forward+backward, or why it was skipped."""
  try:
    import torch
    import transformers
  except ImportError as error:
    return {"skipped": f"torch / transformers not importable ({error})"}
  if not torch.cuda.is_available() and not args.smoke:
    return {"skipped": f"torch {torch.__version__} sees no CUDA device"}
  device = "cuda" if torch.cuda.is_available() else "cpu"
  model = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**hf),
                                                        dtype=torch.float32).to(device)
  model.gradient_checkpointing_enable()
  model.train()
  tokens = torch.randint(0, hf["vocab_size"], (args.fb_rows, args.seq_len), device=device)

  def step():
    model.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16):
      loss = model(tokens, labels=tokens).loss
    loss.backward()
  sync = (lambda _: torch.cuda.synchronize()) if device == "cuda" else (lambda _: None)
  step_s = median_time(step, sync, args.steps)
  peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
  return {"tokens_s": args.fb_rows * args.seq_len / step_s, "peak": peak,
          "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
          "torch": torch.__version__, "attention": model.config._attn_implementation}


def run_torch_child(argv: list[str]) -> dict[str, Any]:
  run = subprocess.run([sys.executable, __file__, "--torch_only", *argv], capture_output=True, text=True)
  if run.returncode != 0:
    return {"skipped": f"torch process failed: {(run.stderr.strip().splitlines() or ['?'])[-1]}"}
  return json.loads(run.stdout.strip().splitlines()[-1])


# --- JAX ---------------------------------------------------------------------------------------------------------
def train_rows(args, vocab_size: int):
  """(base, PaW) mini-batches on the device, [rows / micro_batch, micro_batch, T], every position a real token."""
  import jax
  import numpy as np

  from paw_jax.batch import micro_batches
  from train_step_speed import synthetic_batch
  paw = synthetic_batch(argparse.Namespace(batch=args.rows, seq_len=args.seq_len, action_len=args.action_len,
                                           obs_len=args.obs_len, kl_coef=args.kl_coef), vocab_size,
                        np.random.default_rng(0))
  paw["mask_BxT"] = np.ones_like(paw["mask_BxT"])  # full rows: MFU without padding
  base = {**paw, "obs_mask_BxT": np.zeros_like(paw["obs_mask_BxT"]), "wm_weight_B": np.zeros_like(paw["wm_weight_B"])}
  return tuple(jax.device_put(micro_batches(b, args.micro_batch)) for b in (base, paw))


def train_step(graphdef, params, args, base_batch, paw_batch) -> dict[str, Any]:
  """train_step_speed.time_step for base then PaW; an out-of-memory step is reported, not raised."""
  from paw_jax.algos.losses import LossConfig
  from train_step_speed import time_step
  results = {}
  for name, wm_loss, batch in (("base", None, base_batch), ("paw", "cmae", paw_batch)):
    try:
      results[name] = time_step(graphdef, params, LossConfig(kl_coef=args.kl_coef), wm_loss, batch, args.steps)
    except Exception as error:  # noqa: BLE001 -- XLA's RESOURCE_EXHAUSTED has no narrower public type
      if "RESOURCE_EXHAUSTED" not in str(error) and "Out of memory" not in str(error):
        raise
      results[name] = {"oom": f"out of memory at micro_batch {args.micro_batch}: try --micro_batch "
                              f"{max(args.micro_batch // 2, 1)}"}
  return results


def decode(graphdef, params, cfg, args) -> float:
  """Decode tokens/s: generate's time for new_tokens minus its time for one token (the prefill)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from paw_jax.sampling import SamplingConfig, generate, stop_string_table
  rng = np.random.default_rng(1)
  prompt = jnp.asarray(rng.integers(0, cfg.vocab_size, (args.decode_batch, args.prompt_len)), jnp.int32)
  mask = jnp.ones(prompt.shape, bool)
  no_stop = jnp.asarray(stop_string_table([b"x"] * cfg.vocab_size, ()))
  no_eos = jnp.asarray([-1], jnp.int32)

  def run(new_tokens: int):
    return median_time(lambda: generate(graphdef, params, prompt, mask, jax.random.key(0), no_stop, no_eos, 0,
                                        SamplingConfig(temperature=1.0, max_new_tokens=new_tokens)),
                       jax.block_until_ready, args.steps)
  return args.decode_batch * (args.new_tokens - 1) / (run(args.new_tokens) - run(1))


def jax_fwd_bwd(graphdef, params, cfg, args) -> float:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from paw_jax.learner import token_logprobs
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (args.fb_rows, args.seq_len)), jnp.int32)
  mask = jnp.ones(tokens.shape, bool)
  grad = jax.jit(jax.grad(lambda p: -jnp.mean(token_logprobs(graphdef, p, tokens, mask)[0][:, 1:])))
  return args.fb_rows * args.seq_len / median_time(lambda: grad(params), jax.block_until_ready, args.steps)


def attention_check(cfg, params, args) -> dict[str, float]:
  """cuDNN flash attention against XLA's on the same weights: numerics on padded rows, and fwd+bwd tokens/s."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from paw_jax.learner import token_logprobs
  from paw_jax.models import hf_io
  from paw_jax.models.transformer import KVCache, positions_from_mask
  graphdefs = {impl: nnx.split(hf_io.abstract_model(cfg.replace(attention_impl=impl)))[0] for impl in ("xla", "cudnn")}
  rng = np.random.default_rng(3)
  rows, length = args.fb_rows, args.seq_len
  tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (rows, length)), jnp.int32)
  lengths = np.r_[length, rng.integers(2, length, rows - 1)]
  right_mask = jnp.asarray(np.arange(length)[None] < lengths[:, None])

  def loss(graphdef):
    return lambda p: -jnp.sum(token_logprobs(graphdef, p, tokens, right_mask, right_mask)[0]) / jnp.sum(right_mask)

  def prefill_logits(graphdef):
    """Last-slot logits after prefilling left-padded prompts into a cache (as `sampling.generate` does)."""
    prompt_mask = right_mask[:, ::-1]

    def run(p):
      model = nnx.merge(graphdef, p)
      hidden, _ = model.hidden_states(tokens, positions_from_mask(prompt_mask), prompt_mask,
                                      KVCache.init(cfg, rows, length + 8))
      return model.logits(hidden[:, -1:])
    return jax.jit(run)(params)

  out = {}
  (loss_x, grads_x), (loss_c, grads_c) = (jax.jit(jax.value_and_grad(loss(g)))(params) for g in graphdefs.values())
  out["loss_abs_diff"] = abs(float(loss_c) - float(loss_x))
  out["grad_rel_diff"] = max(float(jnp.max(jnp.abs(c - x)) / (jnp.max(jnp.abs(x)) + 1e-12))
                             for x, c in zip(jax.tree.leaves(grads_x), jax.tree.leaves(grads_c)))
  out["prefill_logits_max_diff"] = float(jnp.max(jnp.abs(prefill_logits(graphdefs["cudnn"])
                                                         - prefill_logits(graphdefs["xla"]))))
  out["xla_fwd_bwd_tokens_s"] = jax_fwd_bwd(graphdefs["xla"], params, cfg, args)
  return out


def decode_bound_bytes(cfg, args) -> float:
  """Bytes one decode step must read: every weight once, and the keys and values of the filled slots."""
  import numpy as np
  weights = cfg.num_params * np.dtype(cfg.param_jnp_dtype).itemsize
  slots = args.prompt_len + args.new_tokens / 2
  kv = 2 * cfg.num_layers * args.decode_batch * slots * cfg.num_kv_heads * cfg.head_dim
  return weights + kv * np.dtype(cfg.compute_jnp_dtype).itemsize


def report(cfg, args, kind: str, peak_tflops, hbm_tbps, train, decode_tps, jax_fb, torch_fb, attn) -> str:
  pct = lambda x: f"{x:.1%}"  # noqa: E731
  gib = lambda b: "n/a" if b is None else f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"  # noqa: E731
  matmul_params = cfg.num_params - (0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size)
  flops_per_token = 6 * matmul_params + 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * args.seq_len
  tokens = args.rows * args.seq_len
  lines = [f"device: {kind}; peak bf16 {f'{peak_tflops:g} TFLOP/s' if peak_tflops else 'unknown'}, HBM "
           f"{f'{hbm_tbps:g} TB/s' if hbm_tbps else 'unknown'}",
           f"model: {cfg.model_type} {cfg.num_params / 1e6:,.1f}M params, {cfg.num_layers} layers, random weights; "
           f"{cfg.param_dtype} params, {cfg.compute_dtype} compute, remat={cfg.remat}",
           f"train step: {args.rows} rows x T={args.seq_len} in micro-batches of {args.micro_batch}; decode: batch "
           f"{args.decode_batch}, prompt {args.prompt_len}, {args.new_tokens} new; fwd+bwd: {args.fb_rows} x "
           f"{args.seq_len}", "", "| measurement | value | goal |", "|---|---:|---|"]
  base, paw = train["base"], train["paw"]
  for name, r in (("base", base), ("PaW", paw)):
    if "oom" in r:
      lines.append(f"| train step ({name}) | {r['oom']} | |")
      continue
    tps = tokens / r["step_s"]
    lines.append(f"| train step ({name}): step, tokens/s | {r['step_s'] * 1e3:.1f} ms, {tps:,.0f} tok/s | |")
    mfu = pct(tps * flops_per_token / (peak_tflops * 1e12)) if peak_tflops else "n/a (peak unknown)"
    lines.append(f"| train step ({name}): MFU | {mfu} | >= 40% |")
    lines.append(f"| train step ({name}): memory, XLA est. / process peak | {gib(r['xla'])} / {gib(r['peak'])} | |")
  if "oom" not in base and "oom" not in paw:
    lines.append(f"| PaW vs base: step time | {paw['step_s'] / base['step_s'] - 1:+.1%} | paper +2.1% |")
    lines.append(f"| PaW vs base: memory (XLA est.) | {paw['xla'] / base['xla'] - 1:+.1%} | paper +2.4% |")
  bound_tps = args.decode_batch * hbm_tbps * 1e12 / decode_bound_bytes(cfg, args) if hbm_tbps else None
  lines.append(f"| decode tokens/s, batch {args.decode_batch} | {decode_tps:,.0f} | |")
  lines.append(f"| decode vs HBM bound ({f'{bound_tps:,.0f} tok/s' if bound_tps else 'bandwidth unknown'}) | "
               f"{pct(decode_tps / bound_tps) if bound_tps else 'n/a'} | >= 50% |")
  lines.append(f"| fwd+bwd tokens/s, JAX | {jax_fb:,.0f} | |")
  if "skipped" in torch_fb:
    lines.append(f"| fwd+bwd tokens/s, torch | skipped: {torch_fb['skipped']} | |")
  else:
    lines.append(f"| fwd+bwd tokens/s, torch {torch_fb['torch']} ({torch_fb['attention']}, {torch_fb['device']}) | "
                 f"{torch_fb['tokens_s']:,.0f} (JAX/torch {jax_fb / torch_fb['tokens_s']:.2f}) | |")
  if "skipped" in attn:
    lines.append(f"| attention cuDNN vs XLA | skipped: {attn['skipped']} | |")
  else:
    lines.append(f"| fwd+bwd tokens/s, JAX with XLA attention | {attn['xla_fwd_bwd_tokens_s']:,.0f} (auto/xla "
                 f"{jax_fb / attn['xla_fwd_bwd_tokens_s']:.2f}) | |")
    lines.append(f"| cuDNN vs XLA (bf16): mean NLL abs diff, right-padded rows | {attn['loss_abs_diff']:.2e} | "
                 "<= 2e-2 |")
    lines.append(f"| cuDNN vs XLA (bf16): max grad diff / max grad | {attn['grad_rel_diff']:.2e} | <= 5e-2 |")
    lines.append(f"| cuDNN vs XLA (bf16): prefill last logits, left-padded, max abs diff | "
                 f"{attn['prefill_logits_max_diff']:.2e} | <= 0.1 |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  args = parse_args(argv)
  hf = SMOKE_MODEL if args.smoke else ARCHITECTURES[MODEL]
  if args.torch_only:
    print(json.dumps(torch_fwd_bwd(hf, args)))
    return
  torch_fb = run_torch_child(argv)  # first: JAX then takes the device's memory
  import jax
  from flax import nnx

  from paw_jax.models.config import ModelConfig
  from paw_jax.models.transformer import Decoder, flash_attention_applies
  from train_step_speed import PEAK_BF16_TFLOPS
  cfg = ModelConfig.from_hf(hf, param_dtype="float32", compute_dtype="bfloat16", remat=True, scan_layers=True)
  kind = jax.devices()[0].device_kind
  graphdef, params = nnx.split(Decoder(cfg, rngs=nnx.Rngs(0)))
  train = train_step(graphdef, params, args, *train_rows(args, cfg.vocab_size))
  decode_tps = decode(graphdef, params, cfg, args)
  jax_fb = jax_fwd_bwd(graphdef, params, cfg, args)
  on_gpu = flash_attention_applies(cfg, cfg.compute_jnp_dtype)
  attn = attention_check(cfg, params, args) if on_gpu else {"skipped": f"no cuDNN flash attention on {kind}"}
  print(report(cfg, args, kind, args.peak_tflops or PEAK_BF16_TFLOPS.get(kind), args.hbm_tbps or HBM_TBPS.get(kind),
               train, decode_tps, jax_fb, torch_fb, attn))


if __name__ == "__main__":
  main(sys.argv[1:])
