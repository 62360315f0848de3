"""Shared test fixtures: tiny random HF checkpoints written by transformers itself (the numerical oracle)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# 8 virtual CPU devices so sharded code paths run for real; unsharded work stays on device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Reuse compiled executables across the suite (several tests build the same model/step shapes).
jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.dirname(__file__), "..", ".jax_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
