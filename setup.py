"""paw_jax: LLM agents that learn multi-turn text tasks by RL and world modelling, in JAX/Flax."""
from setuptools import find_packages, setup

CORE = [
    "jax>=0.10",  # plain jax: the user installs jax[cuda12] / jax[tpu] for accelerators
    "flax>=0.12",
    "optax>=0.2.4",
    "orbax-checkpoint>=0.11",
    "etils[epath]>=1.7",  # workdirs on any filesystem orbax writes to (gs:// included)
    "chex>=0.1.89",
    "ml-collections>=1.0",
    "absl-py>=2.1",
    "numpy>=1.26",
    "safetensors>=0.4",
    "tokenizers>=0.21",
    "transformers>=4.50",
    "gguf>=0.10",
    "tensorflow-datasets>=4.9",
    "tensorboardX>=2.6",
    "tqdm>=4.66",
    "matplotlib>=3.8",
    "rank-bm25>=0.2.2",
    "rouge-score>=0.1.2",  # ROUGE-L, RWML's reward for structured observations
]
ENVS = [
    "textworld[pddl]>=1.6.1",
    "alfworld>=0.4.2",
    "scienceworld>=1.2.3",
]
TEST = [
    "pytest>=8",
    "torch==2.13.0",  # CPU build; transformers + torch are the numerical oracle
    "accelerate>=1.0",  # transformers' own GGUF loading (the oracle) needs it
    "nbclient>=0.10",  # executes the Colab notebook in tests/test_notebook.py
    "ipykernel>=6.29",  # the kernel it runs the notebook in (the test's own Python)
]

setup(
    name="paw_jax",
    version="0.1.0",
    description=__doc__,
    packages=find_packages(include=["paw_jax", "paw_jax.*"]),
    package_data={"paw_jax.envs": ["data/*/*.jsonl", "data/*/*/*.jsonl"]},
    python_requires=">=3.10",
    install_requires=CORE,
    extras_require={"envs": ENVS, "test": TEST + ENVS},
)
