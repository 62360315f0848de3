# shellcheck shell=bash
# The jax release paw_jax is tested with; launch/tpu_pod.sh installs exactly this jax[tpu] (jax[tpu] pins the
# matching jaxlib and libtpu) on every worker. Bump it with the test environment (tests/test_launch.py checks they
# agree). setup.py keeps only a lower bound, so a CPU or GPU install can use a newer jax.
# shellcheck disable=SC2034  # read by the scripts that source this file
JAX_VERSION=0.10.2
