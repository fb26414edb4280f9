"""The package's layout stays true: imports point down the layers, never in a circle.

Layers, highest first (README.md, "Layout"):

  acn_tf/api.py                   the Python API, over everything
  acn_tf/run/                     run machinery
  acn_tf/method/, acn_tf/data/    the algorithm; the datasets (neither imports the other)
  acn_tf/config/                  the schema of every setting, the named experiments
  acn_tf/networks/                Keras networks and layers
  acn_tf/{errors,strict_json,platform}.py   the ground: no TensorFlow, no other module

Read from the source with `ast`, function-level imports included, so a lazy import
that breaks the rule is caught as well.
"""

import ast
import os
import shutil
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "acn_tf")

# Rank of each part: a module may import its own part and any part of lower rank.
RANKS = {"api": 5, "run": 4, "method": 3, "data": 3, "config": 2, "networks": 1,
         "errors": 0, "strict_json": 0, "platform": 0}
GROUND = {"errors", "strict_json", "platform"}


def module_files():
  """Every module of the package: its dotted name and its file."""
  for folder, _, names in os.walk(PACKAGE):
    for name in sorted(names):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-len(".py")]
        dotted = relative.replace(os.sep, ".")
        yield (dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted), path


MODULES = dict(module_files())


def part(module: str) -> str:
  """`acn_tf.run.training` -> `run`; the package itself -> ``."""
  pieces = module.split(".")
  return pieces[1] if len(pieces) > 1 else ""


def imported_modules(source: str):
  """The package's modules that `source` imports, wherever the import stands."""
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found.update(alias.name for alias in node.names if alias.name.startswith("acn_tf"))
    elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("acn_tf"):
      for alias in node.names:
        submodule = f"{node.module}.{alias.name}"
        found.add(submodule if submodule in MODULES else node.module)
  return found - {"acn_tf"}


IMPORTS = {module: imported_modules(open(path).read()) for module, path in MODULES.items()}


def test_every_module_belongs_to_a_layer():
  parts = {part(module) for module in MODULES} - {""}
  assert parts == set(RANKS), f"parts without a rank, or ranks without a part: {parts ^ set(RANKS)}"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if part(m)))
def test_imports_point_down_the_layers(module):
  own = part(module)
  for target in IMPORTS[module]:
    other = part(target)
    assert other in RANKS, f"{module} imports {target}, which no layer holds"
    if other == own:
      continue
    assert RANKS[other] < RANKS[own], (
        f"{module} ({own}) imports {target} ({other}): a layer may import only lower ones")


def test_ground_modules_import_no_other_module_of_the_package():
  for name in GROUND:
    assert not IMPORTS[f"acn_tf.{name}"], f"acn_tf.{name} imports {IMPORTS[f'acn_tf.{name}']}"


def test_no_import_circle():
  done, on_path = set(), []

  def visit(module):
    if module in on_path:
      cycle = on_path[on_path.index(module):] + [module]
      raise AssertionError("import circle: " + " -> ".join(cycle))
    if module in done:
      return
    on_path.append(module)
    for target in sorted(IMPORTS.get(module, ())):
      visit(target)
    on_path.pop()
    done.add(module)

  for module in sorted(MODULES):
    visit(module)


def test_function_level_and_aliased_imports_are_read():
  source = ("from acn_tf import errors\n"
            "from acn_tf.config.schema import ExperimentConfig\n"
            "def build():\n"
            "  from acn_tf.run import training as driver\n"
            "  import acn_tf.method.losses\n")
  assert imported_modules(source) == {"acn_tf.errors", "acn_tf.config.schema",
                                      "acn_tf.run.training", "acn_tf.method.losses"}


EXPERIMENTS = os.path.join(os.path.dirname(PACKAGE), "experiments")
SCRIPTS_USING_THE_PACKAGE = sorted(
    name for name in os.listdir(EXPERIMENTS)
    if name.endswith(".py") and imported_modules(open(os.path.join(EXPERIMENTS, name)).read()))


# Run in a fresh interpreter before a script: the first finder asked for acn_tf asks
# the others in their order, as the import itself would, prints where it resolves
# and stops the script there (nothing after its first acn_tf import runs).
_REPORT_WHERE_ACN_TF_RESOLVES = """
import sys

class ReportAcnTf:
  @staticmethod
  def find_spec(name, path=None, target=None):
    if name != "acn_tf":
      return None
    for finder in sys.meta_path[1:]:
      spec = finder.find_spec(name, path, target)
      if spec is not None:
        print("acn_tf from", spec.origin)
        raise SystemExit(0)
    raise SystemExit("acn_tf: not found")

sys.meta_path.insert(0, ReportAcnTf)
"""


@pytest.mark.parametrize("script", SCRIPTS_USING_THE_PACKAGE)
def test_an_experiment_script_runs_the_acn_tf_of_its_own_checkout(script, tmp_path):
  """A study runs from a git worktree of a fixed commit: its scripts must import that
  checkout's package, not an installed one (an editable install points at another).
  The script runs as `python SCRIPT` would, from a copy of the checkout, up to its
  first import of acn_tf."""
  checkout = tmp_path / "checkout"
  shutil.copytree(PACKAGE, checkout / "acn_tf",
                  ignore=shutil.ignore_patterns("__pycache__"))
  shutil.copytree(EXPERIMENTS, checkout / "experiments",
                  ignore=shutil.ignore_patterns("__pycache__", "results", "figures"))
  path = str(checkout / "experiments" / script)
  loaded = subprocess.run(
      [sys.executable, "-c",
       _REPORT_WHERE_ACN_TF_RESOLVES +
       "import runpy\n"
       f"sys.path.insert(0, {os.path.dirname(path)!r})  # What `python SCRIPT` puts first.\n"
       f"sys.argv = [{path!r}]\n"
       f"runpy.run_path({path!r}, run_name='__main__')\n"],
      cwd=str(tmp_path), capture_output=True, text=True, timeout=300)
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  origin = loaded.stdout.strip().splitlines()[-1]
  assert origin == f"acn_tf from {checkout / 'acn_tf' / '__init__.py'}", origin
