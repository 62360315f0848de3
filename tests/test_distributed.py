"""Multi-process runs on one machine (launch/local.sh): two processes x 4 CPU devices train exactly as one process x 8
(params, every logged metric, PaW's global top-α selection), a checkpoint written by one process count resumes in the
other, and a process that dies ends the run promptly."""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parents[1]
# configs/default.py:ci cut to seconds: PaW on, trainer log-probs and a KL term (both device passes), 3 updates.
OVERRIDES = ["--config.train.updates=3", "--config.train.format_warmup_steps=2",
             "--config.train.format_warmup_episodes=8", "--config.train.eval_episodes=4", "--config.train.eval_every=3",
             "--config.train.checkpoint_every=1", "--config.train.episode_keys=true", "--config.algo.groups_per_update=2",
             "--config.algo.group_size=4", "--config.algo.old_logp=trainer", "--config.algo.loss.kl_coef=0.01",
             "--config.rwml.panel_size=4", "--config.tokenizer.corpus_episodes=16", "--config.env.num_envs=4"]


def _env(devices: int) -> dict[str, str]:
  """One process's environment: `devices` CPU devices (and the suite's other XLA flags), the suite's compilation
  cache (every run here compiles the same programs), a dead peer noticed after 15 s."""
  env = {k: v for k, v in os.environ.items() if not k.startswith("PAW_")}
  flags = [flag for flag in env.get("XLA_FLAGS", "").split()
           if not flag.startswith("--xla_force_host_platform_device_count")]
  flags.append(f"--xla_force_host_platform_device_count={devices}")
  return {**env, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": " ".join(flags),
          "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5",
          "PAW_HEARTBEAT_TIMEOUT_S": "15", "PATH": f"{Path(sys.executable).parent}:{env['PATH']}"}


def run(processes: int, workdir: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
  """The ci run in `processes` processes sharing 8 CPU devices."""
  args = ["configs/default.py:ci", str(workdir), *OVERRIDES, *extra]
  if processes == 1:
    command = [sys.executable, "-m", "paw_jax.main", f"--config={args[0]}", f"--config.workdir={args[1]}", *args[2:]]
  else:
    command = ["bash", "launch/local.sh", str(processes), *args]
  return subprocess.run(command, cwd=ROOT, env=_env(8 // processes), capture_output=True, text=True, timeout=timeout)


def metrics(workdir: Path) -> list[dict]:
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in records]


def assert_same_run(a: Path, b: Path) -> None:
  records_a, records_b = metrics(a), metrics(b)
  assert [r.keys() for r in records_a] == [r.keys() for r in records_b]
  for record_a, record_b in zip(records_a, records_b):
    assert record_a == pytest.approx(record_b, rel=1e-5, abs=1e-6), f"step {record_a['step']}"
  params_a, params_b = (load_file(w / "hf_export" / "model.safetensors") for w in (a, b))
  assert params_a.keys() == params_b.keys()
  for key in params_a:
    np.testing.assert_allclose(params_a[key], params_b[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same run in one process x 8 devices and in two processes x 4."""
  base = tmp_path_factory.mktemp("runs")
  for processes in (1, 2):
    result = run(processes, base / f"p{processes}")
    assert result.returncode == 0, result.stderr[-3000:]
  return base


def test_two_processes_train_as_one(runs):
  assert_same_run(runs / "p1", runs / "p2")
  selected = [r["paw/selected"] for r in metrics(runs / "p2") if "paw/selected" in r]
  assert selected and all(s > 0 for s in selected)  # the global top-α picked rows (and the same ones: same params)


@pytest.mark.parametrize("written, resumed", [(2, 1), (1, 2)])
def test_a_checkpoint_resumes_in_another_process_count(runs, tmp_path, written, resumed):
  workdir = tmp_path / "resumed"
  shutil.copytree(runs / f"p{written}", workdir)
  shutil.rmtree(workdir / "checkpoints" / "3")  # the run as if killed after update 2's checkpoint
  shutil.rmtree(workdir / "hf_export")
  result = run(resumed, workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  log = result.stdout + ((workdir / "logs" / "process_0.log").read_text() if resumed > 1 else "")
  assert "resumed from" in log
  assert_same_run(workdir, runs / "p1")


def test_a_dead_process_ends_the_run_promptly_and_a_restart_resumes(tmp_path):
  workdir = tmp_path / "killed"
  coordinator = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, "-m", "paw_jax.main", "--config=configs/default.py:ci",
                             f"--config.workdir={workdir}", *OVERRIDES, "--config.train.updates=50"], cwd=ROOT,
                            env={**_env(4), "PAW_COORDINATOR": coordinator, "PAW_NUM_PROCESSES": "2",
                                 "PAW_PROCESS_ID": str(k)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(2)]
  deadline = time.time() + 240
  while not (workdir / "checkpoints" / "1").is_dir():  # training is under way
    assert time.time() < deadline and procs[0].poll() is None, procs[0].communicate()[1][-3000:]
    time.sleep(1)
  procs[1].kill()
  killed_at = time.time()
  _, stderr = procs[0].communicate(timeout=240)
  procs[1].communicate()
  assert procs[0].returncode != 0
  assert time.time() - killed_at < 120, "the surviving process hung"
  assert "Traceback" in stderr or "Fatal" in stderr or "terminat" in stderr.lower(), stderr[-3000:]
  result = run(2, workdir, "--config.train.updates=3")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "resumed from" in (workdir / "logs" / "process_0.log").read_text()


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]
