"""Entry point: `python -m paw_jax.main --config=configs/default.py[:variant] [--config.a.b=value ...]`.

The config file's `get_config(arg)` returns the run's ConfigDict; any field can be overridden on the command line.
"""
from __future__ import annotations

from absl import app
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:variant]).",
                                          lock_config=True)


def main(argv) -> None:
  del argv
  from paw_jax.distributed import maybe_initialize_distributed
  maybe_initialize_distributed()  # multi-process launches (launch/); a no-op on one process
  from paw_jax.train import train  # after flag parsing: JAX starts only when a run is asked for
  final = train(_CONFIG.value)
  if final:
    width = max(len(k) for k in final)
    print("\nfinal evaluation")
    for key in sorted(final):
      print(f"  {key:<{width}}  {final[key]:.3f}")


if __name__ == "__main__":
  app.run(main)
