"""RWML (docs/RWML.md) against its baselines, one command per arm: world-model RL on the agent's own transitions,
then task RL from its policy; next-state SFT then task RL; task RL alone.

  python -m paw_jax.main --config=configs/rwml.py                          # FrozenLake from scratch on a CPU
  python -m paw_jax.main --config=configs/rwml.py:env=textworld            # text observations, MiniLM similarity
  python -m paw_jax.main --config=configs/rwml.py:method=sft --config.workdir=runs/rwml/frozenlake-sft
  python -m paw_jax.main --config=configs/rwml.py:ci                        # minutes-sized, for the test suite
  python -m paw_jax.main --config=configs/rwml.py:env=textworld,size=ci    # the same on TextWorld
  python -m paw_jax.main --config=configs/rwml.py:env=alfworld_gen         # generated ALFWorld (see below)
  python bench/rwml_benchmark.py                                            # 3 arms x 3 seeds, the table and plot

Variant keys: env = frozenlake (default) | textworld | alfworld_gen (generated ALFWorld problems, offline); method =
rwml (default) | sft | rl; size = full (default) | ci (`ci` alone, or among the keys, means size=ci).
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
TextWorld: configs/default.py's setting, the one where task RL learns on a CPU: quests of two steps in one room (take
the keycard, then unlock the safe with it), 10 moves, 128 games per split, 400 warm-up steps on random play without
look / inventory / examine, task RL at 2e-4. (The first runs played 2 rooms / 3 objects / 8 moves with 100 warm-up
steps: the warmed-up policy read the game and never won one, bench/RESULTS.md.) Observations are sentences, compared by
MiniLM; τ is tools/rwml_calibrate's proposal on these games, τ_filter the paper's half of it. The runs are short: 4
world-model updates, then 8 of task RL.
ALFWorld (generated problems, pick-and-place only): random play won 0 of 20 episodes of 30 moves (~24 admissible
commands a step, a room of ~30 receptacles), so task RL from scratch sees no reward there: the variant runs the
pipeline (the world-model stages have data), but a policy that learns the task needs a pretrained model.
"""
import importlib.util
import pathlib

from paw_jax import paper_configs


def _load_default():
  """configs/default.py, which is a config file, not a package module."""
  spec = importlib.util.spec_from_file_location("default_config", pathlib.Path(__file__).with_name("default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


DEFAULT = _load_default()

METHODS = {"rwml": "rwml,rl", "sft": "wm_sft,rl", "rl": "rl"}
# τ per env for MiniLM, from `python -m paw_jax.tools.rwml_calibrate` on the configured games (bench/RESULTS.md)
TEXTWORLD_TAU = 0.291
ALFWORLD_TAU = 0.147


def _frozenlake(c) -> None:
  """configs/default.py's 3x3 lake; a predicted map is judged by ROUGE-L."""
  c.sampling.max_prompt_len = 160  # the next-state prompt is the turn's plus the potential action
  c.batch.max_len = 256
  r = c.rwml
  r.instruction = "Reply with the map after this move as <next_state>map</next_state>."
  r.similarity, r.tau, r.filter_tau = "rouge_l", 0.1, 0.1
  r.max_new_tokens = 48  # an empty think block and a 3x3 map in tags: ~25 tokens
  r.max_prediction_tokens = 64


def _text_env(c, partial: dict, tau: float) -> None:
  """A text-observation env (`partial` builds on configs/default.py's TEXT_ENV prompt), predictions judged by MiniLM."""
  DEFAULT.apply(c, partial)
  r = c.rwml
  r.instruction = "Reply with what you will see after this action as <next_state>observation</next_state>."
  r.similarity, r.embedder, r.tau, r.filter_tau = "cosine", "minilm", tau, tau / 2
  r.max_new_tokens = r.max_prediction_tokens = 96
  # a row is a next-state prompt and its prediction, or in task RL a prompt, an action and the next observation
  c.batch.max_len = max(c.batch.max_len, c.sampling.max_prompt_len + r.max_new_tokens)


def _textworld(c) -> None:
  """configs/default.py's TextWorld setting: its games, warm-up and task-RL step, the one that learns there."""
  _text_env(c, DEFAULT.SETTINGS["textworld"], tau=TEXTWORLD_TAU)


def _alfworld_gen(c) -> None:
  env = dict(name="alfworld", kwargs=dict(source="generated", task_types=("pick_and_place_simple",), max_steps=30))
  # the first observation lists every receptacle; ~24 commands a step
  partial = dict(env=env, sampling=dict(max_prompt_len=768), train=dict(eval_episodes=32))
  _text_env(c, DEFAULT.merged(DEFAULT.TEXT_ENV, partial), tau=ALFWORLD_TAU)


ENVS = {"frozenlake": _frozenlake, "textworld": _textworld, "alfworld_gen": _alfworld_gen}


def get_config(arg: str = ""):
  items = ["size=ci" if item.strip() == "ci" else item for item in (arg or "").split(",")]
  v = paper_configs.parse_variant(",".join(items), env="frozenlake", method="rwml", size="full")
  env, method = paper_configs.choice(v, "env", ENVS), paper_configs.choice(v, "method", METHODS)
  ci = paper_configs.choice(v, "size", ("full", "ci")) == "ci"
  c = DEFAULT.get_config("ci" if ci else "")  # the from-scratch model, prompt and task RL this starts from
  c.workdir = f"runs/rwml/{env}-{method}{'-ci' if ci else ''}"
  c.stages = METHODS[method]
  c.tokenizer.with_next_state = True
  c.train.format_warmup_next_state = True
  ENVS[env](c)
  r = c.rwml
  r.collect_tasks, r.collect_group_size = 64, 3
  r.filter_samples = 4
  r.triplets_per_update = 16
  r.panel_size, r.panel_samples = 64, 2
  length = {"train": {"updates": 6, "eval_every": 3} if ci else {"updates": 20, "eval_every": 5}}
  if env != "frozenlake":  # an update takes ~1 min on the shared 2-core machine (prompts of ~300 tokens)
    r.collect_tasks, r.filter_samples, r.panel_size = 32, 2, 32
    c.train.eval_every, c.train.updates = 4, 8
    length = {"train": {"updates": 4, "eval_every": 2}}
  overrides = {  # the world-model stage's own settings; task RL keeps configs/default.py's
      "rwml": {"algo": {"name": "grpo", "group_size": 8, "loss": {"kl_coef": 0.001}}, "paw": {"enabled": False},
               "optim": {"learning_rate": 3e-4}, "batch": {"mini_batch": r.triplets_per_update * 8}, **length},
      "wm_sft": length}
  c.stage_overrides = {stage: overrides[stage] for stage in c.stages.split(",") if stage in overrides}
  if ci and env == "frozenlake":
    r.collect_tasks, r.filter_samples, r.panel_size = 24, 2, 32
    c.train.updates = 4
  elif ci:  # each stage runs, briefly: a smoke run of ~10 min
    r.collect_tasks, r.panel_size = 8, 16
    c.train.format_warmup_steps, c.train.eval_episodes, c.train.eval_every, c.train.updates = 20, 16, 1, 2
    for stage in c.stage_overrides.values():
      stage["train"] = {"updates": 2, "eval_every": 1}
  return c
