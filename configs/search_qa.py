"""Search-augmented QA as in the PaW paper (Appendix A): Qwen2.5-Instruct, GRPO/GiGPO (+ PaW), 5 answers x 256 questions.

Variants (paw_jax/paper_configs.py): model=qwen2.5-3b (default) | qwen2.5-7b | ..., model_dir=PATH,
algo=grpo (default) | gigpo | rloo | ppo, paw=on (default) | off | ce | lambda1 | echo | placebo, and
data=builtin (default: the 100 offline questions) | a FlashRAG-layout directory (Search-R1's data: trains on nq +
hotpotqa, evaluates on all seven sets; corpus.jsonl beside them).

  # single host (all local devices, FSDP); the checkpoint is read from ~/models/Qwen/Qwen2.5-3B-Instruct
  python -m paw_jax.main --config=configs/search_qa.py:model=qwen2.5-3b,algo=gigpo
  python -m paw_jax.main --config=configs/search_qa.py:model=qwen2.5-7b,data=/data/flashrag
  # TPU pod / Slurm GPU cluster
  launch/tpu_pod.sh my-tpu us-central2-b configs/search_qa.py:model=qwen2.5-7b,data=/data/flashrag gs://my-bucket/sqa
  sbatch --nodes=2 launch/slurm_gpu.sbatch configs/search_qa.py:model=qwen2.5-7b,data=/data/flashrag /shared/runs/sqa

Rewards are the env's: 1 for an exact-match answer, -0.01 for a reply with neither <search> nor <answer>.
"""
import os

from paw_jax import paper_configs

SEARCH_R1_TRAIN = ("nq", "hotpotqa")
SEARCH_R1_TEST = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")


def get_config(arg: str = ""):
  c, v = paper_configs.paper_config("search_qa", arg, default_model="qwen2.5-3b", data="builtin")
  c.env.kwargs.max_steps = 4
  c.env.eval_split = "test"
  if v["data"] == "builtin":
    c.env.kwargs.datasets = "builtin"
    c.train.eval_episodes = 20  # the whole built-in test split
  else:
    c.workdir += "-" + os.path.basename(os.path.normpath(v["data"]))
    c.env.kwargs.data_dir = v["data"]
    c.env.kwargs.datasets = {"train": SEARCH_R1_TRAIN, "test": SEARCH_R1_TEST}
    c.train.eval_episodes = 512  # the first test questions: a running estimate; the paper scores all seven sets
  c.prompt.history = -1  # the full history (at most 4 turns of retrieved passages)
  c.sampling.max_prompt_len = 4096
  c.sampling.eval_temperature = 0.0  # greedy, as exact-match QA is evaluated
  c.algo.group_size = 5
  c.algo.groups_per_update = 256
  c.batch.mini_batch = 512
  c.algo.loss.kl_coef = 0.001
  c.algo.adv.step_similarity = 0.9  # GiGPO: anchor states grouped by text similarity (observations rarely repeat)
  return c
