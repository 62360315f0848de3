"""WebShop as in the PaW paper (Appendix A): Qwen2.5-Instruct, GRPO/GiGPO/PPO/RLOO (+ PaW), 150 updates of 16 x 8.

Variants (paw_jax/paper_configs.py): model=qwen2.5-1.5b (default) | qwen2.5-7b | qwen3-1.7b | llama3.2-3b | ...,
model_dir=PATH, algo=grpo (default) | gigpo | rloo | ppo, paw=on (default) | off | ce | lambda1 | echo | placebo.

  # single host (all local devices, FSDP); the checkpoint is read from ~/models/Qwen/Qwen2.5-1.5B-Instruct
  python -m paw_jax.main --config=configs/webshop.py:model=qwen2.5-1.5b,algo=gigpo
  PAW_MODEL_DIR=/data/hf python -m paw_jax.main --config=configs/webshop.py:model=llama3.2-3b,paw=off
  # TPU pod / Slurm GPU cluster
  launch/tpu_pod.sh my-tpu us-central2-b configs/webshop.py:model=qwen2.5-7b,algo=gigpo gs://my-bucket/webshop-7b
  sbatch --nodes=2 launch/slurm_gpu.sbatch configs/webshop.py:model=qwen2.5-7b,algo=gigpo /shared/runs/webshop-7b

Shop: the built-in offline catalogue by default; princeton-nlp's WebShop with `--config.env.kwargs.source=official`
(its web_agent_site package and data installed). Rewards are the env's: 10 x WebShop's score at purchase (success =
score 1), -0.1 for an invalid action.
"""
from paw_jax import paper_configs


def get_config(arg: str = ""):
  c, _ = paper_configs.paper_config("webshop", arg, default_model="qwen2.5-1.5b")
  c.env.kwargs.source = "builtin"
  c.env.kwargs.max_steps = 15
  c.sampling.max_prompt_len = 4096  # result pages list 10 products with titles and prices
  c.sampling.eval_temperature = 0.4
  c.algo.group_size = 8
  c.algo.groups_per_update = 16
  c.batch.mini_batch = 64
  c.algo.loss.kl_coef = 0.01
  c.train.eval_episodes = 128
  return c
