"""Shared test fixtures: tiny random HF checkpoints written by transformers itself (the numerical oracle)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 8 virtual CPU devices so sharded code paths run for real; unsharded work stays on device 0. Their threads meet at
# every collective, and on 2 busy cores one can arrive minutes late: past its termination timeout XLA aborts the
# process (no Python error, no message under pytest's capture). No excess precision: the tests check the numbers
# the declared dtypes give, and XLA:CPU may otherwise run a bf16 x bf16 -> fp32 matmul on the fp32 weights a bf16
# cast came from, skipping the rounding (a bf16 copy of the weights would then differ from bf16 compute).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=900 --xla_allow_excess_precision=false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Reuse compiled executables across the suite (several tests build the same model/step shapes).
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def frozenlake_rollout():
  """(tokenizer, model, turns, episodes): 2 groups x 4 episodes of 4-step FrozenLake played by a random tiny Llama
  with an env-trained BPE, through the real sampler and env pool."""
  from flax import nnx
  from paw_jax.envs import make
  from paw_jax.envs.base import Task
  from paw_jax.envs.pool import EnvPool
  from paw_jax.models.config import ModelConfig
  from paw_jax.models.transformer import Decoder
  from paw_jax.prompts import PromptConfig
  from paw_jax.rollout import run_episodes
  from paw_jax.sampling import Sampler, SamplingConfig
  from paw_jax.scratch import train_env_tokenizer

  prompt = PromptConfig(history=1, think=False)
  env = make("frozenlake", max_steps=4)
  tokenizer = train_env_tokenizer(env, prompt, vocab_size=400, episodes=30, seed=0)
  cfg = ModelConfig("llama", tokenizer.vocab_size, 64, 128, 2, 4, 2, 16, tie_word_embeddings=True)
  model = Decoder(cfg, rngs=nnx.Rngs(0))
  sampler = Sampler.from_tokenizer(nnx.graphdef(model), tokenizer, vocab_size=cfg.vocab_size, max_prompt_len=256)
  with EnvPool("frozenlake", 8, {"max_steps": 4}, in_process=True) as pool:
    turns, episodes, _ = run_episodes(pool, type(env), sampler, nnx.state(model), tokenizer,
                                      [Task("train", 0), Task("train", 1)], 4, prompt,
                                      SamplingConfig(temperature=1.0, max_new_tokens=6), jax.random.key(0))
  return tokenizer, model, turns, episodes
