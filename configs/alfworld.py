"""ALFWorld as in the PaW paper (Appendix A): Qwen2.5-Instruct, GRPO/GiGPO (+ PaW), 150 updates of 16 tasks x 8.

Variants (paw_jax/paper_configs.py): model=qwen2.5-1.5b (default) | qwen2.5-7b | ..., model_dir=PATH,
algo=grpo (default) | gigpo | rloo | ppo, paw=on (default) | off | ce | lambda1 | echo | placebo.

  # single host (all local devices, FSDP); the checkpoint is read from ~/models/Qwen/Qwen2.5-1.5B-Instruct
  python -m paw_jax.main --config=configs/alfworld.py:model=qwen2.5-1.5b,algo=gigpo,paw=on
  python -m paw_jax.main --config=configs/alfworld.py:model=qwen2.5-7b,algo=grpo,paw=off \
      --config.workdir=/data/runs/alfworld-7b-grpo
  # TPU pod / Slurm GPU cluster
  launch/tpu_pod.sh my-tpu us-central2-b configs/alfworld.py:model=qwen2.5-7b,algo=gigpo gs://my-bucket/alfworld-7b
  sbatch --nodes=2 launch/slurm_gpu.sbatch configs/alfworld.py:model=qwen2.5-7b,algo=gigpo /shared/runs/alfworld-7b

Games: offline generated problems by default; the official ALFWorld games with
`--config.env.kwargs.source=official` and ALFWORLD_DATA pointing at the downloaded data.
Rewards are the env's: 10 on success, -0.1 for an invalid action.
"""
from paw_jax import paper_configs


def get_config(arg: str = ""):
  c, _ = paper_configs.paper_config("alfworld", arg, default_model="qwen2.5-1.5b")
  c.env.kwargs.source = "generated"
  c.env.kwargs.max_steps = 50
  c.env.eval_split = "eval_in"  # valid_seen, verl-agent's eval_in_distribution
  c.sampling.max_prompt_len = 2048  # task + 2 history turns + observation + admissible actions
  c.sampling.eval_temperature = 0.4
  c.algo.group_size = 8
  c.algo.groups_per_update = 16
  c.batch.mini_batch = 256  # an update's ~128 episodes x up to 50 steps is several mini-batches
  c.algo.loss.kl_coef = 0.01
  c.train.eval_episodes = 128
  return c
