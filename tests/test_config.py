"""The typed config: defaults in one place, the strict conversion from a ConfigDict, one-line errors for every kind of
bad field (in-process and through `python -m paw_jax.main`, exit status 2), and the resume check."""
import os
import pathlib
import subprocess
import sys

import pytest

from paw_jax import config as config_lib
from paw_jax.config import Config, ConfigError, base_config, check_resume, config_json, from_configdict

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_base_config_is_the_typed_defaults_and_converts_back():
  assert from_configdict(base_config()) == Config()
  assert base_config().prompt.order == "task,history,observation,admissible,instruction"  # CLI-friendly text


def with_field(path: str, value) -> dict:
  """The defaults as the plain dict a config file may also return, with one field set (any type)."""
  c = base_config().to_dict()
  *parents, name = path.split(".")
  section = c
  for part in parents:
    section = section[part]
  section[name] = value
  return c


@pytest.mark.parametrize("path, value, message", [
    ("algo.nam", "grpo", r"^algo\.nam: unknown field \(did you mean 'name'\?\)$"),
    ("batch.micro_batch", "8", r"^batch\.micro_batch='8': expected int, got str$"),
    ("paw.enabled", 1, r"^paw\.enabled=1: expected bool, got int$"),
    ("algo.name", "dpo", r"^algo\.name='dpo': expected one of grpo, gigpo, rloo, ppo$"),
    ("paw.wm_loss", "mse", r"^paw\.wm_loss='mse': expected one of cmae, ce$"),
    ("env.name", "chess", r"^env\.name='chess': expected one of alfworld, frozenlake, "),
    ("paw.alpha", 1.5, r"^paw\.alpha=1\.5: expected in \[0, 1\]$"),
    ("optim.learning_rate", -1e-3, r"^optim\.learning_rate=-0\.001: expected > 0$"),
    ("batch.micro_batch", 24, r"^batch\.micro_batch=24: expected a divisor of batch\.mini_batch=256$"),
    ("batch.max_len", 1024, r"^batch\.max_len=1024: expected >= sampling\.max_prompt_len \+ "),
    ("prompt.order", "task,history", r"^prompt: prompt\.order must name each of"),
    ("env.kwargs", {"sise": 3}, r"^env\.kwargs\.sise: unknown for env 'frozenlake' \(it takes size, "),
    ("stages", "rl,dpo", r"^stages='rl,dpo': unknown stage 'dpo' \(known: rl, rwml, wm_sft\)$"),
    ("stages", "rl,rl", r"^stages='rl,rl': expected one or more distinct names of rl, rwml, wm_sft$"),
    ("stage_overrides", {"rwml": {}}, r"^stage_overrides\.rwml: not a stage of this run \(rl\)$"),
    ("rwml.similarity", "bleu", r"^rwml\.similarity='bleu': expected one of cosine, rouge_l$"),
    ("rwml.embedder", "bert", r"^rwml\.embedder='bert': expected one of minilm, qwen3_embedding$"),
    ("model.attention_impl", "flash", r"^model\.attention_impl='flash': expected one of auto, xla, cudnn$"),
])
def test_each_kind_of_bad_field_is_one_line_naming_it(path, value, message):
  with pytest.raises(ConfigError, match=message) as error:
    from_configdict(with_field(path, value))
  assert "\n" not in str(error.value)


def test_stage_configs_chain_the_stages_through_their_exports():
  c = base_config()
  c.workdir, c.stages = "runs/x", "rwml,rl"
  c.train.format_warmup_steps, c.train.export_hf = 5, False
  c.stage_overrides = {"rwml": {"algo": {"group_size": 16}, "paw": {"enabled": False}, "train": {"updates": 3}}}
  rwml, rl = config_lib.stage_configs(from_configdict(c))
  assert (rwml.stages, rwml.workdir, rwml.algo.group_size, rwml.train.updates) == (("rwml",), "runs/x/rwml", 16, 3)
  assert rwml.train.format_warmup_steps == 5 and rwml.train.export_hf and rwml.model.path == ""
  assert (rl.stages, rl.workdir, rl.algo.group_size, rl.train.updates) == (("rl",), "runs/x/rl", 8, 150)
  assert rl.model.path == rl.tokenizer.path == "runs/x/rwml/hf_export" and rl.train.format_warmup_steps == 0
  assert not rl.train.export_hf and rwml.stage_overrides == rl.stage_overrides == {}
  one = from_configdict(base_config())
  assert config_lib.stage_configs(one) == [one]  # a single stage keeps its workdir


@pytest.mark.parametrize("overrides, stages, message", [
    ({"rwml": {"algo": {"nam": "grpo"}}}, "rwml,rl", r"^stage_overrides\.rwml\.algo\.nam: unknown field$"),
    ({"rwml": {"algo": {"name": "ppo"}}}, "rwml,rl", r"^algo\.name='ppo': the rwml stage expects an algorithm "
                                                      r"without a critic \(grpo, gigpo, rloo\)$"),
    ({"rwml": {}}, "rwml,rl", r"^paw\.enabled=True: expected False in the rwml stage"),
    ({"rwml": {"rwml": {"panel_size": 0}}}, "rwml,rl", r"^rwml\.panel_size=0: expected >= 1 "),
])
def test_a_bad_stage_override_is_one_line(overrides, stages, message):
  c = base_config()
  c.stages, c.stage_overrides = stages, overrides
  with pytest.raises(ConfigError, match=message):
    config_lib.stage_configs(from_configdict(c))


def test_a_missing_field_is_named():
  c = base_config().to_dict()
  del c["algo"]["epochs"]
  with pytest.raises(ConfigError, match=r"^algo\.epochs: missing"):
    from_configdict(c)


def test_every_range_check_names_a_real_field():
  """CHECKS names real fields: a renamed field cannot silently lose its check."""
  for path in config_lib.CHECKS:
    config_lib.get(Config(), path)


def test_resume_refuses_a_changed_setting_and_allows_run_length_changes():
  saved = config_json(Config())
  longer = from_configdict(with_field("train.updates", 500))
  check_resume(longer, saved)  # run-length fields may change
  with pytest.raises(ConfigError, match=r"holds a run with another config \(optim\.learning_rate: 1e-06 -> 0\.002\)"):
    check_resume(from_configdict(with_field("optim.learning_rate", 2e-3)), saved)


def run_main(*args: str, workdir: pathlib.Path) -> subprocess.CompletedProcess:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.run([sys.executable, "-m", "paw_jax.main", *args, f"--config.workdir={workdir}"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/nothere.py"], "configs/nothere.py"),
    (["--config=configs/default.py", "--config.algo.nam=grpo"], 'Did you mean "name" instead of "nam"?'),
    (["--config=configs/default.py", "--config.env.kwargs.dense_reward=true"],
     "--config.env.kwargs.dense_reward: the config has no field 'dense_reward' under 'env.kwargs'"),
    (["--config=configs/default.py", "--config.batch.micro_batch=eight"], "--config.batch.micro_batch=eight: invalid"),
    (["--config=configs/default.py", "--config.paw.alpha=1.5"], "paw.alpha=1.5: expected in [0, 1]"),
    (["--config=configs/default.py", "--config.optim.learning_rate=-0.001"], "optim.learning_rate=-0.001"),
    (["--config=configs/default.py", "--config.sampling.max_prompt_len=40", "--config.batch.max_len=64",
      "--config.tokenizer.corpus_episodes=20"], "sampling.max_prompt_len=40: expected >= "),
])
def test_the_command_line_reports_a_user_error_in_one_line_with_status_2(tmp_path, args, message):
  result = run_main(*args, workdir=tmp_path / "run")
  assert result.returncode == 2, result.stderr[-2000:]
  assert result.stderr.count("\n") == 1 and result.stderr.startswith("paw_jax: "), result.stderr
  assert message in result.stderr
  assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing was trained, nothing logged
  assert not list((tmp_path / "run").glob("checkpoints/[0-9]*"))
