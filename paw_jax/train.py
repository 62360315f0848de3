"""The host loop: rollouts -> batch (advantages, PaW weights) -> jitted updates -> metrics, eval, checkpoints.

Everything random in an update derives from (seed, update index) and the tasks from the update index, so a run
killed after a checkpoint resumes at the same step and replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from paw_jax import sharding
from paw_jax.algos.advantages import AdvantageConfig
from paw_jax.algos.losses import LossConfig
from paw_jax.algos.paw import PawConfig
from paw_jax.batching import BatchConfig, build_batch, micro_batches, pack_rows
from paw_jax.checkpoint import Checkpointer
from paw_jax.envs import env_class, make
from paw_jax.envs.base import Task
from paw_jax.envs.pool import EnvPool
from paw_jax.metrics import MetricsWriter, progress
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder
from paw_jax.prompts import PromptConfig
from paw_jax.rollout import episode_metrics, run_episodes
from paw_jax.sampling import Sampler, SamplingConfig
from paw_jax.scratch import format_warmup_turns, train_env_tokenizer
from paw_jax.train_step import OptimConfig, TrainState, init_state, jit_logprobs, jit_update, make_optimizer, rl_loss, \
    sft_loss


def _dataclass_from(cls, config: ml_collections.ConfigDict, **extra):
  fields = {f.name for f in dataclasses.fields(cls)}
  return cls(**{**{k: v for k, v in config.to_dict().items() if k in fields}, **extra})


@dataclasses.dataclass
class Run:
  """Everything built once from the config."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  tokenizer: Tokenizer
  graphdef: nnx.GraphDef
  state: TrainState
  sampler: Sampler
  prompt_cfg: PromptConfig
  batch_cfg: BatchConfig
  loss_cfg: LossConfig
  paw_cfg: PawConfig | None
  env_cls: type


def load_tokenizer(config, workdir: pathlib.Path, prompt_cfg: PromptConfig) -> Tokenizer:
  saved = workdir / "tokenizer"
  if (saved / "tokenizer.json").is_file():
    return Tokenizer.load(saved)
  path = config.tokenizer.path or config.model.path
  if path:
    tokenizer = Tokenizer.load(path)
  else:
    env = make(config.env.name, **config.env.kwargs.to_dict())
    tokenizer = train_env_tokenizer(env, prompt_cfg, config.tokenizer.vocab_size, config.tokenizer.corpus_episodes,
                                    config.seed)
    env.close()
  tokenizer.save(saved)  # a resumed run must see the very same vocabulary
  return tokenizer


def load_model(config, tokenizer: Tokenizer, mesh) -> Decoder:
  numerics = dict(param_dtype=config.model.param_dtype, compute_dtype=config.model.compute_dtype,
                  remat=config.model.remat, scan_layers=config.model.scan_layers)
  if config.model.path:
    cfg, params = hf_io.load_checkpoint(config.model.path, **numerics)
  else:
    scratch = config.model.scratch.to_dict()
    cfg = ModelConfig(vocab_size=tokenizer.vocab_size, tie_word_embeddings=True,
                      eos_token_id=tokenizer.eos_token_id, **scratch, **numerics)
    params = hf_io.model_params(Decoder(cfg, rngs=nnx.Rngs(config.seed)))  # small: placed by shardings below
  return hf_io.model_from_params(cfg, params, sharding.param_shardings(hf_io.abstract_model(cfg), mesh))


def build_run(config: ml_collections.ConfigDict) -> Run:
  workdir = pathlib.Path(config.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  mesh = sharding.make_mesh(**config.mesh.to_dict())
  prompt_cfg = PromptConfig(history=config.prompt.history, think=config.prompt.think,
                            list_admissible=config.prompt.list_admissible, system=config.prompt.system or None,
                            obs_header=config.batch.obs_header)
  tokenizer = load_tokenizer(config, workdir, prompt_cfg)
  model = load_model(config, tokenizer, mesh)
  graphdef, params = nnx.split(model)
  loss_cfg = _dataclass_from(LossConfig, config.algo.loss,
                             wm_loss=config.paw.wm_loss if config.paw.enabled else None)
  optimizer = make_optimizer(_dataclass_from(OptimConfig, config.optim))
  state = init_state(params, optimizer, with_ref=loss_cfg.kl_coef != 0)
  sampler = Sampler(graphdef, tokenizer.token_bytes(), eos_ids=tokenizer.stop_token_ids,
                    pad_id=tokenizer.pad_token_id, stop_strings=(), max_prompt_len=config.sampling.max_prompt_len,
                    vocab_size=model.cfg.vocab_size)
  paw_cfg = _dataclass_from(PawConfig, config.paw) if config.paw.enabled else None
  return Run(config, workdir, tokenizer, graphdef, state, sampler, prompt_cfg,
             _dataclass_from(BatchConfig, config.batch), loss_cfg, paw_cfg, env_class(config.env.name))


def sampling_config(config, eval_mode: bool) -> SamplingConfig:
  s = config.sampling
  return SamplingConfig(temperature=s.eval_temperature if eval_mode else s.temperature, top_k=s.top_k,
                        top_p=s.top_p, max_new_tokens=s.max_new_tokens)


def mini_batches(batch: dict[str, np.ndarray], mini_batch: int, micro_batch: int):
  """Consecutive mini-batches of exactly `mini_batch` rows (the last padded with empty rows: static shapes)."""
  num_rows = len(batch["valid_B"])
  padded = -(-num_rows // mini_batch) * mini_batch
  full = {k: np.concatenate([v, np.zeros((padded - num_rows, *v.shape[1:]), v.dtype)]) for k, v in batch.items()}
  for start in range(0, padded, mini_batch):
    yield micro_batches({k: v[start:start + mini_batch] for k, v in full.items()}, micro_batch)


def reduce_update_metrics(step_metrics: list[dict[str, Any]]) -> dict[str, float]:
  """Host reduction: token means are averaged over mini-batches; WM sums become ratios."""
  if not step_metrics:
    return {}
  summed = {k: float(sum(np.asarray(m[k]) for m in step_metrics)) for k in step_metrics[0]}
  n = len(step_metrics)
  out = {f"train/{k}": v / n for k, v in summed.items() if not k.startswith("wm/")}
  out["train/skipped"] = summed["skipped"]
  if "wm/rows" in summed:
    out["paw/wm_loss"] = summed["wm/loss_sum"] / max(summed["wm/rows"], 1)
    out["paw/clipped_ratio"] = summed["wm/clipped_tokens"] / max(summed["wm/obs_tokens"], 1)
  return out


def format_warmup(run: Run, steps: int) -> None:
  """SFT on random admissible actions: teaches a from-scratch model the reply format (no task signal)."""
  env = make(run.config.env.name, **run.config.env.kwargs.to_dict())
  turns = format_warmup_turns(env, run.tokenizer, run.prompt_cfg, episodes=64, seed=run.config.seed + 1)
  env.close()
  batch = pack_rows(turns, run.tokenizer, run.batch_cfg)
  warmup_optim = _dataclass_from(OptimConfig, run.config.optim, learning_rate=run.config.train.format_warmup_lr)
  update = jit_update(run.graphdef, make_optimizer(warmup_optim), sft_loss)
  rng = np.random.default_rng(run.config.seed)
  mb = run.batch_cfg.micro_batch * 2  # small steps: the format is simple, many updates learn it fastest
  bar = progress(steps, desc="format warm-up")
  for _ in range(steps):
    rows = rng.choice(len(turns), size=min(mb, len(turns)), replace=False)
    minibatch = next(mini_batches({k: v[rows] for k, v in batch.items()}, mb, run.batch_cfg.micro_batch))
    run.state, metrics = update(run.state, minibatch)
    bar.update()
  bar.close()
  # RL starts from the warmed-up policy: fresh optimizer state, and that policy as the KL reference.
  run.state = init_state(run.state.params, make_optimizer(_dataclass_from(OptimConfig, run.config.optim)),
                         with_ref=run.state.ref_params is not None)
  print(f"format warm-up: {steps} steps, final NLL {float(metrics['sft/nll']):.3f}", flush=True)


def evaluate(run: Run, pool: EnvPool) -> dict[str, float]:
  """Greedy-ish (eval temperature) play of a fixed task set, one episode per task."""
  c = run.config
  tasks = [Task(c.env.eval_split, i) for i in range(c.train.eval_episodes)]
  _, episodes, _ = run_episodes(pool, run.env_cls, run.sampler, run.state.params, run.tokenizer, tasks, 1,
                                run.prompt_cfg, sampling_config(c, eval_mode=True),
                                jax.random.key(c.seed + 7919), int(run.state.step))
  return episode_metrics(episodes, "eval")


def rl_update(run: Run, pool: EnvPool, update_index: int, update_fn, logprob_fn) -> dict[str, float]:
  c = run.config
  timings: dict[str, float] = {}
  rng = jax.random.fold_in(jax.random.key(c.seed), update_index)
  tasks = [Task(c.env.train_split, update_index * c.algo.groups_per_update + g) for g in range(c.algo.groups_per_update)]
  start = time.perf_counter()
  turns, episodes, stats = run_episodes(pool, run.env_cls, run.sampler, run.state.params, run.tokenizer, tasks,
                                        c.algo.group_size, run.prompt_cfg, sampling_config(c, eval_mode=False), rng,
                                        int(run.state.step))
  timings["time/rollout"] = time.perf_counter() - start
  timings["time/sample"], timings["time/env"] = stats.sample_s, stats.env_s
  start = time.perf_counter()
  adv_cfg = _dataclass_from(AdvantageConfig, c.algo.adv)
  batch, paw_metrics = build_batch(turns, episodes, run.tokenizer, run.batch_cfg, c.algo.advantage, adv_cfg,
                                   run.paw_cfg, run.env_cls.r_max)
  fill_logprobs(run, batch, logprob_fn)
  # Each mini-batch is its own optimizer step with a full token-mean L_RL, while the PaW weights sum over the whole
  # update; scaling by the mini-batch count keeps Eq. 11's RL : WM balance in every step.
  batch["wm_weight_B"] = batch["wm_weight_B"] * -(-len(batch["valid_B"]) // c.batch.mini_batch)
  step_metrics = []
  for _ in range(c.algo.epochs):
    for minibatch in mini_batches(batch, c.batch.mini_batch, c.batch.micro_batch):
      run.state, metrics = update_fn(run.state, minibatch)
      step_metrics.append(metrics)
  step_metrics = jax.device_get(step_metrics)
  timings["time/train"] = time.perf_counter() - start
  return {**episode_metrics(episodes, "rollout"), **reduce_update_metrics(step_metrics), **paw_metrics, **timings,
          "rollout/response_tokens": stats.response_tokens / max(stats.turns, 1), "rollout/rows": float(len(turns))}


def fill_logprobs(run: Run, batch: dict[str, np.ndarray], logprob_fn) -> None:
  """Old log-probs recomputed by the trainer (config algo.old_logp='trainer') and reference log-probs for KL."""
  need_old = run.config.algo.old_logp == "trainer"
  if not need_old and run.state.ref_params is None:
    return
  micro = run.batch_cfg.micro_batch
  old, ref = [], []  # device arrays: dispatched back to back, fetched once below
  for start in range(0, len(batch["valid_B"]), micro):
    tokens, mask = batch["tokens_BxT"][start:start + micro], batch["mask_BxT"][start:start + micro]
    if need_old:
      old.append(logprob_fn(run.state.params, tokens, mask))
    if run.state.ref_params is not None:
      ref.append(logprob_fn(run.state.ref_params, tokens, mask))
  old, ref = jax.device_get((old, ref))
  if need_old:
    batch["old_logp_BxT"] = np.concatenate(old).astype(np.float32)
  batch["ref_logp_BxT"] = np.concatenate(ref).astype(np.float32) if ref else np.zeros_like(batch["old_logp_BxT"])

def train(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Runs (or resumes) training; returns the last evaluation's metrics."""
  if config.algo.advantage == "gae":
    raise ValueError("algo.advantage='gae' (PPO) needs a critic, which this trainer does not build yet; "
                     "use grpo, gigpo or rloo")
  run = build_run(config)
  c = config
  checkpointer = Checkpointer(run.workdir / "checkpoints", keep=c.train.keep_checkpoints,
                              save_every=c.train.checkpoint_every)
  writer = MetricsWriter(run.workdir)
  start_update = 0
  if checkpointer.latest_step() is not None:
    run.state, meta = checkpointer.restore(jax.eval_shape(lambda: run.state))
    start_update = int(meta["next_update"])
    print(f"resumed from {run.workdir / 'checkpoints'} at update {start_update}")
  elif c.train.format_warmup_steps:
    format_warmup(run, c.train.format_warmup_steps)
  update_fn = jit_update(run.graphdef, make_optimizer(_dataclass_from(OptimConfig, c.optim)), *rl_loss(run.loss_cfg))
  logprob_fn = jit_logprobs(run.graphdef)
  last_eval: dict[str, float] = {}
  pool = EnvPool(c.env.name, c.env.num_envs, c.env.kwargs.to_dict(), step_timeout_s=c.env.step_timeout_s,
                 reset_timeout_s=c.env.reset_timeout_s, in_process=c.env.in_process)
  bar = progress(c.train.updates, initial=start_update, desc="updates")
  with pool:
    for update_index in range(start_update, c.train.updates):
      metrics = rl_update(run, pool, update_index, update_fn, logprob_fn)
      last = update_index + 1 == c.train.updates
      if (update_index + 1) % c.train.eval_every == 0 or last:
        last_eval = evaluate(run, pool)
        metrics.update(last_eval)
      writer.write(update_index + 1, metrics)
      checkpointer.save(update_index + 1, run.state, {"next_update": update_index + 1}, force=last)
      bar.update({k: metrics[k] for k in ("rollout/success", "eval/success") if k in metrics})
  bar.close()
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if c.train.export_hf:
    hf_io.save_model(nnx.merge(run.graphdef, run.state.params), run.workdir / "hf_export")
    run.tokenizer.save(run.workdir / "hf_export")
  return last_eval
