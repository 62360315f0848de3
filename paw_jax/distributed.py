"""Joining a multi-process JAX run (TPU pod, multi-node GPU); a single process needs nothing.

The launcher says how, through the environment, read before JAX touches a device:
  PAW_COORDINATOR=host:port  explicit: with PAW_NUM_PROCESSES / PAW_PROCESS_ID (else SLURM_NTASKS / SLURM_PROCID).
                             Each process uses every device it can see (CUDA_VISIBLE_DEVICES decides).
  PAW_COORDINATOR=auto       JAX finds everything itself (TPU pod metadata, Slurm, Open MPI, k8s); launch/tpu_pod.sh.
  SLURM_NTASKS > 1 alone     as `auto`: JAX's Slurm detection, one process per GPU (process i uses GPU SLURM_LOCALID).
  PAW_HEARTBEAT_TIMEOUT_S    seconds without a heartbeat after which a process counts as dead and the others stop
                             with an error (JAX's default: 100).
"""
from __future__ import annotations

import os

import jax


def _int_env(*names: str) -> int:
  for name in names:
    if os.environ.get(name):
      return int(os.environ[name])
  raise ValueError(f"PAW_COORDINATOR is set but none of {', '.join(names)} is: the launcher must set one")


def maybe_initialize_distributed() -> bool:
  """Calls jax.distributed.initialize() when launched as one of several processes; returns whether it did."""
  coordinator = os.environ.get("PAW_COORDINATOR", "")
  if not coordinator and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
    return False
  if jax.distributed.is_initialized():
    return True
  timeouts = {"heartbeat_timeout_seconds": int(os.environ["PAW_HEARTBEAT_TIMEOUT_S"])} if os.environ.get(
      "PAW_HEARTBEAT_TIMEOUT_S") else {}
  if coordinator and coordinator != "auto":
    # 'deactivate': JAX's Slurm detection would otherwise pin each process to GPU SLURM_LOCALID, which is wrong for
    # one process per node.
    jax.distributed.initialize(coordinator, num_processes=_int_env("PAW_NUM_PROCESSES", "SLURM_NTASKS"),
                               process_id=_int_env("PAW_PROCESS_ID", "SLURM_PROCID"),
                               cluster_detection_method="deactivate", **timeouts)
  else:
    jax.distributed.initialize(**timeouts)
  print(f"jax.distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local / {jax.device_count()} global devices")
  return True
