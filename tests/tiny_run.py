"""A seconds-sized run config shared by the program and learner tests: a tiny from-scratch Qwen3 with an env-trained
BPE on 3x3 FrozenLake (in-process envs), 2 groups x 4 episodes, KL to the reference, trainer log-probs, PaW on,
mini-batches of 8 rows in micro-batches of 4."""
from paw_jax.config import Config, base_config, from_configdict


def tiny_run_config(workdir, algo: str = "grpo", **train) -> Config:
  c = base_config()
  c.workdir = str(workdir)
  c.env.kwargs = dict(size=3, hole_prob=0.2, max_steps=4)
  c.env.num_envs, c.env.in_process = 8, True
  c.model.scratch.update(hidden_size=64, intermediate_size=128, num_layers=1)
  c.tokenizer.update(vocab_size=400, corpus_episodes=30)
  c.prompt.update(history=0, think=False, list_admissible=False)
  c.sampling.update(max_new_tokens=8, max_prompt_len=256)
  c.batch.update(max_len=320, max_obs_tokens=40, micro_batch=4, mini_batch=8)
  c.mesh.update(data=2, fsdp=2, tensor=2)  # the tests' 8 CPU devices: rows split 4 ways, as a micro-batch of 4 must be
  c.algo.update(name=algo, group_size=4, groups_per_update=2, old_logp="trainer")
  c.algo.loss.kl_coef = 0.01
  c.optim.learning_rate = 1e-3
  c.train.update(eval_episodes=4, **train)
  return from_configdict(c)
