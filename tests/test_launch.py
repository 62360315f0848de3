"""launch/: the exact commands each script's --dry-run prints (TPU pod, 2-node Slurm job, local processes), and
local.sh starting real processes that join jax.distributed.

Run as a module (`python -m test_launch`, with tests/ on PYTHONPATH), this file is the stand-in for paw_jax.main that
local.sh starts through PAW_MAIN_MODULE.
"""
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jax
import pytest

ROOT = Path(__file__).resolve().parents[1]
GCLOUD_TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
TPU_WHERE = ["--zone=us-central2-b", "--worker=all"]


def _bash(script: str, *args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
  return subprocess.run(["bash", str(ROOT / "launch" / script), *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=timeout)


def _commands(stdout: str) -> list[list[str]]:
  """The printed command lines, each as the words a shell reads from it."""
  return [shlex.split(line) for line in stdout.splitlines()]


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
  """A launching shell's environment without the project's variables (a test must not depend on the caller's)."""
  return {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", str(tmp_path)), "TMPDIR": str(tmp_path),
          **extra}


def test_the_pinned_jax_is_the_one_the_tests_run_with():
  pinned = subprocess.run(["bash", "-c", "source launch/versions.sh && echo $JAX_VERSION"], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout.strip()
  assert pinned == jax.__version__


# --- tpu_pod.sh -------------------------------------------------------------------------------------------------------
def test_tpu_pod_dry_run_ships_installs_the_pinned_jax_and_starts_every_worker(tmp_path):
  result = _bash("tpu_pod.sh", "--dry-run", "my-v4-16", "us-central2-b", "configs/alfworld.py:model=qwen2.5-7b",
                 "gs://bucket/run", env=_clean_env(tmp_path))
  assert result.returncode == 0, result.stderr
  git, scp, install, start, follow = _commands(result.stdout)
  archive = git[6]
  assert re.fullmatch(rf"{tmp_path}/paw_jax\.\w{{6}}/paw_jax\.tar\.gz", archive)
  assert git == ["git", "-C", str(ROOT), "archive", "--format=tar.gz", "-o", archive, "HEAD"]
  assert not list(tmp_path.iterdir())  # the archive's folder is removed on exit
  assert scp == [*GCLOUD_TPU, "scp", archive, "my-v4-16:~/paw_jax.tar.gz", *TPU_WHERE]
  assert install == [*GCLOUD_TPU, "ssh", "my-v4-16",
                     "--command=rm -rf ~/paw_jax && mkdir ~/paw_jax && tar xzf ~/paw_jax.tar.gz -C ~/paw_jax"
                     f' && cd ~/paw_jax && python3 -m pip install -q "jax[tpu]=={jax.__version__}" -e ".[envs]"',
                     *TPU_WHERE]
  assert start == [*GCLOUD_TPU, "ssh", "my-v4-16",
                   "--command=cd ~/paw_jax && PAW_COORDINATOR=auto nohup python3 -m paw_jax.main"
                   " --config=configs/alfworld.py:model=qwen2.5-7b --config.workdir=gs://bucket/run"
                   " > ~/paw_jax.log 2>&1 < /dev/null & echo $! > ~/paw_jax.pid", *TPU_WHERE]
  assert follow == [*GCLOUD_TPU, "ssh", "my-v4-16", "--zone=us-central2-b", "--worker=0",
                    "--command=tail -n +1 -F ~/paw_jax.log"]


def test_tpu_pod_dry_run_passes_the_environment_and_overrides_as_the_remote_shell_reads_them(tmp_path):
  env = _clean_env(tmp_path, SKIP_INSTALL="1", PAW_MODEL_DIR="/mnt/my models", ALFWORLD_DATA="/data/alf")
  result = _bash("tpu_pod.sh", "--dry-run", "my-v4-16", "us-central2-b", "configs/alfworld.py:algo=gigpo,model=x",
                 "gs://bucket/run", "--config.name=it's mine", env=env)
  assert result.returncode == 0, result.stderr
  start, follow = _commands(result.stdout)  # no install with SKIP_INSTALL
  remote = shlex.split(start[6].removeprefix("--command="))
  assert remote == ["cd", "~/paw_jax", "&&", "PAW_COORDINATOR=auto", "PAW_MODEL_DIR=/mnt/my models",
                    "ALFWORLD_DATA=/data/alf", "nohup", "python3", "-m", "paw_jax.main",
                    "--config=configs/alfworld.py:algo=gigpo,model=x", "--config.workdir=gs://bucket/run",
                    "--config.name=it's mine", ">", "~/paw_jax.log", "2>&1", "<", "/dev/null", "&", "echo", "$!", ">",
                    "~/paw_jax.pid"]
  assert follow[4:6] == ["ssh", "my-v4-16"]


# --- slurm_gpu.sbatch -------------------------------------------------------------------------------------------------
def _slurm_env(tmp_path: Path, tasks_per_node: int, **extra: str) -> dict[str, str]:
  """The batch script's environment for `sbatch --nodes=2 [--ntasks-per-node=K] launch/slurm_gpu.sbatch` on two
  96-CPU, 8-GPU nodes, with a stand-in `scontrol` that expands this job's node list."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  scontrol = bin_dir / "scontrol"
  scontrol.write_text('#!/bin/sh\n[ "$*" = "show hostnames gpu-[07-08]" ] || exit 1\nprintf "gpu-07\\ngpu-08\\n"\n')
  scontrol.chmod(0o755)
  return _clean_env(
      tmp_path, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_SUBMIT_DIR=str(ROOT), SLURM_JOB_ID="81234",
      SLURM_JOB_NODELIST="gpu-[07-08]", SLURM_NNODES="2", SLURM_JOB_NUM_NODES="2", SLURM_NTASKS=str(2 * tasks_per_node),
      SLURM_NTASKS_PER_NODE=str(tasks_per_node), SLURM_TASKS_PER_NODE=f"{tasks_per_node}(x2)",
      SLURM_JOB_CPUS_PER_NODE="96(x2)", SLURM_CPUS_ON_NODE="96", SLURM_GPUS_PER_NODE="8", SLURM_PROCID="0",
      SLURM_NODEID="0", **extra)


SLURM_ARGS = ("configs/webshop.py:model=qwen2.5-7b", "/shared/runs/webshop-7b", "--config.rl.steps=10")
SLURM_MAIN = ["python", "-m", "paw_jax.main", "--config=configs/webshop.py:model=qwen2.5-7b",
              "--config.workdir=/shared/runs/webshop-7b", "--config.rl.steps=10"]


def test_slurm_dry_run_a_process_per_node_gets_its_coordinator_count_and_id_explicitly(tmp_path):
  # PAW_PROCESS_ID left in the submitting shell: sbatch passes it on, and every task must still get its own id.
  result = _bash("slurm_gpu.sbatch", "--dry-run", *SLURM_ARGS, env=_slurm_env(tmp_path, 1, PAW_PROCESS_ID="0"))
  assert result.returncode == 0, result.stderr
  [command] = _commands(result.stdout)
  task_wrapper = ["bash", "-c", 'export PAW_PROCESS_ID=$SLURM_PROCID; exec "$@"', "paw_jax"]
  assert command == ["env", "PAW_COORDINATOR=gpu-07:21234", "PAW_NUM_PROCESSES=2",  # port 20000 + job id % 20000
                     "srun", "--ntasks-per-node=1", "--cpus-per-task=96", "--kill-on-bad-exit=1",
                     *task_wrapper, *SLURM_MAIN]
  # The wrapper as srun starts it in task 1 (the stale PAW_PROCESS_ID=0 still in its environment).
  task_env = {**os.environ, "SLURM_PROCID": "1", "PAW_PROCESS_ID": "0"}
  in_task = subprocess.run([*task_wrapper, "printenv", "PAW_PROCESS_ID"], env=task_env, capture_output=True,
                           text=True, check=True)
  assert in_task.stdout == "1\n"


def test_slurm_dry_run_a_process_per_gpu_is_jax_own_slurm_detection_with_a_share_of_the_cpus(tmp_path):
  result = _bash("slurm_gpu.sbatch", "--dry-run", *SLURM_ARGS, env=_slurm_env(tmp_path, 8))
  assert result.returncode == 0, result.stderr
  assert _commands(result.stdout) == [["env", "PAW_COORDINATOR=auto", "srun", "--ntasks-per-node=8",
                                       "--cpus-per-task=12", "--kill-on-bad-exit=1", *SLURM_MAIN]]
  chosen = _bash("slurm_gpu.sbatch", "--dry-run", *SLURM_ARGS, env=_slurm_env(tmp_path, 8, SLURM_CPUS_PER_TASK="6"))
  assert "--cpus-per-task=6" in _commands(chosen.stdout)[0]


def test_slurm_refuses_a_task_count_that_is_neither_per_node_nor_per_gpu_and_a_run_outside_a_job(tmp_path):
  result = _bash("slurm_gpu.sbatch", "--dry-run", *SLURM_ARGS, env=_slurm_env(tmp_path, 4))
  assert result.returncode == 2 and result.stdout == ""
  assert "--ntasks-per-node=4 with 8 GPUs per node: use 1 (a process per node) or 8 (a process per GPU)" in \
      result.stderr
  outside = _bash("slurm_gpu.sbatch", "--dry-run", *SLURM_ARGS, env=_clean_env(tmp_path, SLURM_SUBMIT_DIR=str(ROOT)))
  assert outside.returncode == 2 and outside.stderr == "slurm_gpu.sbatch: SLURM_JOB_ID is not set: this runs inside " \
      "a Slurm job (sbatch launch/slurm_gpu.sbatch ...)\n"


# --- local.sh ---------------------------------------------------------------------------------------------------------
def test_local_dry_run_prints_one_background_process_per_id(tmp_path):
  workdir = tmp_path / "run"
  result = _bash("local.sh", "--dry-run", "2", "configs/default.py", str(workdir), "--config.rl.steps=3",
                 env=_clean_env(tmp_path, PAW_PORT="12345"))
  assert result.returncode == 0, result.stderr
  processes = [["env", "PAW_COORDINATOR=127.0.0.1:12345", "PAW_NUM_PROCESSES=2", f"PAW_PROCESS_ID={k}", "python",
                "-m", "paw_jax.main", "--config=configs/default.py", f"--config.workdir={workdir}",
                "--config.rl.steps=3", ">", f"{workdir}/logs/process_{k}.log", "2>&1", "&"] for k in range(2)]
  assert _commands(result.stdout) == [["mkdir", "-p", f"{workdir}/logs"], *processes]
  assert not workdir.exists()


@pytest.mark.parametrize("args, error", [
    (("0", "c", "w"), "N must be a number of processes >= 1, got '0'"),
    (("2", "c", "gs://b/r"), "the logs go to WORKDIR/logs, so WORKDIR must be a local directory, got 'gs://b/r'")])
def test_local_refuses_bad_arguments_in_one_line(tmp_path, args, error):
  result = _bash("local.sh", "--dry-run", *args, env=_clean_env(tmp_path))
  assert result.returncode == 2 and result.stderr == f"local.sh: {error}\n"


def _local(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, Path]:
  """launch/local.sh 2 with this file as the main module, 2 CPU devices per process."""
  workdir = tmp_path / "run"
  env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PAW_MAIN_MODULE": "test_launch",
         "PYTHONPATH": str(ROOT / "tests"), "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  for name in ("PAW_COORDINATOR", "PAW_NUM_PROCESSES", "PAW_PROCESS_ID", "PAW_PORT"):
    env.pop(name, None)
  return _bash("local.sh", "2", "configs/default.py", str(workdir), *overrides, env=env, timeout=120), workdir


def test_local_starts_processes_that_join_one_run(tmp_path):
  result, workdir = _local(tmp_path, "--config.rl.steps=3")
  logs = [(workdir / "logs" / f"process_{k}.log").read_text() for k in range(2)]
  assert result.returncode == 0, (result.stderr, logs)
  for k, log in enumerate(logs):
    # 4 global devices and the all-gather across processes: the two really joined one run.
    assert f"process {k} of 2, 4 devices, gathered [0, 1], args ['--config=configs/default.py', " \
           f"'--config.workdir={workdir}', '--config.rl.steps=3']" in log, log


def test_local_stops_the_others_and_fails_when_one_process_fails(tmp_path):
  result, workdir = _local(tmp_path, "--config.exit_code=3")
  assert result.returncode == 3, result.stderr
  assert "local.sh: process 1 exited with status 3; stopping the others." in result.stderr
  waiting = re.search(r"pid (\d+)", (workdir / "logs" / "process_0.log").read_text())
  assert waiting and not Path(f"/proc/{waiting[1]}").exists()  # process 0 (asleep for 10 minutes) is gone


def test_the_scripts_are_shellcheck_clean():
  if not shutil.which("shellcheck"):
    pytest.skip("shellcheck is not installed")
  scripts = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "launch").glob("*.sh"))]
  result = subprocess.run(["shellcheck", "-x", *scripts, "launch/slurm_gpu.sbatch"], cwd=ROOT, capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stdout


def _probe() -> None:
  """local.sh's stand-in for paw_jax.main: joins the run, gathers every process's index, prints who it is.
  `--config.exit_code=N`: process 1 then exits with status N while the others wait, as for a peer that died."""
  from jax.experimental import multihost_utils
  from paw_jax.distributed import maybe_initialize_distributed
  assert maybe_initialize_distributed()
  gathered = multihost_utils.process_allgather(jax.numpy.array(jax.process_index())).tolist()
  print(f"process {jax.process_index()} of {jax.process_count()}, {jax.device_count()} devices, gathered {gathered}, "
        f"args {sys.argv[1:]}, pid {os.getpid()}", flush=True)
  exit_code = int(dict(arg.split("=", 1) for arg in sys.argv[1:]).get("--config.exit_code", 0))
  if exit_code and jax.process_index() == 1:
    os._exit(exit_code)  # at once, as a crash does (a normal exit would first wait for the others at shutdown)
  if exit_code:
    time.sleep(600)


if __name__ == "__main__":
  _probe()
