"""What every training program is built on, made once from the config: the workdir (with the run's saved config),
the device mesh, the tokenizer, the model, the env class and pool, and the sampler on the model's graph.

`Run.open(config)` checks what can be checked before anything heavy is built: a resume must use the saved config, and
the env's first prompt must fit `sampling.max_prompt_len` (rendered with the tokenizer, before the model exists).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
from etils import epath
from flax import nnx

from paw_jax import multihost, sharding
from paw_jax.config import CONFIG_FILE, Config, ConfigError, check_resume, config_json
from paw_jax.envs import Task, TextEnv, env_class, make
from paw_jax.envs.pool import EnvPool
from paw_jax.models import hf_io
from paw_jax.models.config import ModelConfig
from paw_jax.models.tokenizer import Tokenizer
from paw_jax.models.transformer import Decoder
from paw_jax.prompts import chat_messages, render_turn
from paw_jax.sampling import Sampler
from paw_jax.scratch import train_env_tokenizer


@dataclasses.dataclass
class Run:
  config: Config
  workdir: epath.Path  # a local path or any filesystem etils.epath knows (gs://...)
  mesh: jax.sharding.Mesh
  tokenizer: Tokenizer
  model_cfg: ModelConfig
  graphdef: nnx.GraphDef  # the policy's model graph: the learner's and the sampler's
  initial_params: Any  # the loaded (or freshly initialised) weights, until the program's learner takes them
  env_cls: type[TextEnv]
  sampler: Sampler

  @classmethod
  def open(cls, config: Config, resuming: bool) -> Run:
    """`resuming`: the workdir holds a checkpoint to go on from, so its saved config must match."""
    workdir = epath.Path(config.workdir)
    saved = workdir / CONFIG_FILE
    if resuming and saved.is_file():
      check_resume(config, saved.read_text())
    multihost.sync("config checked")  # before process 0 rewrites it
    if multihost.is_main():
      workdir.mkdir(parents=True, exist_ok=True)
      saved.write_text(config_json(config))
    if not jax.config.jax_compilation_cache_dir:  # restarts reuse compiled programs; a cache set by the user wins
      jax.config.update("jax_compilation_cache_dir", str(workdir / "xla_cache"))
    try:
      mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
    except ValueError as error:
      raise ConfigError(f"mesh: {error}") from None
    if config.batch.micro_batch % sharding.data_parallel_size(mesh):
      raise ConfigError(f"batch.micro_batch={config.batch.micro_batch}: expected a multiple of the mesh's data x fsdp "
                        f"= {sharding.data_parallel_size(mesh)} devices (each holds a share of every micro-batch)")
    tokenizer = load_tokenizer(config, workdir)
    env_cls = env_class(config.env.name)
    check_prompt_fits(config, tokenizer)
    model = load_model(config, tokenizer, mesh)
    graphdef, params = nnx.split(model)
    sampler = Sampler.from_tokenizer(graphdef, tokenizer, vocab_size=model.cfg.vocab_size,
                                     max_prompt_len=config.sampling.max_prompt_len, mesh=mesh)
    return cls(config, workdir, mesh, tokenizer, model.cfg, graphdef, params, env_cls, sampler)

  def take_params(self) -> Any:
    """The initial weights, handed over once: the learner's update donates their buffers."""
    params, self.initial_params = self.initial_params, None
    if params is None:
      raise RuntimeError("Run.take_params: the initial weights were already handed to a learner")
    return params

  def env_pool(self) -> EnvPool:
    env = self.config.env
    return EnvPool(env.name, env.num_envs, env.kwargs, step_timeout_s=env.step_timeout_s,
                   reset_timeout_s=env.reset_timeout_s, in_process=env.in_process)

  def make_env(self) -> TextEnv:
    """One env in this process (random play for a tokenizer or a warm-up); the caller closes it."""
    return make(self.config.env.name, **self.config.env.kwargs)


def load_tokenizer(config: Config, workdir: epath.Path) -> Tokenizer:
  """The workdir's tokenizer if saved; else the model's own, or for a scratch model a BPE trained on random play."""
  saved = workdir / "tokenizer"
  exists = (saved / "tokenizer.json").is_file()
  multihost.sync("tokenizer looked for")  # every process has looked before process 0 writes one
  if exists:
    return Tokenizer.load(saved)
  if not multihost.is_main():  # one vocabulary for every process: process 0's
    multihost.sync("tokenizer saved")
    return Tokenizer.load(saved)
  path = config.tokenizer.path or config.model.path
  if path:
    tokenizer = Tokenizer.load(path)
  else:
    env = make(config.env.name, **config.env.kwargs)
    tokenizer = train_env_tokenizer(env, config.prompt, config.tokenizer.vocab_size, config.tokenizer.corpus_episodes,
                                    config.seed, config.rwml.instruction if config.tokenizer.with_next_state else None)
    env.close()
  tokenizer.save(saved)  # a resumed run must see the very same vocabulary
  multihost.sync("tokenizer saved")
  return tokenizer


def check_prompt_fits(config: Config, tokenizer: Tokenizer) -> None:
  """The first prompt of a train and an eval episode (no history yet: the shortest a turn gets) must fit."""
  env = make(config.env.name, **config.env.kwargs)
  try:
    for split in (config.env.train_split, config.env.eval_split):
      observation, info = env.reset(Task(split, 0))
      text = render_turn(type(env), config.prompt, str(info.get("task", "")), 0, [], observation,
                         info.get("admissible_actions"))
      length = len(tokenizer.encode_chat(chat_messages(config.prompt, text), add_generation_prompt=True))
      if length > config.sampling.max_prompt_len:
        raise ConfigError(f"sampling.max_prompt_len={config.sampling.max_prompt_len}: expected >= {length}, the "
                          f"tokens of the env's first {split} prompt")
  finally:
    env.close()


def load_model(config: Config, tokenizer: Tokenizer, mesh: jax.sharding.Mesh) -> Decoder:
  """The checkpoint at `model.path`, or a from-scratch decoder sized by `model.scratch`; placed by the rule table."""
  spec = config.model
  numerics = dict(param_dtype=spec.param_dtype, compute_dtype=spec.compute_dtype, remat=spec.remat,
                  scan_layers=spec.scan_layers, attention_impl=spec.attention_impl)
  if spec.path:
    return hf_io.load_sharded(spec.path, mesh, **numerics)
  cfg = ModelConfig(vocab_size=tokenizer.vocab_size, tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                    **dataclasses.asdict(spec.scratch), **numerics)
  params = hf_io.model_params(Decoder(cfg, rngs=nnx.Rngs(config.seed)))  # small: placed by shardings below
  return hf_io.model_from_params(cfg, params, sharding.param_shardings(hf_io.abstract_model(cfg), mesh))

