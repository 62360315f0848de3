"""Config files, their documented variants (config docstrings, launch/, the Colab notebook), the paper's
hyperparameters and paw_jax.distributed (the launch scripts: tests/test_launch.py; the notebook runs in
tests/test_notebook.py)."""
import dataclasses
import inspect
import os
import pathlib
import re
import socket
import subprocess
import sys
import textwrap

import pytest
from absl import flags
from ml_collections import config_flags
from ml_collections.config_flags.config_flags import ConfigFileFlagParser

from paw_jax import distributed, prompts, scratch
from paw_jax.algos.paw import VARIANTS, PawConfig
from paw_jax.config import from_configdict
from paw_jax.envs import Task, env_class

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted(p.name for p in (ROOT / "configs").glob("*.py"))
_DOCUMENTED = re.compile(r"configs/(\w+\.py)(?::([\w.,=/-]+))?")


def documented_variants() -> list[str]:
  """Every `configs/x.py[:variant]` written in the config docstrings, launch/ and the notebook."""
  files = [ROOT / "configs" / name for name in CONFIG_FILES] + sorted((ROOT / "launch").iterdir())
  texts = [f.read_text() for f in files + [ROOT / "notebooks" / "paw_jax_colab.ipynb"]]
  found = {f"{name}:{variant}" if variant else name for text in texts for name, variant in _DOCUMENTED.findall(text)}
  return sorted(found | set(CONFIG_FILES))


def load(spec: str):
  """As `--config=configs/<spec>` does: config_flags' own parser (loads the file by path, calls get_config, locks)."""
  return ConfigFileFlagParser("config").parse(str(ROOT / "configs" / spec))


def get(config, path: str):
  for part in path.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_config_docstring_holds_its_launch_commands(name):
  doc = (ROOT / "configs" / name).read_text()
  assert f"python -m paw_jax.main --config=configs/{name}" in doc
  if name in PAPER_TABLE:
    assert f"launch/tpu_pod.sh my-tpu us-central2-b configs/{name}:" in doc
    assert f"sbatch --nodes=2 launch/slurm_gpu.sbatch configs/{name}:" in doc


@pytest.mark.parametrize("spec", documented_variants())
def test_documented_variant_passes_the_strict_conversion(spec):
  """Every field known and present, of its type and in range; env.kwargs taken by the env's constructor."""
  config = from_configdict(load(spec))
  assert config.batch.mini_batch % config.batch.micro_batch == 0
  assert config.batch.max_len >= config.sampling.max_prompt_len + config.sampling.max_new_tokens + 16


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_default_variant_env_plays_both_splits(name, tmp_path):
  config = load(name)
  kwargs = config.env.kwargs.to_dict()
  cls = env_class(config.env.name)
  if "cache_dir" in inspect.signature(cls.__init__).parameters:
    kwargs["cache_dir"] = str(tmp_path)  # keep generated games out of ~/.cache
  env = cls(**kwargs)
  try:
    for split in (config.env.train_split, config.env.eval_split):
      observation, info = env.reset(Task(split, 0))
      assert observation and info["task"]
  finally:
    env.close()


# docs/PAW.md, "Hyperparameters (paper, Appendix A)": one column per env.
PAPER_TABLE = {
    "alfworld.py": {"sampling.max_prompt_len": 2048, "env.kwargs.max_steps": 50, "algo.group_size": 8,
                    "algo.groups_per_update": 16, "batch.mini_batch": 256, "sampling.eval_temperature": 0.4,
                    "algo.loss.kl_coef": 0.01, "prompt.history": 2, "algo.adv.step_similarity": None},
    "webshop.py": {"sampling.max_prompt_len": 4096, "env.kwargs.max_steps": 15, "algo.group_size": 8,
                   "algo.groups_per_update": 16, "batch.mini_batch": 64, "sampling.eval_temperature": 0.4,
                   "algo.loss.kl_coef": 0.01, "prompt.history": 2, "algo.adv.step_similarity": None},
    "search_qa.py": {"sampling.max_prompt_len": 4096, "env.kwargs.max_steps": 4, "algo.group_size": 5,
                     "algo.groups_per_update": 256, "batch.mini_batch": 512, "sampling.eval_temperature": 0.0,
                     "algo.loss.kl_coef": 0.001, "prompt.history": -1, "algo.adv.step_similarity": 0.9},
}
PAPER_SHARED = {"sampling.max_new_tokens": 512, "optim.learning_rate": 1e-6, "sampling.temperature": 1.0,
                "algo.adv.step_weight": 1.0, "algo.adv.step_gamma": 0.95, "algo.adv.norm_by_std": True,
                "algo.loss.clip_low": 0.2, "algo.loss.clip_high": 0.2, "algo.epochs": 1, "train.updates": 150,
                "paw.alpha": 0.75, "algo.loss.rho": 0.2, "paw.enabled": True, "paw.wm_loss": "cmae",
                "paw.adaptive": True, "model.param_dtype": "float32", "model.compute_dtype": "bfloat16",
                "model.remat": True, "model.scan_layers": True, "mesh.data": 1, "mesh.fsdp": -1, "mesh.tensor": 1}
PAPER_REWARDS = {"alfworld": (10.0, -0.1), "webshop": (10.0, -0.1), "search_qa": (1.0, -0.01)}  # success, invalid


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_paper_hyperparameters(name):
  config = load(name)
  for path, expected in {**PAPER_SHARED, **PAPER_TABLE[name]}.items():
    assert get(config, path) == expected, f"{name}: {path} = {get(config, path)}, paper: {expected}"
  cls = env_class(config.env.name)
  assert (cls.r_max, cls.invalid_penalty) == PAPER_REWARDS[config.env.name]
  assert config.batch.max_len == config.sampling.max_prompt_len + 512 + 256 + 256


def test_variant_keys_map_to_settings(monkeypatch):
  monkeypatch.setenv("PAW_MODEL_DIR", "/models")
  config = load("webshop.py:model=llama3.2-3b,algo=ppo,paw=off")
  assert config.model.path == "/models/meta-llama/Llama-3.2-3B-Instruct"
  assert (config.algo.name, config.paw.enabled) == ("ppo", False)
  assert config.workdir == "runs/webshop/llama3.2-3b-ppo-paw_off"
  config = load("alfworld.py:algo=gigpo,paw=ce,model_dir=/ckpt/mine")
  assert (config.algo.name, config.paw.wm_loss, config.model.path) == ("gigpo", "ce", "/ckpt/mine")
  config = load("alfworld.py:paw=lambda1,algo=rloo")
  assert (config.algo.name, config.paw.adaptive, config.paw.enabled) == ("rloo", False, True)
  monkeypatch.delenv("PAW_MODEL_DIR")
  assert load("search_qa.py").model.path == os.path.expanduser("~/models/Qwen/Qwen2.5-3B-Instruct")
  config = load("search_qa.py:data=/data/flashrag")
  assert (config.env.kwargs.data_dir, config.workdir) == ("/data/flashrag", "runs/search_qa/qwen2.5-3b-grpo-paw_on-flashrag")
  assert set(config.env.kwargs.datasets["test"]) >= set(config.env.kwargs.datasets["train"]) == {"nq", "hotpotqa"}
  assert load("smollm2.py:env=sokoban,paw=off").env.name == "sokoban"


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_paw_variant_is_its_row_of_the_table_in_every_config(name):
  expected = dataclasses.replace(PawConfig(), **VARIANTS[name])
  for spec in (f"default.py:paw={name}", f"default.py:ci,paw={name}", f"alfworld.py:paw={name}",
               f"search_qa.py:paw={name},algo=gigpo", f"smollm2.py:paw={name}"):
    assert from_configdict(load(spec)).paw == expected, spec
  assert load(f"webshop.py:paw={name}").workdir == f"runs/webshop/qwen2.5-1.5b-grpo-paw_{name}"


def test_default_config_variants():
  assert (load("default.py").workdir, load("default.py:ci").workdir) == ("runs/default", "runs/ci")
  ci, plain = load("default.py:ci"), load("default.py")
  assert (ci.train.updates, plain.train.updates) == (8, 40)
  assert from_configdict(load("default.py:ci,paw=off")).paw.enabled is False
  lake4 = load("default.py:setting=lake4,paw=echo")
  assert lake4.workdir == "runs/default-paw_echo-setting_lake4"
  assert lake4.env.kwargs.to_dict() == dict(size=4, hole_prob=0.2, max_steps=12, hazard_hint=False)
  assert load("default.py").env.kwargs.to_dict() == dict(size=3, hole_prob=0.2, max_steps=8)
  env = env_class("frozenlake")(**lake4.env.kwargs.to_dict())
  observation, _ = env.reset(Task("eval", 0))
  assert "Around you" not in observation and len(observation.splitlines()) == 5  # the outcome and the 4x4 map
  sokoban = from_configdict(load("default.py:setting=sokoban"))
  assert (sokoban.env.name, sokoban.prompt.task.startswith("Push the box X")) == ("sokoban", True)
  assert (sokoban.prompt.instruction, sokoban.algo) == (from_configdict(load("default.py")).prompt.instruction,
                                                        from_configdict(load("default.py")).algo)


def test_rwml_textworld_plays_the_paw_setting_and_alfworld_shares_its_prompt():
  paw_textworld, rwml_textworld = load("default.py:setting=textworld"), load("rwml.py:env=textworld")
  shared = ["env.name", "env.kwargs", "env.num_envs", "env.eval_split", "tokenizer.vocab_size", "prompt.task",
            "prompt.list_admissible", "prompt.instruction", "sampling.max_prompt_len", "sampling.max_new_tokens",
            "batch.max_len", "batch.max_obs_tokens", "optim.learning_rate", "train.format_warmup_steps",
            "train.eval_episodes"]
  assert [get(paw_textworld, path) for path in shared] == [get(rwml_textworld, path) for path in shared]
  assert (paw_textworld.prompt.list_admissible, paw_textworld.tokenizer.vocab_size) == (True, 2048)
  alfworld = load("rwml.py:env=alfworld_gen")
  assert (alfworld.prompt.instruction, alfworld.batch.max_obs_tokens) == (paw_textworld.prompt.instruction, 96)
  assert (alfworld.sampling.max_prompt_len, alfworld.batch.max_len) == (768, 768 + alfworld.rwml.max_new_tokens)
  # a partial's env.kwargs replaces the lake's whole: no FrozenLake field is left in a text env's
  assert "size" not in rwml_textworld.env.kwargs and "size" not in alfworld.env.kwargs


@pytest.mark.parametrize("setting, episodes", [("lake3", 100), ("lake4", 100), ("sokoban", 100),
                                               ("textworld", 48)])  # a new TextWorld game costs ~1 s to generate
def test_default_setting_prompts_and_rows_fit_on_random_play(setting, episodes):
  """With the tokenizer a run trains on the env's text: every turn's prompt without history (the rollout drops
  history to fit) fits sampling.max_prompt_len, else the episode ends as an error; prompt + reply + observation
  header + observation fits batch.max_len."""
  config = from_configdict(load(f"default.py:setting={setting}"))
  env = env_class(config.env.name)(**config.env.kwargs)
  tokenizer = scratch.train_env_tokenizer(env, config.prompt, config.tokenizer.vocab_size, episodes=episodes, seed=0)
  longest_prompt = longest_row = 0
  for task_text, step, history, observation, admissible, action, next_observation in scratch.random_play(
      env, config.env.eval_split, episodes=episodes, seed=1):
    text = prompts.render_turn(type(env), config.prompt, task_text, step, [], observation, admissible)
    prompt = len(tokenizer.encode_chat(prompts.chat_messages(config.prompt, text), add_generation_prompt=True))
    reply = len(tokenizer.encode(scratch.reply_text(type(env), action))) + 1  # + end of turn
    obs = min(len(tokenizer.encode(config.batch.obs_header + next_observation)), config.batch.max_obs_tokens)
    longest_prompt, longest_row = max(longest_prompt, prompt), max(longest_row, prompt + reply + obs)
  assert longest_prompt <= config.sampling.max_prompt_len
  assert longest_row <= config.batch.max_len


@pytest.mark.parametrize("spec, message", [
    ("alfworld.py:modle=qwen2.5-7b", r"unknown key 'modle'; known keys: model, model_dir, algo, paw"),
    ("webshop.py:model=gpt-5", r"model='gpt-5' is unknown; expected one of qwen2.5-1.5b"),
    ("search_qa.py:algo=dpo", r"algo='dpo' is unknown"),
    ("alfworld.py:paw", r"expected comma-separated key=value pairs, got 'paw'"),
    ("alfworld.py:paw=on,paw=off", r"key 'paw' given twice"),
    ("smollm2.py:env=alfworld", r"env='alfworld' is unknown; expected one of frozenlake, sokoban"),
    ("webshop.py:paw=echo2", r"paw='echo2' is unknown; expected one of on, off, ce, lambda1, echo, placebo"),
    ("default.py:setting=lake5", r"setting='lake5' is unknown; expected one of lake3, lake4, sokoban"),
    ("default.py:cl", r"expected comma-separated key=value pairs, got 'cl'"),
])
def test_bad_variant_is_a_clear_value_error(spec, message):
  with pytest.raises(ValueError, match=message):
    load(spec)


def test_command_line_length_override_moves_max_len():
  argv = ["main", f"--config={ROOT}/configs/alfworld.py:algo=gigpo", "--config.sampling.max_prompt_len=4096",
          "--config.batch.micro_batch=8"]
  values = flags.FlagValues()  # as paw_jax.main defines it; overrides are flags made from the argv at definition
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True, sys_argv=argv)
  values(argv)
  assert (values.config.batch.max_len, values.config.batch.micro_batch) == (5120, 8)


# --- paw_jax.distributed ----------------------------------------------------------------------------------------------
def test_distributed_is_a_noop_on_a_single_process(monkeypatch):
  for name in ("PAW_COORDINATOR", "SLURM_NTASKS"):
    monkeypatch.delenv(name, raising=False)
  assert distributed.maybe_initialize_distributed() is False
  monkeypatch.setenv("SLURM_NTASKS", "1")  # `srun -n1`: still one process
  assert distributed.maybe_initialize_distributed() is False


def test_distributed_joins_two_processes_from_the_launcher_environment():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  program = textwrap.dedent("""
      import jax
      from paw_jax.distributed import maybe_initialize_distributed
      assert maybe_initialize_distributed()
      print(jax.process_index(), jax.process_count(), jax.device_count())
  """)
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "PAW_COORDINATOR": f"127.0.0.1:{port}", "SLURM_NTASKS": "2"}  # process count and id as srun gives them
  procs = [subprocess.Popen([sys.executable, "-c", program], env={**env, "SLURM_PROCID": str(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
  assert sorted(out.splitlines()[-1].split() for out, _ in outs) == [["0", "2", "4"], ["1", "2", "4"]]
