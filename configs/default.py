"""The embedded default: a from-scratch model learns FrozenLake with GiGPO + PaW on a laptop CPU (~10 min, 2 cores).

  python -m paw_jax.main --config=configs/default.py --config.workdir=runs/default
  python -m paw_jax.main --config=configs/default.py:ci   # minutes-sized, for the test suite
  python -m paw_jax.main --config=configs/default.py:paw=echo,setting=lake4 --config.workdir=runs/echo-lake4
  python -m paw_jax.main --config=configs/default.py:paw=placebo,setting=sokoban --config.workdir=runs/placebo-sokoban

Variants (comma-separated): ci (the minutes-sized run), paw=on (default) | off | ce | lambda1 | echo | placebo
(algos.paw.VARIANTS), setting=lake3 (default: random 3x3 maps, a line names the hazards next to the player) | lake4
(random 4x4 maps without that line: the policy must read the map) | sokoban (one box in a small room: the grid is the
observation, and a push into a corner loses the level) | textworld (a generated two-step quest in one room: prose
observations, the game's admissible commands listed). bench/paw_ablation.py runs the variants on the settings.

Why these values: the model (~0.5M params, Qwen3 architecture, BPE vocab 1024 trained on the env's own text) is
small enough to update in seconds on 2 cores; FrozenLake's observation is the whole state, so no history is needed
(history=0) and the reply is just `<action>...</action>` (think=False). The prompt is the paper's structure in short
words, with the observation last, next to the reply (~100 tokens instead of ~145: each update trains faster). A
warm-up on random play (moves that stay on the lake) teaches the reply format and, with CE on the next observation,
the dynamics (without it, a fresh model's clipped-MAE WM loss sits at p ≈ 0, where its gradient vanishes). Random
moves carry no task signal: which move wins is left to RL. The learning rate is the scale that moves a fresh small
model (the paper's 1e-6 is for 1.5B+); with Qwen3's q/k norms 1e-3 is stable (it collapsed without them).
"""
from paw_jax import paper_configs
from paw_jax.algos.paw import VARIANTS
from paw_jax.config import base_config


def merged(*partials: dict) -> dict:
  """One partial config from several, section by section: a later partial's fields replace an earlier one's."""
  return {section: {k: v for p in partials for k, v in p.get(section, {}).items()} for p in partials for section in p}


def apply(c, partial: dict) -> None:
  """Sets a partial config's fields on the config c, section by section; a dict field (env.kwargs) is replaced whole,
  not merged into the one c holds."""
  for section, fields in partial.items():
    for name, value in fields.items():
      c[section][name] = value


# A text-observation env (configs/rwml.py's too): each game's own objective and its admissible commands in the prompt
TEXT_ENV = dict(
    env=dict(num_envs=64, eval_split="eval_in"),  # one sampler call steps every episode of an update
    tokenizer=dict(vocab_size=2048),  # generated names: a next-state prompt took up to 383 tokens at 1024, 272 here
    prompt=dict(task="", list_admissible=True,
                instruction="Reply with one admissible action as <action>action</action>."),
    sampling=dict(max_new_tokens=16),  # the longest command and its tags: ~10 tokens
    batch=dict(max_obs_tokens=96))

LAKE_PROMPT = dict(task="Walk from P to the goal G without falling into a hole O.")
SETTINGS = {  # setting=NAME: a partial config (the env, its kwargs, the prompt's task wording)
    # random 3x3 maps: 9% random-policy success, enough reward signal to learn from on a CPU
    "lake3": dict(env=dict(name="frozenlake", kwargs=dict(size=3, hole_prob=0.2, max_steps=8)),
                  prompt=LAKE_PROMPT),
    # random 4x4 maps, no line naming the holes and edges next to the player: the policy must find them on the map
    "lake4": dict(env=dict(name="frozenlake", kwargs=dict(size=4, hole_prob=0.2, max_steps=12, hazard_hint=False)),
                  prompt=LAKE_PROMPT),
    # one box in a 4x4 room, 1-3 moves from solved: 24% random-policy success (29% without blocked moves), ~1,800
    # distinct levels in 2,000 tasks; a push into a corner loses the level, so what a move does to the box matters.
    # Prompts are <= 140 tokens (the 6x6 grid), rows <= 220 (+ reply and the ~46-token next grid)
    "sokoban": dict(env=dict(name="sokoban", kwargs=dict(dim=6, num_boxes=1, min_moves=1, max_moves=3, max_steps=8)),
                    prompt=dict(task="Push the box X onto the target O: walking into the box pushes it. # is a wall, "
                                     "P is you."),
                    sampling=dict(max_prompt_len=160), batch=dict(max_len=224)),
    # TextWorld quests of two steps in one room (take the keycard, then unlock the safe with it): the observation is
    # prose, a step's command list changes with what the last one did. 25% random-policy success in 10 moves. Each
    # quest step earns half the win's reward (the game's score), as the first step is met far more often than a win.
    # The warm-up's random play leaves out look / inventory / examine: on all commands it taught a policy that reads.
    "textworld": merged(TEXT_ENV, dict(
        env=dict(name="textworld", kwargs=dict(game="custom", settings=dict(world_size=1, nb_objects=4, quest_length=2),
                                               max_steps=10, num_games=128, dense_reward=True,
                                               explore_state_changes=True)),
        # a first turn holds the objective twice (the task and the game's intro): 1 in 64 eval prompts was over 416
        sampling=dict(max_prompt_len=448), batch=dict(max_len=448 + 16 + 96),
        train=dict(format_warmup_steps=400, eval_episodes=64),  # 100 steps left 78% of eval moves invalid
        optim=dict(learning_rate=2e-4))),  # at 1e-3 RL lost the warm-up's acting policy within 5 updates
}
DEFAULTS = dict(paw="on", setting="lake3")


def get_config(arg: str = ""):
  items = [item.strip() for item in (arg or "").split(",") if item.strip()]
  ci = "ci" in items
  v = paper_configs.parse_variant(",".join(item for item in items if item != "ci"), **DEFAULTS)
  paw, setting = paper_configs.choice(v, "paw", VARIANTS), paper_configs.choice(v, "setting", SETTINGS)
  c = base_config()
  c.workdir = "runs/" + "-".join(["ci" if ci else "default", *(f"{k}_{x}" for k, x in v.items() if x != DEFAULTS[k])])
  c.env.num_envs = 128
  c.env.in_process = True  # a pure-Python step costs less than a message to a worker
  c.prompt.history = 0
  c.prompt.think = False
  c.prompt.list_admissible = False  # the instruction names the four moves
  c.prompt.instruction = "Reply with your move (up, down, left or right) as <action>move</action>."
  c.prompt.order = "task,instruction,history,admissible,observation"
  c.tokenizer.vocab_size = 1024
  c.sampling.max_new_tokens = 8
  c.sampling.max_prompt_len = 128  # prompts are ~90-110 tokens; rows must fit prompt + reply + observation
  c.sampling.eval_temperature = 0.4  # the paper's; greedy picks one action for every state early in training
  c.batch.max_len = 192  # prompt + reply ~8 + observation ~40: at most two row-length buckets
  c.batch.max_obs_tokens = 64
  c.batch.micro_batch = 32
  c.batch.mini_batch = 128  # several optimizer steps per update: more learning per (costly) rollout
  c.algo.name = "gigpo"  # grid states repeat within a group: step-level credit on top of GRPO's
  c.algo.group_size = 8
  c.algo.groups_per_update = 8
  c.algo.loss.kl_coef = 0.0
  c.algo.old_logp = "sampler"  # equal to the trainer's to 1e-5 (tests/test_learner.py): saves a forward pass
  c.optim.learning_rate = 1e-3
  c.optim.warmup_steps = 5
  c.optim.weight_decay = 0.0
  c.train.updates = 40
  c.train.format_warmup_steps = 100
  c.train.format_warmup_episodes = 512
  c.train.format_warmup_wm_coef = 1.0
  c.train.eval_every = 5
  c.train.eval_episodes = 100
  c.train.checkpoint_every = 5
  c.paw.update(VARIANTS[paw])
  apply(c, SETTINGS[setting])  # last: a setting may resize what the lines above set
  if ci:
    c.train.updates = 8
    c.train.eval_every = 4
    c.train.eval_episodes = 32
    c.train.checkpoint_every = 2
  return c
