"""tools/memory on a 2-layer Qwen2.5-7B (ALFWorld's shapes), 1 and 8 fake devices, each in its own process: the
resident rows equal the parameter count re-derived from the HF shapes, split ~8 ways; the KV cache row equals its
[layers, batch, slots, kv_heads, head_dim] size; bad flags give one line."""
from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from paw_jax.tools import memory

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = f"{ROOT / 'configs' / 'alfworld.py'}:model=qwen2.5-7b"
LAYERS = 2


def run_tool(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "paw_jax.tools.memory", *flags], capture_output=True, text=True,
                        cwd=ROOT, timeout=600)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[int, tuple[dict, str]]:
  """{devices: (the --json report, stdout)}."""
  out = {}
  for devices in (1, 8):
    path = tmp_path_factory.mktemp("memory") / "report.json"
    run = run_tool(f"--config={CONFIG}", f"--devices={devices}", f"--layers={LAYERS}", "--device-memory=80GB",
                   f"--json={path}")
    assert run.returncode == 0, run.stderr
    out[devices] = json.loads(path.read_text()), run.stdout
  return out


def qwen25_7b_param_count(layers: int) -> int:
  """Qwen2.5-7B's parameters from its config.json numbers: untied embedding and LM head, q/k/v biases."""
  d, f, v, heads, kv_heads, head_dim = 3584, 18944, 152064, 28, 4, 128
  attention = d * head_dim * (2 * heads + 2 * kv_heads) + head_dim * (heads + 2 * kv_heads)
  return 2 * v * d + layers * (attention + 3 * d * f + 2 * d) + d


def test_one_device_rows_are_the_parameter_count(reports):
  policy = reports[1][0]["phases"]["policy step"]
  params_bytes = 4 * qwen25_7b_param_count(LAYERS)  # float32 master weights (the paper config)
  assert policy["params"] == params_bytes
  assert policy["reference"] == params_bytes  # ALFWorld's kl_coef = 0.01 keeps a frozen copy
  assert policy["optimizer state"] == 2 * params_bytes + 4  # Adam's two moments and its int32 count
  assert policy["critic"] == 0  # GRPO: no critic


def test_eight_devices_split_params_and_optimizer(reports):
  one, eight = (reports[n][0]["phases"]["policy step"] for n in (1, 8))
  resident_one = one["params"] + one["optimizer state"]
  resident_eight = eight["params"] + eight["optimizer state"]
  assert resident_one / 8 <= resident_eight <= resident_one / 4  # FSDP: ~1/8 each, a few small leaves replicated
  for phase in ("policy step", "rollout"):
    assert reports[8][0]["phases"][phase]["total"] < reports[1][0]["phases"][phase]["total"]


def test_kv_cache_row_is_the_cache_size(reports):
  report = reports[1][0]
  shapes = report["shapes"]
  slots = shapes["prompt_len"] + shapes["max_new_tokens"]
  keys_bytes = LAYERS * shapes["rollout_batch"] * slots * 4 * 128 * 2  # 4 KV heads of 128, bfloat16
  assert shapes["rollout_batch"] == 128  # 16 groups x 8 episodes
  assert report["phases"]["rollout"]["KV cache"] == 2 * keys_bytes
  assert 0 < reports[8][0]["phases"]["rollout"]["KV cache"] <= 2 * keys_bytes


def test_table_has_every_row_and_a_verdict(reports):
  report, stdout = reports[8]
  assert report["shapes"]["minibatch"] == [16, 16, 3072]  # 256 rows in micro-batches of 16, T = batch.max_len
  for row in (*memory.ROWS, "total"):
    assert f"| {row} |" in stdout or f"| **{row}** |" in stdout, row
  assert "| per device, GB | policy step | rollout |" in stdout
  assert "GB per device (" in stdout and "80.00 GB" in stdout
  rollout = report["phases"]["rollout"]
  assert sum(rollout[row] for row in memory.ROWS) == rollout["total"]
  assert "largest arrays, policy step: f32[" in stdout


@pytest.mark.parametrize("flags, message", [
    (("--devices=0",), "--devices=0: expected an integer >= 1"),
    (("--device-memory=lots",), "--device-memory='lots': expected a size"),
    (("--bogus=1",), "unrecognized argument '--bogus=1'"),
    (("--config.batch.nope=3",), "--config.batch.nope: no such field"),
    (("--config.model.path=/nowhere/model",), "model.path='/nowhere/model' does not exist"),
])
def test_bad_flags_give_one_line(flags, message):
  run = run_tool(f"--config={CONFIG}", *flags)
  assert run.returncode != 0
  assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith("memory: "), run.stderr
  assert message in run.stderr


def test_device_memory_sizes():
  assert memory.parse_bytes("80GB") == 80 * 10**9
  assert memory.parse_bytes("141GiB") == 141 * 2**30
  assert memory.parse_bytes("8e10") == 8 * 10**10
  with pytest.raises(SystemExit, match="expected a size"):
    memory.parse_bytes("80 furlongs")
