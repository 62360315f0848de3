"""Every setting of a run with its default; files in configs/ start from `base_config()` and override what differs."""
from __future__ import annotations

import ml_collections

from paw_jax.prompts import PARTS


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.workdir = "runs/default"

  c.env = ml_collections.ConfigDict()
  c.env.name = "frozenlake"
  c.env.kwargs = ml_collections.ConfigDict()
  c.env.num_envs = 64  # worker slots; independent of the batch size (episodes run in waves)
  c.env.in_process = False  # True for the pure-Python grid envs, where IPC costs more than a step
  c.env.step_timeout_s = 60.0
  c.env.reset_timeout_s = 300.0
  c.env.train_split = "train"
  c.env.eval_split = "eval"

  c.model = ml_collections.ConfigDict()
  c.model.path = ""  # HF directory, .gguf, or 'smollm2'; '' = a from-scratch model (model.scratch)
  c.model.scratch = ml_collections.ConfigDict(dict(
      model_type="qwen3", hidden_size=128, intermediate_size=384, num_layers=2, num_heads=4, num_kv_heads=2,
      head_dim=32, max_position_embeddings=2048))
  c.model.param_dtype = "float32"
  c.model.compute_dtype = "float32"
  c.model.remat = False
  c.model.scan_layers = True

  c.tokenizer = ml_collections.ConfigDict()
  c.tokenizer.path = ""  # '' = the model's own; for a scratch model, a BPE trained on the env's text
  c.tokenizer.vocab_size = 512
  c.tokenizer.corpus_episodes = 200  # random-play episodes whose text trains the BPE

  # task / instruction: '' keeps the env's task text and the standard format instruction; set them to reword.
  # order: the parts of a turn's message, comma-separated (prompts.PARTS).
  c.prompt = ml_collections.ConfigDict(dict(history=2, think=True, list_admissible=True, system="", task="",
                                            instruction="", order=",".join(PARTS)))

  c.sampling = ml_collections.ConfigDict(dict(
      temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=512, max_prompt_len=2048, eval_temperature=0.4))

  c.batch = ml_collections.ConfigDict(dict(
      max_len=3072, max_obs_tokens=256, obs_header="\nObservation: ", micro_batch=8, mini_batch=256))

  c.algo = ml_collections.ConfigDict()
  c.algo.advantage = "grpo"  # grpo | gigpo | rloo | gae (PPO with a critic)
  c.algo.group_size = 8
  c.algo.groups_per_update = 16
  c.algo.epochs = 1  # passes over the update's rows
  c.algo.old_logp = "trainer"  # 'trainer': recomputed before the update; 'sampler': the sampler's own
  c.algo.loss = ml_collections.ConfigDict(dict(
      policy_loss="ppo_clip", clip_low=0.2, clip_high=0.2, kl_coef=0.01, entropy_coef=0.0, rho=0.2))
  c.algo.adv = ml_collections.ConfigDict(dict(
      eps=1e-6, norm_by_std=True, cross_steps=False, step_gamma=0.95, step_weight=1.0, gae_gamma=1.0,
      gae_lambda=1.0, gae_whiten=True))
  c.algo.adv.step_similarity = ml_collections.FieldReference(None, field_type=float)

  c.paw = ml_collections.ConfigDict(dict(
      enabled=True, alpha=0.75, adaptive=True, entropy="full", wm_loss="cmae"))

  c.optim = ml_collections.ConfigDict(dict(
      learning_rate=1e-6, warmup_steps=0, decay_steps=0, final_lr_fraction=0.1, weight_decay=0.01, b1=0.9,
      b2=0.999, grad_clip=1.0))

  c.critic = ml_collections.ConfigDict(dict(  # PPO (algo.advantage='gae') only; the rest of its optimizer is c.optim
      learning_rate=1e-5, value_clip=0.5))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))

  c.train = ml_collections.ConfigDict()
  c.train.updates = 150
  c.train.format_warmup_steps = 0  # SFT steps on random play (format and dynamics only; no task signal)
  c.train.format_warmup_lr = 1e-3  # its own rate: the RL rate is often far too small to learn a format
  c.train.format_warmup_episodes = 64  # random-play episodes whose turns are the warm-up rows
  c.train.format_warmup_wm_coef = 0.0  # weight of the next-observation CE (world-model warm-up); 0 = format only
  c.train.eval_every = 10
  c.train.eval_at_start = True  # also evaluate before the first update (logged as update 0)
  c.train.eval_episodes = 128
  c.train.checkpoint_every = 5
  c.train.keep_checkpoints = 3
  c.train.export_hf = True  # write the final policy as a HF directory
  return c
