"""Next-state SFT (RWML's baseline): trains on the collected train triplets' labels, one step per update, and is
evaluated by the world-model eval."""
import dataclasses

from paw_jax import triplets as triplet_store
from paw_jax.programs.rwml import TRAIN_FILE
from paw_jax.programs.wm_sft import NextStateSFTProgram
from paw_jax.run import Run
from paw_jax.triplets import random_play_triplets
from tiny_run import tiny_run_config


def test_updates_lower_the_label_nll_and_the_panel_ce(tmp_path):
  config = tiny_run_config(tmp_path)
  config = dataclasses.replace(
      config, stages=("wm_sft",), paw=dataclasses.replace(config.paw, enabled=False),
      rwml=dataclasses.replace(config.rwml, panel_size=8, triplets_per_update=8,
                               instruction="Reply with the map as <next_state>map</next_state>."))
  run = Run.open(config, resuming=False)
  env = run.make_env()
  train = random_play_triplets(env, "frozenlake", "train", 24, history=0, seed=11)
  env.close()
  triplet_store.save(tmp_path / TRAIN_FILE, train, "frozenlake")  # what the collect stage leaves
  with run.env_pool() as pool:
    program = NextStateSFTProgram(run, pool)
    program.build()
    before = program.evaluate()
    losses = [program.update(i)["train/loss"] for i in range(12)]
    after = program.evaluate()
  assert int(program.learner.state.step) == 12
  assert sum(losses[-3:]) < sum(losses[:3])
  assert after["eval/wm_ns_ce"] < before["eval/wm_ns_ce"]  # held-out next observations, in the trained format
