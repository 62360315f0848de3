"""The host loop: rollouts -> batch (advantages, PaW weights) -> jitted updates -> metrics, eval, checkpoints.

Everything random in an update derives from (seed, update index) and the tasks from the update index, so a run
killed after a checkpoint resumes at the same step and replays exactly what the uninterrupted run would have done.
"""
from __future__ import annotations

import collections
import dataclasses
import pathlib
import time
from typing import Any, Callable, NamedTuple

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
from paw_jax.critic import critic_from_policy, critic_loss, jit_values
from paw_jax.envs import env_class, make
from paw_jax.envs.base import Task
from paw_jax.envs.pool import EnvPool
from paw_jax.metrics import METRICS_FILE, MetricsWriter, progress, read_metrics
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder
from paw_jax.prompts import PromptConfig
from paw_jax.rollout import episode_metrics, run_episodes
from paw_jax.sampling import Sampler, SamplingConfig
from paw_jax.scratch import train_env_tokenizer, warmup_turns
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
  mesh: jax.sharding.Mesh
  critic_graphdef: nnx.GraphDef | None = None  # PPO (algo.advantage='gae') only
  critic: TrainState | None = None
  reported_errors: set[str] = dataclasses.field(default_factory=set)  # episode errors already printed

  def train_states(self) -> dict[str, TrainState]:
    """What a checkpoint holds: the policy's state and, for PPO, the critic's."""
    return {"policy": self.state, **({"critic": self.critic} if self.critic is not None else {})}


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
                            task=config.prompt.task, instruction=config.prompt.instruction,
                            order=tuple(name.strip() for name in config.prompt.order.split(",")),
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
             _dataclass_from(BatchConfig, config.batch, with_observation=config.paw.enabled), loss_cfg, paw_cfg,
             env_class(config.env.name), mesh)


def report_errors(run: Run, episodes, phase: str) -> None:
  """Prints each new kind of episode error once: such an episode counts as failed and the run goes on, but a
  misconfiguration (e.g. a too small `sampling.max_prompt_len`) must not hide behind a low success rate."""
  for error, count in collections.Counter(e.error for e in episodes if e.error is not None).items():
    if error not in run.reported_errors:
      run.reported_errors.add(error)
      print(f"warning: {count} {phase} episode(s) ended as failed: {error}", flush=True)


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


def reduce_update_metrics(step_metrics: list[dict[str, Any]], prefix: str = "train") -> dict[str, float]:
  """Host reduction: token means are averaged over mini-batches; WM sums become ratios."""
  if not step_metrics:
    return {}
  summed = {k: float(sum(np.asarray(m[k]) for m in step_metrics)) for k in step_metrics[0]}
  n = len(step_metrics)
  out = {f"{prefix}/{k}": v / n for k, v in summed.items() if not k.startswith("wm/")}
  out[f"{prefix}/skipped"] = summed["skipped"]
  if "wm/rows" in summed:
    out["paw/wm_loss"] = summed["wm/loss_sum"] / max(summed["wm/rows"], 1)
    out["paw/clipped_ratio"] = summed["wm/clipped_tokens"] / max(summed["wm/obs_tokens"], 1)
  return out


def format_warmup(run: Run, steps: int) -> None:
  """SFT on random play: the reply format and, with `format_warmup_wm_coef`, the env's dynamics (CE on the next
  observation). Random actions carry no task signal: which action wins is left to RL."""
  t = run.config.train
  env = make(run.config.env.name, **run.config.env.kwargs.to_dict())
  turns = warmup_turns(env, run.tokenizer, run.prompt_cfg, t.format_warmup_episodes, seed=run.config.seed + 1)
  env.close()
  mb = run.batch_cfg.micro_batch * 2  # small steps: the format is simple, many updates learn it fastest
  batch = pack_rows(turns, run.tokenizer,
                    dataclasses.replace(run.batch_cfg, with_observation=bool(t.format_warmup_wm_coef)))
  batch["wm_weight_B"] = batch["valid_B"] * np.float32(t.format_warmup_wm_coef / mb)  # mean CE of a row
  warmup_optim = _dataclass_from(OptimConfig, run.config.optim, learning_rate=t.format_warmup_lr)
  update = jit_update(run.graphdef, make_optimizer(warmup_optim), sft_loss("ce" if t.format_warmup_wm_coef else None))
  rng = np.random.default_rng(run.config.seed)
  bar = progress(steps, desc="format warm-up")
  for _ in range(steps):
    rows = rng.choice(len(turns), size=min(mb, len(turns)), replace=False)
    minibatch = next(mini_batches({k: v[rows] for k, v in batch.items()}, mb, run.batch_cfg.micro_batch))
    run.state, metrics = update(run.state, sharding.shard_rows(minibatch, run.mesh, row_axis=1))
    bar.update()
  bar.close()
  # RL starts from the warmed-up policy: fresh optimizer state, and that policy as the KL reference.
  run.state = init_state(run.state.params, make_optimizer(_dataclass_from(OptimConfig, run.config.optim)),
                         with_ref=run.state.ref_params is not None)
  wm = f", next-observation CE {float(metrics['sft/wm']) / t.format_warmup_wm_coef:.3f}" if "sft/wm" in metrics else ""
  print(f"format warm-up: {steps} steps, final action NLL {float(metrics['sft/nll']):.3f}{wm}", flush=True)


def init_critic(run: Run) -> None:
  """PPO's critic from the current policy (after any warm-up), with its own optimizer and learning rate."""
  critic = critic_from_policy(nnx.merge(run.graphdef, run.state.params))
  run.critic_graphdef, params = nnx.split(critic)
  shardings = sharding.param_shardings(critic, run.mesh)
  nnx.replace_by_pure_dict(params, jax.device_put(nnx.to_pure_dict(params), shardings))
  run.critic = init_state(params, make_optimizer(critic_optim(run.config)), with_ref=False)


def critic_optim(config) -> OptimConfig:
  return _dataclass_from(OptimConfig, config.optim, learning_rate=config.critic.learning_rate)


def evaluate(run: Run, pool: EnvPool) -> dict[str, float]:
  """Greedy-ish (eval temperature) play of a fixed task set, one episode per task."""
  c = run.config
  tasks = [Task(c.env.eval_split, i) for i in range(c.train.eval_episodes)]
  _, episodes, _ = run_episodes(pool, run.env_cls, run.sampler, run.state.params, run.tokenizer, tasks, 1,
                                run.prompt_cfg, sampling_config(c, eval_mode=True),
                                jax.random.key(c.seed + 7919), int(run.state.step))
  report_errors(run, episodes, "eval")
  return episode_metrics(episodes, "eval")


class CriticFns(NamedTuple):
  """PPO's jitted critic functions."""
  update: Callable  # (critic state, mini-batch) -> (critic state, metrics)
  values: Callable  # (critic params, rows) -> value_B


def rl_update(run: Run, pool: EnvPool, update_index: int, update_fn, logprob_fn,
              critic_fns: CriticFns | None = None) -> dict[str, float]:
  """One update: rollouts, the batch, then a policy step (and a critic step for PPO) per mini-batch."""
  c = run.config
  timings: dict[str, float] = {}
  rng = jax.random.fold_in(jax.random.key(c.seed), update_index)
  groups = c.algo.groups_per_update
  tasks = [Task(c.env.train_split, update_index * groups + g) for g in range(groups)]
  start = time.perf_counter()
  turns, episodes, stats = run_episodes(pool, run.env_cls, run.sampler, run.state.params, run.tokenizer, tasks,
                                        c.algo.group_size, run.prompt_cfg, sampling_config(c, eval_mode=False), rng,
                                        int(run.state.step))
  timings["time/rollout"] = time.perf_counter() - start
  report_errors(run, episodes, "rollout")
  timings["time/sample"], timings["time/env"] = stats.sample_s, stats.env_s
  start = time.perf_counter()
  adv_cfg = _dataclass_from(AdvantageConfig, c.algo.adv)
  values_fn = (lambda rows: critic_values(run, rows, critic_fns.values)) if critic_fns else None
  batch, paw_metrics = build_batch(turns, episodes, run.tokenizer, run.batch_cfg, c.algo.advantage, adv_cfg,
                                   run.paw_cfg, run.env_cls.r_max, values_fn)
  fill_logprobs(run, batch, logprob_fn)
  # Rows come grouped by turn index; shuffled (seeded by the update), each mini-batch mixes turns and groups.
  order = np.random.default_rng([c.seed, update_index]).permutation(len(batch["valid_B"]))
  batch = {k: v[order] for k, v in batch.items()}
  # Each mini-batch is its own optimizer step with a full token-mean L_RL, while the PaW weights sum over the whole
  # update; scaling by the mini-batch count keeps Eq. 11's RL : WM balance in every step.
  batch["wm_weight_B"] = batch["wm_weight_B"] * -(-len(batch["valid_B"]) // c.batch.mini_batch)
  step_metrics, critic_metrics = [], []
  for _ in range(c.algo.epochs):
    for minibatch in mini_batches(batch, c.batch.mini_batch, c.batch.micro_batch):
      minibatch = sharding.shard_rows(minibatch, run.mesh, row_axis=1)
      run.state, metrics = update_fn(run.state, minibatch)
      step_metrics.append(metrics)
      if critic_fns:
        run.critic, metrics = critic_fns.update(run.critic, minibatch)
        critic_metrics.append(metrics)
  step_metrics, critic_metrics = jax.device_get((step_metrics, critic_metrics))
  timings["time/train"] = time.perf_counter() - start
  return {**episode_metrics(episodes, "rollout"), **reduce_update_metrics(step_metrics),
          **reduce_update_metrics(critic_metrics, "critic"), **paw_metrics, **timings,
          "rollout/response_tokens": stats.response_tokens / max(stats.turns, 1), "rollout/rows": float(len(turns))}


def critic_values(run: Run, batch: dict[str, np.ndarray], values_fn) -> np.ndarray:
  """The critic's value of every row, micro-batch by micro-batch (fetched once)."""
  micro = run.batch_cfg.micro_batch
  keys = ("tokens_BxT", "mask_BxT", "action_mask_BxT")
  chunks = []  # device arrays: dispatched back to back, fetched once below
  for start in range(0, len(batch["valid_B"]), micro):
    rows = sharding.shard_rows({k: batch[k][start:start + micro] for k in keys}, run.mesh)
    chunks.append(values_fn(run.critic.params, rows))
  return np.concatenate(jax.device_get(chunks))


def fill_logprobs(run: Run, batch: dict[str, np.ndarray], logprob_fn) -> None:
  """Old log-probs recomputed by the trainer (config algo.old_logp='trainer') and reference log-probs for KL."""
  need_old = run.config.algo.old_logp == "trainer"
  if not need_old and run.state.ref_params is None:
    return
  micro = run.batch_cfg.micro_batch
  old, ref = [], []  # device arrays: dispatched back to back, fetched once below
  for start in range(0, len(batch["valid_B"]), micro):
    rows = sharding.shard_rows({k: batch[k][start:start + micro] for k in ("tokens_BxT", "mask_BxT")}, run.mesh)
    tokens, mask = rows["tokens_BxT"], rows["mask_BxT"]
    if need_old:
      old.append(logprob_fn(run.state.params, tokens, mask))
    if run.state.ref_params is not None:
      ref.append(logprob_fn(run.state.ref_params, tokens, mask))
  old, ref = jax.device_get((old, ref))
  if need_old:
    batch["old_logp_BxT"] = np.concatenate(old).astype(np.float32)
  batch["ref_logp_BxT"] = np.concatenate(ref).astype(np.float32) if ref else np.zeros_like(batch["old_logp_BxT"])


def latest_eval(workdir: pathlib.Path) -> dict[str, float]:
  """The eval metrics last logged in `workdir` ({} if none): what a run resumed at its final update returns."""
  evals = [r for r in read_metrics(workdir) if "eval/success" in r] if (workdir / METRICS_FILE).is_file() else []
  return {k: v for k, v in evals[-1].items() if k.startswith("eval/")} if evals else {}


def train(config: ml_collections.ConfigDict) -> dict[str, float]:
  """Runs (or resumes) training; returns the last evaluation's metrics."""
  run = build_run(config)
  c = config
  ppo = c.algo.advantage == "gae"
  checkpointer = Checkpointer(run.workdir, keep=c.train.keep_checkpoints, save_every=c.train.checkpoint_every)
  writer = MetricsWriter(run.workdir)
  start_update = 0
  if checkpointer.latest_step() is not None:
    if ppo:
      init_critic(run)  # its shapes and shardings, restored below
    states, meta = checkpointer.restore(jax.eval_shape(run.train_states))
    run.state, run.critic = states["policy"], states.get("critic")
    start_update = int(meta["next_update"])
    print(f"resumed from {checkpointer.directory} at update {start_update}")
  else:
    if c.train.format_warmup_steps:
      format_warmup(run, c.train.format_warmup_steps)
    if ppo:
      init_critic(run)
  update_fn = jit_update(run.graphdef, make_optimizer(_dataclass_from(OptimConfig, c.optim)), rl_loss(run.loss_cfg))
  logprob_fn = jit_logprobs(run.graphdef)
  critic_fns = CriticFns(jit_update(run.critic_graphdef, make_optimizer(critic_optim(c)),
                                    critic_loss(c.critic.value_clip)),
                         jit_values(run.critic_graphdef)) if ppo else None
  last_eval = latest_eval(run.workdir)
  pool = EnvPool(c.env.name, c.env.num_envs, c.env.kwargs.to_dict(), step_timeout_s=c.env.step_timeout_s,
                 reset_timeout_s=c.env.reset_timeout_s, in_process=c.env.in_process)
  bar = progress(c.train.updates, initial=start_update, desc="updates")
  with pool:
    if start_update == 0 and c.train.eval_at_start:  # the curve's starting point: the policy RL starts from
      last_eval = evaluate(run, pool)
      writer.write(0, last_eval)
    for update_index in range(start_update, c.train.updates):
      metrics = rl_update(run, pool, update_index, update_fn, logprob_fn, critic_fns)
      last = update_index + 1 == c.train.updates
      if (update_index + 1) % c.train.eval_every == 0 or last:
        last_eval = evaluate(run, pool)
        metrics.update(last_eval)
      writer.write(update_index + 1, metrics)
      checkpointer.save(update_index + 1, run.train_states(), {"next_update": update_index + 1}, force=last)
      bar.update({k: metrics[k] for k in ("rollout/success", "eval/success") if k in metrics})
  bar.close()
  checkpointer.wait()
  checkpointer.close()
  writer.close()
  if c.train.export_hf:
    hf_io.save_model(nnx.merge(run.graphdef, run.state.params), run.workdir / "hf_export")
    run.tokenizer.save(run.workdir / "hf_export")
  return last_eval
