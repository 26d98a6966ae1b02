"""The repository contract: CI runs exactly the README's test command."""

import os
import re

from conftest import REPO


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  blocks = re.findall(r'```bash\n(.*?)\n```', readme, flags=re.S)
  assert len(blocks) >= 2, 'README must show the run command and the test command'
  test_command = blocks[1].strip()
  assert 'pytest' in test_command
  with open(os.path.join(REPO, '.ci', 'run')) as f:
    skip = ('#', 'set ', 'cd ', 'export ')
    ci_lines = [line.strip() for line in f if line.strip() and not line.startswith(skip)]
  assert ci_lines == [test_command]


def test_requirements_name_the_stack_with_lower_bounds():
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    lines = [l.split(';')[0].strip() for l in f if l.strip() and not l.startswith('#')]
  names = {re.split(r'[<>=]', l)[0] for l in lines}
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets', 'numpy',
          'opencv-python-headless', 'pycocotools', 'ml-collections'} <= names
  assert {'tensorflow-cpu', 'tensorflow'} & names
  assert all('>=' in l for l in lines)
