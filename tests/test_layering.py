"""The import structure: leaves, one direction between the packages, no cycles, one task switch.

Read from the source with ``ast`` (nothing is imported), so a function-level import counts too.
"""

import ast
import glob
import os
import re

from conftest import REPO

PACKAGES = ('hrnet_jax', 'input_pipeline')
LEAVES = {'hrnet_jax.keypoints', 'hrnet_jax.errors'}  # import nothing but each other


def project_modules() -> dict[str, str]:
  """{module name: path} of every module of the two packages."""
  modules = {}
  for package in PACKAGES:
    for path in glob.glob(os.path.join(REPO, package, '*.py')):
      name = os.path.splitext(os.path.basename(path))[0]
      modules[package if name == '__init__' else f'{package}.{name}'] = path
  return modules


def imports_of(path: str, modules) -> list[tuple[str, bool]]:
  """(project module, imported at module top level?) for every import in ``path``."""
  tree = ast.parse(open(path).read(), path)
  top = set(map(id, tree.body))
  found = []
  for node in ast.walk(tree):
    names = []
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = [node.module] + [f'{node.module}.{alias.name}' for alias in node.names]
    for name in names:
      if name in modules and not (name in PACKAGES and len(names) > 1):
        found.append((name, id(node) in top))
  return found


def graph():
  modules = project_modules()
  return {m: imports_of(path, modules) for m, path in modules.items()}


def test_leaves_import_nothing_from_the_project():
  edges = graph()
  for leaf in LEAVES:
    assert {m for m, _ in edges[leaf]} <= LEAVES - {leaf}, (leaf, edges[leaf])


def test_input_pipeline_imports_only_the_leaves_of_hrnet_jax():
  for module, imports in graph().items():
    if module.startswith('input_pipeline'):
      wrong = {m for m, _ in imports if m.startswith('hrnet_jax') and m not in LEAVES}
      assert not wrong, f'{module} imports {sorted(wrong)}; only {sorted(LEAVES)} are allowed'


def test_hrnet_jax_imports_input_pipeline_only_at_module_top_level():
  for module, imports in graph().items():
    if module.startswith('hrnet_jax'):
      inside = {m for m, top in imports if m.startswith('input_pipeline') and not top}
      assert not inside, f'{module} imports {sorted(inside)} inside a function'


def test_no_import_cycle():
  edges = {m: {n for n, _ in imports if n != m} for m, imports in graph().items()}
  state = {}  # module -> 'open' while on the path, 'done' after

  def visit(module, path):
    state[module] = 'open'
    for other in sorted(edges[module]):
      if state.get(other) == 'open':
        cycle = path[path.index(other):] + [other]
        raise AssertionError('import cycle: ' + ' -> '.join(cycle))
      if other not in state:
        visit(other, path + [other])
    state[module] = 'done'

  for module in sorted(edges):
    if module not in state:
      visit(module, [module])


def test_only_get_task_decides_by_model_kind():
  """Outside tasks.get_task, no code asks whether a model is top-down or bottom-up."""
  kind = re.compile(r"is_bottom_up|require_top_down|model\.name\s*==|'higher_hrnet'|"
                    r"'pose_hrnet'")
  allowed = {os.path.join('hrnet_jax', 'tasks.py'),  # TASKS, read by get_task
             os.path.join('hrnet_jax', 'models.py')}  # each config names its module
  offenders = []
  for folder in PACKAGES + ('launch', 'benchmarks'):
    for path in glob.glob(os.path.join(REPO, folder, '*.py')):
      relative = os.path.relpath(path, REPO)
      if relative not in allowed:
        offenders += [f'{relative}:{i}' for i, line in enumerate(open(path), 1)
                      if kind.search(line)]
  assert not offenders, offenders
