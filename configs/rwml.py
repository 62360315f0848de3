"""RWML (docs/RWML.md) against its baselines, one command per arm: world-model RL on the agent's own transitions,
then task RL from its policy; next-state SFT then task RL; task RL alone.

  python -m paw_jax.main --config=configs/rwml.py                          # FrozenLake from scratch on a CPU
  python -m paw_jax.main --config=configs/rwml.py:method=sft --config.workdir=runs/rwml/frozenlake-sft
  python -m paw_jax.main --config=configs/rwml.py:ci                        # minutes-sized, for the test suite

Variant keys: method = rwml (default) | sft | rl; size = full (default) | ci (`ci` alone means size=ci); env =
frozenlake (the one configured so far: text-observation envs need a model that can play them).
Stages (config.stages), each in WORKDIR/<stage> and resumable; a stage whose exported policy is there is skipped:
  rwml    the format warm-up, collect (the policy plays `rwml.collect_tasks` train tasks 3 times at temperature 1),
          next-state SFT on the validation triplets, the too-easy filter, then GRPO on predictions (KL 0.001)
  wm_sft  the format warm-up, collect, then next-state SFT on the train triplets (method=sft)
  rl      task RL (GiGPO + PaW, as configs/default.py) from the previous stage's policy
Every arm runs the same task-RL stage and logs the same world-model eval (eval/wm_*, on one random-play panel of the
eval split), so success and world modelling compare across arms.
Why these values: the model is configs/default.py's from-scratch 0.5M decoder. A pretrained LLM can already answer
the next-state prompt; this one cannot, so every prediction would score 0 and GRPO would have nothing to compare:
its warm-up on random play (every arm's) also teaches the next-state format (`train.format_warmup_next_state`), and
the tokenizer learns the next-state texts, so the arms share one vocabulary and one starting policy. A grid map is
compared by ROUGE-L: MiniLM cannot tell two maps apart, and tools/rwml_calibrate proposes τ = 0.1 (an exact map).
RWML's step is smaller than task RL's (3e-4 vs 1e-3): at 1e-3 its KL to the start grew to 0.75 in 6 updates and
the held-out reward fell.
"""
import importlib.util
import pathlib

from paw_jax import paper_configs

METHODS = {"rwml": "rwml,rl", "sft": "wm_sft,rl", "rl": "rl"}
ENVS = ("frozenlake",)


def _default_config(arg: str):
  """configs/default.py's config: the from-scratch model, prompt and task RL this comparison starts from."""
  spec = importlib.util.spec_from_file_location("default_config", pathlib.Path(__file__).with_name("default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def get_config(arg: str = ""):
  v = paper_configs.parse_variant("size=ci" if arg == "ci" else arg, env="frozenlake", method="rwml", size="full")
  env, method = paper_configs.choice(v, "env", ENVS), paper_configs.choice(v, "method", METHODS)
  ci = paper_configs.choice(v, "size", ("full", "ci")) == "ci"
  c = _default_config("ci" if ci else "")
  c.workdir = f"runs/rwml/{env}-{method}{'-ci' if ci else ''}"
  c.stages = METHODS[method]
  c.tokenizer.with_next_state = True
  c.train.format_warmup_next_state = True
  c.sampling.max_prompt_len = 160  # the next-state prompt is the turn's plus the potential action
  c.batch.max_len = 256
  r = c.rwml
  r.instruction = "Reply with the map after this move as <next_state>map</next_state>."
  r.similarity, r.tau, r.filter_tau = "rouge_l", 0.1, 0.1
  r.max_new_tokens = 48  # an empty think block and a 3x3 map in tags: ~25 tokens
  r.max_prediction_tokens = 64
  r.collect_tasks, r.collect_group_size = 64, 3
  r.filter_samples = 4
  r.triplets_per_update = 16
  r.panel_size, r.panel_samples = 64, 2
  length = {"train": {"updates": 6, "eval_every": 3} if ci else {"updates": 20, "eval_every": 5}}
  overrides = {  # the world-model stage's own settings; task RL keeps configs/default.py's
      "rwml": {"algo": {"name": "grpo", "group_size": 8, "loss": {"kl_coef": 0.001}}, "paw": {"enabled": False},
               "optim": {"learning_rate": 3e-4}, "batch": {"mini_batch": r.triplets_per_update * 8}, **length},
      "wm_sft": length}
  c.stage_overrides = {stage: overrides[stage] for stage in c.stages.split(",") if stage in overrides}
  if ci:
    r.collect_tasks, r.filter_samples, r.panel_size = 24, 2, 32
    c.train.updates = 4
  return c
