"""What the PaW paper's runs (arXiv 2606.02388, Appendix A) share, for configs/{alfworld,webshop,search_qa}.py.

A variant string is comma-separated key=value pairs, e.g. `configs/webshop.py:model=qwen2.5-7b,algo=gigpo,paw=off`:
  model      a key of MODELS
  model_dir  the checkpoint directory; default $PAW_MODEL_DIR/<HF repo id>, PAW_MODEL_DIR defaulting to ~/models
             (so `huggingface-cli download Qwen/Qwen2.5-1.5B-Instruct --local-dir ~/models/Qwen/Qwen2.5-1.5B-Instruct`)
  algo       a name of algos.advantages.ADVANTAGES: grpo | gigpo | rloo | ppo (GAE with a critic)
  paw        a name of algos.paw.VARIANTS: on (PaW) | off (the base algorithm) | ce (ablation: CE instead of
             clipped MAE) | lambda1 (ablation: λ=1) | echo (ECHO: CE on every observation token, coefficient 0.05)
             | placebo (PaW on next observations shuffled across rows)
A config file may add keys of its own; an unknown key or value is a ValueError that names the known ones.
"""
from __future__ import annotations

import os

import ml_collections

from paw_jax.algos.advantages import ADVANTAGES
from paw_jax.algos.paw import VARIANTS
from paw_jax.config import base_config

MODELS = {  # variant name -> HF repo id (the paper's models)
    "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
    "qwen2.5-3b": "Qwen/Qwen2.5-3B-Instruct",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B-Instruct",
    "qwen2.5-14b": "Qwen/Qwen2.5-14B-Instruct",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "llama3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
}


def parse_variant(arg: str, **defaults: str) -> dict[str, str]:
  """`defaults` updated from `arg` ('k=v,k=v'); the keys of `defaults` are the only ones allowed."""
  variant = dict(defaults)
  seen = set()
  for item in filter(None, (part.strip() for part in (arg or "").split(","))):
    key, sep, value = (s.strip() for s in item.partition("="))
    if not sep or not key:
      raise ValueError(f"variant '{arg}': expected comma-separated key=value pairs, got '{item}'")
    if key not in defaults:
      raise ValueError(f"variant '{arg}': unknown key '{key}'; known keys: {', '.join(defaults)}")
    if key in seen:
      raise ValueError(f"variant '{arg}': key '{key}' given twice")
    seen.add(key)
    variant[key] = value
  return variant


def choice(variant: dict[str, str], key: str, allowed) -> str:
  if variant[key] not in allowed:
    raise ValueError(f"variant {key}='{variant[key]}' is unknown; expected one of {', '.join(allowed)}")
  return variant[key]


def model_path(model: str, model_dir: str = "") -> str:
  """`model_dir` if given, else $PAW_MODEL_DIR (default ~/models) / the model's HF repo id."""
  return os.path.expanduser(model_dir or os.path.join(os.environ.get("PAW_MODEL_DIR", "~/models"), MODELS[model]))


def paper_config(env: str, arg: str, default_model: str,
                 **extra_keys: str) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
  """base_config() with everything the paper's table shares across envs, and the parsed variant.

  The caller sets the env and its column of the table (lengths, steps, group size, mini-batch, eval temperature, KL).
  `extra_keys`: the config file's own variant keys with their defaults.
  """
  v = parse_variant(arg, model=default_model, model_dir="", algo="grpo", paw="on", **extra_keys)
  model, algo, paw = choice(v, "model", MODELS), choice(v, "algo", ADVANTAGES), choice(v, "paw", VARIANTS)
  c = base_config()
  c.workdir = f"runs/{env}/{model}-{algo}-paw_{paw}"  # one variant, one workdir: auto-resume never mixes runs
  c.env.name = env

  c.model.path = model_path(model, v["model_dir"])
  c.model.param_dtype = "float32"  # fp32 master weights and Adam moments, bf16 matmuls
  c.model.compute_dtype = "bfloat16"
  c.model.remat = True  # activations of 3-5k-token rows would not fit otherwise
  c.model.scan_layers = True  # one compiled layer: compile time independent of depth

  c.prompt.history = 2  # the last K=2 (observation, action) pairs; search-QA keeps the whole history
  c.prompt.think = True  # <think>...</think> then <action>...</action>

  c.sampling.temperature = 1.0
  c.sampling.top_k, c.sampling.top_p = 0, 1.0
  c.sampling.max_new_tokens = 512
  # A row is prompt + response + the appended o_{t+1} (header + max_obs_tokens); +256 covers the header and keeps the
  # longest bucket a multiple of 256. References: overriding a length on the command line moves max_len with it.
  c.batch.max_obs_tokens = 256
  c.batch.max_len = (c.sampling.get_ref("max_prompt_len") + c.sampling.get_ref("max_new_tokens")
                     + c.batch.get_ref("max_obs_tokens") + 256)
  # Global rows per micro-batch, split over the data x fsdp devices (a multiple of their count: Run.open checks it).
  # Per-device memory: `python -m paw_jax.tools.memory --config=... --devices=N` (bench/RESULTS.md).
  c.batch.micro_batch = 16

  c.algo.name = algo
  c.algo.epochs = 1  # one pass over each update's rows (verl's ppo_epochs)
  c.algo.loss.policy_loss = "ppo_clip"
  c.algo.loss.clip_low = c.algo.loss.clip_high = 0.2
  c.algo.loss.entropy_coef = 0.0
  c.algo.loss.rho = 0.2  # CMAE: tokens the model already gives p > ρ are masked out
  c.algo.adv.norm_by_std = True  # GRPO/GiGPO 'mean_std_norm'
  c.algo.adv.step_weight = 1.0  # GiGPO ω
  c.algo.adv.step_gamma = 0.95  # GiGPO γ
  c.algo.adv.gae_gamma = c.algo.adv.gae_lambda = 1.0  # PPO: verl's defaults
  c.critic.learning_rate = 1e-5  # PPO's critic (the paper's); its value clip is verl's 0.5

  c.paw.alpha = 0.75  # top 75% of the update's transitions by action entropy get the WM loss
  c.paw.entropy = "full"
  c.paw.update(VARIANTS[paw])  # the variant's changes from full PaW (λ_g = 1 − R̄_g / R_max, clipped MAE)

  c.optim.learning_rate = 1e-6  # actor lr
  c.optim.warmup_steps = 0
  c.optim.weight_decay = 0.01  # verl's AdamW default
  c.optim.grad_clip = 1.0

  c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1  # FSDP over every device: params and Adam state sharded

  c.train.updates = 150  # "150 epochs of 16 tasks": one update per group of tasks
  c.train.format_warmup_steps = 0  # instruct models already follow the reply format
  return c, v
