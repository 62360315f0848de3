"""The SFT warm-up on random play: it lowers the action NLL of its rows and, with a WM coefficient, the
next-observation CE, starting from the given weights and leaving them to RL."""
import dataclasses
import re

import jax
import jax.numpy as jnp

from paw_jax.programs.sft import format_warmup
from paw_jax.run import Run
from tiny_run import tiny_run_config


def test_warm_up_learns_the_reply_format_and_the_dynamics(tmp_path, capsys):
  config = tiny_run_config(tmp_path, format_warmup_steps=30, format_warmup_episodes=16, format_warmup_wm_coef=1.0,
                           format_warmup_lr=3e-3)
  run = Run.open(config, resuming=False)
  params = run.take_params()
  one_step = dataclasses.replace(config, train=dataclasses.replace(config.train, format_warmup_steps=1))
  format_warmup(dataclasses.replace(run, config=one_step), jax.tree.map(jnp.copy, params))  # the starting losses
  start = capsys.readouterr().out
  format_warmup(run, params)
  end = capsys.readouterr().out
  pattern = r"format warm-up: \d+ steps, final action NLL ([\d.]+), next-observation CE ([\d.]+)"
  (nll0, ce0), (nll1, ce1) = (map(float, re.search(pattern, out).groups()) for out in (start, end))
  assert nll1 < 0.5 * nll0 and ce1 < ce0, (nll0, nll1, ce0, ce1)
