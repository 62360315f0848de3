"""The RL program: a fresh start warms up and builds the learner from the warmed-up policy (with the critic for
PPO), evaluation is seeded apart from the rollouts and its panel and outcomes do not depend on the number of env
workers, an update whose episodes all crashed is skipped, and each new kind of episode error is printed once."""
import dataclasses

import jax
import numpy as np

from paw_jax.critic import CriticPlugin
from paw_jax.envs.base import Task
from paw_jax.envs.frozenlake import FrozenLakeEnv
from paw_jax.envs.pool import EnvPool
from paw_jax.programs import program_class
from paw_jax.programs.rl import RLProgram
from paw_jax.rollout import Episode
from paw_jax.run import Run
from tiny_run import tiny_run_config


def test_start_warms_up_then_builds_the_learner_with_its_plug_ins(tmp_path):
  config = tiny_run_config(tmp_path, "ppo", format_warmup_steps=3, format_warmup_episodes=8)
  run = Run.open(config, resuming=False)
  initial = jax.tree.map(np.array, run.initial_params)
  with run.env_pool() as pool:
    program = program_class("rl")(run, pool)
    program.start()
    assert isinstance(program, RLProgram) and run.initial_params is None
    learner = program.learner
    moved = [not np.array_equal(a, np.asarray(b)) for a, b in zip(jax.tree.leaves(initial),
                                                                  jax.tree.leaves(learner.params))]
    assert any(moved)  # the warm-up trained the weights RL starts from
    assert int(learner.state.step) == 0  # with a fresh optimizer
    for ref, params in zip(jax.tree.leaves(learner.state.ref_params), jax.tree.leaves(learner.params)):
      np.testing.assert_array_equal(ref, params)  # the KL reference is the warmed-up policy
    (critic,) = learner.plugins
    assert isinstance(critic, CriticPlugin) and set(learner.states()) == {"policy", "critic"}
    first, again = program.evaluate(), program.evaluate()
  assert first == again and 0.0 <= first["eval/success"] <= 1.0  # a fixed task set and sampling key


def test_eval_panel_and_outcomes_do_not_depend_on_the_number_of_env_workers(tmp_path):
  config = tiny_run_config(tmp_path, format_warmup_steps=60, format_warmup_episodes=32)
  config = dataclasses.replace(config, train=dataclasses.replace(config.train, eval_episodes=12))
  run = Run.open(config, resuming=False)
  with run.env_pool() as pool:
    program = RLProgram(run, pool)
    program.start()  # a warmed-up policy: valid moves, so episodes end in different ways
  outcomes = {}
  for temperature in (0.0, 0.4):
    # Calls of 4 rows: one episode in each (one worker), or the eight of a wave in two (eight workers).
    run.config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, eval_rows=4,
                                                                          eval_temperature=temperature))
    for workers, in_process in ((1, True), (8, False)):  # one slot in this process; eight worker processes
      with EnvPool("frozenlake", workers, dict(config.env.kwargs), in_process=in_process) as pool:
        program.pool = pool
        outcomes[temperature, workers] = [(e.task, e.won, e.episode_return, e.length, e.invalid_count)
                                          for e in program.eval_episodes()]
  panel = [Task(config.env.eval_split, i) for i in range(12)]
  for temperature in (0.0, 0.4):
    assert [o[0] for o in outcomes[temperature, 1]] == panel
    assert outcomes[temperature, 1] == outcomes[temperature, 8]
  assert len({o[1:] for o in outcomes[0.0, 1]}) > 1  # the outcomes differ between tasks: the check has teeth


class CrashingLake(FrozenLakeEnv):
  def _reset(self, task):
    raise RuntimeError("injected reset crash")


def test_an_update_whose_episodes_all_crashed_is_skipped_and_the_run_goes_on(tmp_path, capsys):
  run = Run.open(tiny_run_config(tmp_path), resuming=False)
  with EnvPool(f"{__name__}:CrashingLake", 8, {"size": 3}, in_process=True) as pool:
    program = RLProgram(run, pool)
    program.build()
    metrics = program.update(0)
  assert metrics["train/skipped"] == 1.0 and metrics["rollout/rows"] == 0.0 and metrics["rollout/env_errors"] == 8.0
  assert int(program.learner.state.step) == 0
  assert "warning: 8 rollout episode(s) ended as failed: RuntimeError: injected reset crash" in capsys.readouterr().out


def test_each_new_kind_of_episode_error_is_printed_once(capsys):
  def episodes(*errors):
    return [Episode(0, i, Task("train", 0), "frozenlake", error=e) for i, e in enumerate(errors)]

  program = RLProgram.__new__(RLProgram)
  program._reported_errors = set()
  program._report_errors(episodes(None, "prompt too long", "prompt too long", "env crashed"), "rollout")
  program._report_errors(episodes("prompt too long", "env hung"), "eval")
  assert capsys.readouterr().out.splitlines() == [
      "warning: 2 rollout episode(s) ended as failed: prompt too long",
      "warning: 1 rollout episode(s) ended as failed: env crashed",
      "warning: 1 eval episode(s) ended as failed: env hung"]
