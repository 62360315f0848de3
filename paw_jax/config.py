"""Every setting of a run: typed, frozen sections holding the only defaults, and the one strict conversion from the
ml-collections ConfigDict that `configs/*.py` and `--config.a.b=v` overrides produce.

  config = from_configdict(config_dict)   # ConfigError: one line naming the field, the value and what was expected

Files in configs/ start from `base_config()` (a ConfigDict made from these defaults) and override what differs. The
sections that a module consumes are that module's own dataclasses (`PromptConfig`, `SamplingConfig`, `BatchConfig`,
`LossConfig`, `AdvantageConfig`, `PawConfig`, `OptimConfig`); the rest are defined here. Nothing but this module reads
the ConfigDict.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import os
import types
import typing
from typing import Any, Callable, Mapping

import ml_collections

from paw_jax.algos.advantages import ADVANTAGES, AdvantageConfig
from paw_jax.algos.losses import POLICY_LOSSES, WM_LOSSES, LossConfig
from paw_jax.algos.paw import ENTROPY_MODES, NORMALISE_MODES, TARGET_MODES, PawConfig
from paw_jax.algos.rewards import SIMILARITY_REWARDS
from paw_jax.envs import ENV_NAMES, env_class
from paw_jax.models.config import ATTENTION_IMPLS, SUPPORTED_MODEL_TYPES
from paw_jax.models.embedders import EMBEDDERS
from paw_jax.models.tokenizer import BPE_SPECIAL_TOKENS
from paw_jax.programs import PROGRAMS
from paw_jax.prompts import PARTS, PromptConfig
from paw_jax.sampling import SamplingConfig

DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
  """A user error in the run's settings: its message is the one line shown (exit status 2)."""


@dataclasses.dataclass(frozen=True)
class EnvConfig:
  name: str = "frozenlake"
  kwargs: dict = dataclasses.field(default_factory=dict)  # the env constructor's keyword arguments
  num_envs: int = 64  # worker slots; independent of the batch size (episodes run in waves)
  in_process: bool = False  # True for the pure-Python grid envs, where IPC costs more than a step
  step_timeout_s: float = 60.0
  reset_timeout_s: float = 300.0
  train_split: str = "train"
  eval_split: str = "eval"


@dataclasses.dataclass(frozen=True)
class ScratchModel:
  """A from-scratch decoder (model.path = ''): its vocabulary is the env-trained tokenizer's."""
  model_type: str = "qwen3"
  hidden_size: int = 128
  intermediate_size: int = 384
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  max_position_embeddings: int = 2048


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  path: str = ""  # HF directory, .gguf, or 'smollm2'; '' = a from-scratch model (`scratch`)
  scratch: ScratchModel = ScratchModel()
  param_dtype: str = "float32"
  compute_dtype: str = "float32"
  # The KL reference's weights: only read, so with bfloat16 compute "bfloat16" gives the same numbers in half the bytes.
  ref_dtype: str = "float32"
  remat: bool = False  # the backward recomputes each whole layer (else it keeps the layer's projections)
  scan_layers: bool = True
  attention_impl: str = "auto"  # "auto": cuDNN flash attention on an NVIDIA GPU with 16-bit compute, else XLA


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
  path: str = ""  # '' = the model's own; for a scratch model, a BPE trained on the env's text
  vocab_size: int = 512
  corpus_episodes: int = 200  # random-play episodes whose text trains the BPE
  with_next_state: bool = False  # the corpus also holds next-state prompts and labels (RWML, next-state SFT)


@dataclasses.dataclass(frozen=True)
class BatchConfig:
  max_len: int = 3072  # row length cap: prompt + response + observation
  max_obs_tokens: int = 256  # PaW: o_{t+1} is truncated to this many tokens
  obs_header: str = "\nObservation: "  # PaW: fixed context between the response and o_{t+1}
  micro_batch: int = 8  # rows per micro-batch (gradient accumulation inside the jitted step)
  mini_batch: int = 256  # rows per optimizer step


@dataclasses.dataclass(frozen=True)
class AlgoConfig:
  name: str = "grpo"  # an entry of algos.advantages.ADVANTAGES; 'ppo' adds the critic
  group_size: int = 8
  groups_per_update: int = 16
  epochs: int = 1  # passes over the update's rows
  old_logp: str = "trainer"  # 'trainer': recomputed before the update; 'sampler': the sampler's own
  loss: LossConfig = LossConfig()
  adv: AdvantageConfig = AdvantageConfig()


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 1e-6
  warmup_steps: int = 0
  decay_steps: int = 0  # cosine decay to `final_lr_fraction` over this many steps after warm-up; 0: constant
  final_lr_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  grad_clip: float = 1.0  # global-norm clipping


@dataclasses.dataclass(frozen=True)
class CriticConfig:
  """PPO's critic; the rest of its optimizer is `optim`'s."""
  learning_rate: float = 1e-5
  value_clip: float = 0.5


@dataclasses.dataclass(frozen=True)
class MeshConfig:
  data: int = -1  # -1 takes the devices the other axes leave
  fsdp: int = 1
  tensor: int = 1


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  updates: int = 150
  # The warm-up: SFT on random play before RL (the reply format and, with a WM coefficient, the dynamics).
  format_warmup_steps: int = 0
  format_warmup_lr: float = 1e-3  # its own rate: the RL rate is often far too small to learn a format
  format_warmup_episodes: int = 64  # random-play episodes whose turns are the warm-up rows
  format_warmup_wm_coef: float = 0.0  # weight of the next-observation CE (world-model warm-up); 0 = format only
  format_warmup_next_state: bool = False  # also next-state SFT rows of the same play: RWML's format, for a scratch model
  eval_every: int = 10
  eval_at_start: bool = True  # also evaluate before the first update (logged as update 0)
  eval_episodes: int = 128
  # Rollouts sampled with a key per episode and turn in calls of sampling.eval_rows rows, their turns in (group,
  # trajectory, turn) order: an update's rows then do not depend on the env pool's waves nor on the number of
  # processes. Always so with several processes (each plays its own share of the groups).
  episode_keys: bool = False
  checkpoint_every: int = 5
  keep_checkpoints: int = 3
  export_hf: bool = True  # write the final policy as a HF directory


@dataclasses.dataclass(frozen=True)
class RwmlConfig:
  """World-model learning on the agent's own transitions (docs/RWML.md): the triplets, the too-easy filter, the
  similarity reward; and the world-model eval panel that every program logs."""
  collect_tasks: int = 128  # train tasks the policy plays for triplets
  collect_group_size: int = 3  # rollouts per task (the paper's ALFWorld setting)
  validation_share: float = 0.1  # tasks (with all their triplets) held out from RWML's training
  sft_steps: int = 0  # next-state SFT on the validation triplets: the filter model (0: the policy itself)
  filter_samples: int = 10  # K predictions per train triplet; 0 keeps every triplet
  filter_tau: float = 0.1  # easy: one of the K predictions is rewarded 1 under this stricter threshold
  keep_easy: float = 0.1  # share of easy triplets kept (seeded)
  similarity: str = "cosine"  # algos.rewards.SIMILARITY_REWARDS: cosine (an embedder) | rouge_l (grid maps)
  embedder: str = "minilm"  # models.embedders.EMBEDDERS
  embedder_path: str = ""  # '' = the embedder's packaged default
  tau: float = 0.2  # r = 1[d(prediction, real) < tau]: per env and embedder (tools/rwml_calibrate)
  max_prediction_tokens: int = 256  # a parsed prediction is cut to this many tokens before it is compared
  max_new_tokens: int = 512  # a prediction's reply: reasoning and the <next_state> block
  instruction: str = ""  # replaces the next-state instruction ('' keeps the standard one): short words for a small model
  triplets_per_update: int = 32  # RWML: G (algo.group_size) predictions of each; next-state SFT: rows per step
  panel_size: int = 64  # held-out triplets (random play on the eval split) of the world-model eval; 0: none
  panel_samples: int = 0  # predictions per panel triplet for eval/wm_reward; 0: teacher-forced metrics only


@dataclasses.dataclass(frozen=True)
class Config:
  seed: int = 0
  workdir: str = "runs/default"
  stages: tuple[str, ...] = ("rl",)  # training programs (paw_jax.programs.PROGRAMS) run in order, each from the last
  stage_overrides: dict = dataclasses.field(default_factory=dict)  # stage name -> a partial config for that stage
  env: EnvConfig = EnvConfig()
  model: ModelSpec = ModelSpec()
  tokenizer: TokenizerSpec = TokenizerSpec()
  prompt: PromptConfig = PromptConfig()
  sampling: SamplingConfig = SamplingConfig()
  batch: BatchConfig = BatchConfig()
  algo: AlgoConfig = AlgoConfig()
  paw: PawConfig = PawConfig()
  optim: OptimConfig = OptimConfig()
  critic: CriticConfig = CriticConfig()
  mesh: MeshConfig = MeshConfig()
  train: TrainConfig = TrainConfig()
  rwml: RwmlConfig = RwmlConfig()


# Fields that may differ when a run resumes: how long it goes on and how often it evaluates and checkpoints.
RUN_LENGTH_FIELDS = ("workdir", "train.updates", "train.eval_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.export_hf")


# --- ranges and names ----------------------------------------------------------------------------------------------
def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: v >= low), f">= {low}"


def _between(low: float, high: float, open_low: bool = False) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: (v > low if open_low else v >= low) and v <= high), f"in {'(' if open_low else '['}{low}, {high}]"


def _one_of(names) -> tuple[Callable[[Any], bool], str]:
  names = tuple(names)
  return (lambda v: v in names), f"one of {', '.join(names)}"


_POSITIVE = ((lambda v: v > 0), "> 0")
_AXIS = ((lambda v: v == -1 or v >= 1), "-1 or >= 1")
CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": _at_least(0), "env.name": _one_of(ENV_NAMES),
    "env.num_envs": _at_least(1), "env.step_timeout_s": _POSITIVE, "env.reset_timeout_s": _POSITIVE,
    "model.scratch.model_type": _one_of(SUPPORTED_MODEL_TYPES), "model.param_dtype": _one_of(DTYPES),
    "model.compute_dtype": _one_of(DTYPES), "model.ref_dtype": _one_of(DTYPES),
    "model.attention_impl": _one_of(ATTENTION_IMPLS),
    **{f"model.scratch.{f.name}": _at_least(1) for f in dataclasses.fields(ScratchModel) if f.type == "int"},
    "tokenizer.vocab_size": _at_least(256 + len(BPE_SPECIAL_TOKENS)),  # the bytes + ChatML's special tokens
    "tokenizer.corpus_episodes": _at_least(1),
    "prompt.history": _at_least(-1),
    "sampling.temperature": _at_least(0), "sampling.eval_temperature": _at_least(0), "sampling.top_k": _at_least(0),
    "sampling.top_p": _between(0, 1, open_low=True), "sampling.max_new_tokens": _at_least(1),
    "sampling.max_prompt_len": _at_least(1), "sampling.eval_rows": _at_least(1),
    "batch.max_len": _at_least(2), "batch.max_obs_tokens": _at_least(0), "batch.micro_batch": _at_least(1),
    "batch.mini_batch": _at_least(1),
    "algo.name": _one_of(ADVANTAGES), "algo.group_size": _at_least(1), "algo.groups_per_update": _at_least(1),
    "algo.epochs": _at_least(1), "algo.old_logp": _one_of(("trainer", "sampler")),
    "algo.loss.policy_loss": _one_of(POLICY_LOSSES), "algo.loss.clip_low": _between(0, 1),
    "algo.loss.clip_high": _at_least(0), "algo.loss.kl_coef": _at_least(0), "algo.loss.entropy_coef": _at_least(0),
    "algo.loss.rho": _between(0, 1, open_low=True),
    "algo.adv.eps": _POSITIVE, "algo.adv.step_gamma": _between(0, 1), "algo.adv.step_similarity": _between(0, 1),
    "algo.adv.gae_gamma": _between(0, 1), "algo.adv.gae_lambda": _between(0, 1),
    "paw.alpha": _between(0, 1), "paw.entropy": _one_of(ENTROPY_MODES), "paw.wm_loss": _one_of(WM_LOSSES),
    "paw.normalise": _one_of(NORMALISE_MODES), "paw.targets": _one_of(TARGET_MODES), "paw.wm_coef": _at_least(0),
    "optim.learning_rate": _POSITIVE, "optim.warmup_steps": _at_least(0), "optim.decay_steps": _at_least(0),
    "optim.final_lr_fraction": _between(0, 1), "optim.weight_decay": _at_least(0), "optim.b1": _between(0, 1),
    "optim.b2": _between(0, 1), "optim.grad_clip": _POSITIVE,
    "critic.learning_rate": _POSITIVE, "critic.value_clip": _POSITIVE,
    "mesh.data": _AXIS, "mesh.fsdp": _AXIS, "mesh.tensor": _AXIS,
    "train.updates": _at_least(0), "train.format_warmup_steps": _at_least(0),
    "train.format_warmup_lr": _POSITIVE, "train.format_warmup_episodes": _at_least(1),
    "train.format_warmup_wm_coef": _at_least(0), "train.eval_every": _at_least(1),
    "train.eval_episodes": _at_least(1), "train.checkpoint_every": _at_least(1), "train.keep_checkpoints": _at_least(1),
    "rwml.collect_tasks": _at_least(1), "rwml.collect_group_size": _at_least(1),
    "rwml.validation_share": _between(0, 1, open_low=True), "rwml.sft_steps": _at_least(0),
    "rwml.filter_samples": _at_least(0), "rwml.filter_tau": _POSITIVE, "rwml.keep_easy": _between(0, 1),
    "rwml.similarity": _one_of(SIMILARITY_REWARDS), "rwml.embedder": _one_of(EMBEDDERS), "rwml.tau": _POSITIVE,
    "rwml.max_prediction_tokens": _at_least(1), "rwml.max_new_tokens": _at_least(1),
    "rwml.triplets_per_update": _at_least(1), "rwml.panel_size": _at_least(0), "rwml.panel_samples": _at_least(0),
}


# --- ConfigDict <-> typed ------------------------------------------------------------------------------------------
def base_config() -> ml_collections.ConfigDict:
  """The defaults as a ConfigDict: what a config file starts from and overrides."""
  return ml_collections.ConfigDict(to_dict(Config()))


def to_dict(config: Any) -> dict[str, Any]:
  """The typed config as nested plain dicts (tuples as comma-separated strings, as in the ConfigDict)."""
  def plain(value):
    if dataclasses.is_dataclass(value):
      return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
      return ",".join(value)
    return value
  return plain(config)


def from_configdict(config_dict: ml_collections.ConfigDict | Mapping[str, Any]) -> Config:
  """The strict conversion: every field known, present, of its type and in range; else one ConfigError line."""
  raw = config_dict.to_dict() if isinstance(config_dict, ml_collections.ConfigDict) else dict(config_dict)
  config = _convert(Config, raw, "")
  _check_ranges(config)
  _check_together(config)
  return config


def _convert(cls: type, value: Any, path: str) -> Any:
  if not isinstance(value, Mapping):
    raise ConfigError(f"{path}: expected a section of fields, got {value!r}")
  hints = typing.get_type_hints(cls)
  names = [f.name for f in dataclasses.fields(cls)]
  for key in value:
    if key not in names:
      close = difflib.get_close_matches(str(key), names, n=1)
      hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names)}"
      raise ConfigError(f"{_join(path, key)}: unknown field ({hint})")
  missing = [name for name in names if name not in value]
  if missing:
    raise ConfigError(f"{_join(path, missing[0])}: missing (every field of base_config() must be present)")
  fields = {name: _typed(hints[name], value[name], _join(path, name)) for name in names}
  try:
    return cls(**fields)
  except ValueError as error:  # a section's own check (e.g. PromptConfig's part order)
    raise ConfigError(f"{path}: {error}") from None


def _typed(hint: Any, value: Any, path: str) -> Any:
  """`value` as the field's type: dataclass sections, int, float (ints accepted), bool, str, dict, comma-separated
  tuple[str, ...] and `X | None`; anything else is a ConfigError."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if origin in (typing.Union, types.UnionType) and type(None) in args:
    return None if value is None else _typed(next(a for a in args if a is not type(None)), value, path)
  if dataclasses.is_dataclass(hint):
    return _convert(hint, value, path)
  if origin is tuple:
    if isinstance(value, str):
      return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
      return tuple(value)
  elif hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value)
  elif hint is int and isinstance(value, int) and not isinstance(value, bool):
    return value
  elif hint in (bool, str) and isinstance(value, hint):
    return value
  elif hint is dict and isinstance(value, Mapping):
    return dict(value)
  expected = getattr(hint, "__name__", str(hint)).replace("tuple", "comma-separated names")
  raise ConfigError(f"{path}={value!r}: expected {expected}, got {type(value).__name__}")


def _join(path: str, name: str) -> str:
  return f"{path}.{name}" if path else str(name)


def get(config: Any, path: str) -> Any:
  for part in path.split("."):
    config = getattr(config, part)
  return config


def _check_ranges(config: Config) -> None:
  for path, (ok, expected) in CHECKS.items():
    value = get(config, path)
    if value is not None and not ok(value):
      raise ConfigError(f"{path}={value!r}: expected {expected}")


def _check_together(config: Config) -> None:
  """Fields that constrain each other."""
  b, s = config.batch, config.sampling
  for name in config.stages:
    if name not in PROGRAMS:
      raise ConfigError(f"stages={','.join(config.stages)!r}: unknown stage '{name}' (known: {', '.join(PROGRAMS)})")
  if not config.stages or len(set(config.stages)) != len(config.stages):
    raise ConfigError(f"stages={','.join(config.stages)!r}: expected one or more distinct names of "
                      f"{', '.join(PROGRAMS)}")
  unknown_stage = sorted(set(config.stage_overrides) - set(config.stages))
  if unknown_stage:
    raise ConfigError(f"stage_overrides.{unknown_stage[0]}: not a stage of this run ({','.join(config.stages)})")
  if set(config.stages) & {"rwml", "wm_sft"} and config.rwml.panel_size < 1:
    raise ConfigError("rwml.panel_size=0: expected >= 1 (the world-model eval is the rwml and wm_sft stages' eval)")
  if "rwml" in config.stages and b.max_len < s.max_prompt_len + config.rwml.max_new_tokens:
    raise ConfigError(f"batch.max_len={b.max_len}: expected >= sampling.max_prompt_len + rwml.max_new_tokens = "
                      f"{s.max_prompt_len + config.rwml.max_new_tokens} (a row holds a next-state prompt and reply)")
  if config.stages == ("rwml",) and ADVANTAGES[config.algo.name].needs_critic:
    raise ConfigError(f"algo.name={config.algo.name!r}: the rwml stage expects an algorithm without a critic "
                      f"({', '.join(n for n, a in ADVANTAGES.items() if not a.needs_critic)})")
  if config.stages == ("rwml",) and config.paw.enabled:
    raise ConfigError("paw.enabled=True: expected False in the rwml stage (a prediction has no next observation to "
                      "append)")
  if b.mini_batch % b.micro_batch:
    raise ConfigError(f"batch.micro_batch={b.micro_batch}: expected a divisor of batch.mini_batch={b.mini_batch}")
  if b.max_len < s.max_prompt_len + s.max_new_tokens:
    raise ConfigError(f"batch.max_len={b.max_len}: expected >= sampling.max_prompt_len + sampling.max_new_tokens "
                      f"= {s.max_prompt_len + s.max_new_tokens} (a row holds a whole prompt and reply)")
  if sorted(config.prompt.order) != sorted(PARTS):
    raise ConfigError(f"prompt.order={','.join(config.prompt.order)!r}: expected each of {', '.join(PARTS)} once")
  accepted = inspect.signature(env_class(config.env.name).__init__).parameters
  unknown = sorted(set(config.env.kwargs) - set(accepted))
  if unknown and not any(p.kind == p.VAR_KEYWORD for p in accepted.values()):
    raise ConfigError(f"env.kwargs.{unknown[0]}: unknown for env '{config.env.name}' (it takes "
                      f"{', '.join(n for n in accepted if n != 'self')})")


# --- stages --------------------------------------------------------------------------------------------------------
EXPORT_DIR = "hf_export"  # a run's final policy as a HF directory: what the next stage starts from


def stage_configs(config: Config) -> list[Config]:
  """The run of each stage: the config with that stage's overrides. With several stages, stage S works in
  workdir/S, and every stage after the first starts from the previous one's exported policy and tokenizer (no
  warm-up: the first stage did it)."""
  if len(config.stages) == 1 and not config.stage_overrides:
    return [config]
  configs, previous = [], None
  for index, name in enumerate(config.stages):
    tree = to_dict(config)
    _merge(tree, config.stage_overrides.get(name, {}), f"stage_overrides.{name}")
    tree.update(stages=name, stage_overrides={})
    if len(config.stages) > 1:
      tree["workdir"] = os.path.join(config.workdir, name)  # a gs:// workdir stays one
    if previous is not None:
      tree["model"]["path"] = tree["tokenizer"]["path"] = os.path.join(previous.workdir, EXPORT_DIR)
      tree["train"]["format_warmup_steps"] = 0
    if index + 1 < len(config.stages):
      tree["train"]["export_hf"] = True  # the next stage's start
    configs.append(previous := from_configdict(tree))
  return configs


def _merge(tree: dict[str, Any], overrides: Mapping[str, Any], path: str) -> None:
  """`overrides` (a partial config) written into `tree`; a field `tree` lacks is a ConfigError naming its path."""
  for key, value in overrides.items():
    if key not in tree:
      raise ConfigError(f"{path}.{key}: unknown field")
    if isinstance(value, Mapping) and isinstance(tree[key], dict) and key != "kwargs":
      _merge(tree[key], value, f"{path}.{key}")
    else:
      tree[key] = value


# --- resume safety -------------------------------------------------------------------------------------------------
CONFIG_FILE = "config.json"


def check_resume(config: Config, saved_json: str) -> None:
  """A resume must run the saved config: only RUN_LENGTH_FIELDS may differ; else one line naming the fields."""
  saved, now = _flatten(json.loads(saved_json)), _flatten(json.loads(config_json(config)))
  differing = sorted(k for k in saved.keys() | now.keys()
                     if saved.get(k) != now.get(k) and not k.startswith(RUN_LENGTH_FIELDS))
  if differing:
    changes = "; ".join(f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in differing[:4])
    more = "; ..." if len(differing) > 4 else ""
    raise ConfigError(f"{config.workdir} holds a run with another config ({changes}{more}): resume with the same "
                      "settings or use a new workdir")


def config_json(config: Config) -> str:
  return json.dumps(to_dict(config), indent=1, sort_keys=True)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping) and key != "kwargs":
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat
