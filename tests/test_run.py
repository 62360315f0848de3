"""Run.open: a resume with another config is refused before anything is built, the prompt cap is checked with the
run's tokenizer, the saved tokenizer is reused, and a from-scratch model is placed by the sharding rules."""
import dataclasses

import pytest
from jax.sharding import PartitionSpec as P

from paw_jax.config import CONFIG_FILE, ConfigError, config_json
from paw_jax.run import Run, check_prompt_fits, load_model, load_tokenizer
from paw_jax.sharding import make_mesh
from tiny_run import tiny_run_config


def test_a_resume_with_another_config_is_refused_before_the_tokenizer(tmp_path):
  config = tiny_run_config(tmp_path)
  (tmp_path / CONFIG_FILE).write_text(config_json(config))
  changed = dataclasses.replace(config, seed=1)
  with pytest.raises(ConfigError, match=r"holds a run with another config \(seed: 0 -> 1\)"):
    Run.open(changed, resuming=True)
  assert not (tmp_path / "tokenizer").exists()


def test_the_prompt_cap_is_checked_against_the_first_prompts(tmp_path):
  config = tiny_run_config(tmp_path)
  tokenizer = load_tokenizer(config, tmp_path)
  check_prompt_fits(config, tokenizer)  # 256 tokens hold a 3x3 map's first prompt
  small = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, max_prompt_len=20))
  with pytest.raises(ConfigError, match=r"^sampling\.max_prompt_len=20: expected >= \d+, the tokens of the env's "
                                        r"first train prompt$"):
    check_prompt_fits(small, tokenizer)
  assert load_tokenizer(config, tmp_path).token_bytes() == tokenizer.token_bytes()  # saved: a resume sees the same


def test_a_scratch_model_is_placed_by_the_rule_table_and_handed_over_once(tmp_path):
  config = tiny_run_config(tmp_path)
  mesh = make_mesh(data=2, fsdp=2, tensor=2)
  model = load_model(config, load_tokenizer(config, tmp_path), mesh)
  q = model.layers.q[...]
  assert q.sharding.spec == P(None, "fsdp", "tensor", None) and len(q.addressable_shards) == 8
  run = Run.open(config, resuming=False)
  assert (tmp_path / CONFIG_FILE).read_text() == config_json(config)
  run.take_params()
  with pytest.raises(RuntimeError, match="already handed to a learner"):
    run.take_params()
