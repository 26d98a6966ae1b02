"""The repository contract: CI runs exactly the README's test command; the README stays a
front page whose docs links resolve."""

import os
import re

from conftest import REPO

TEST_COMMAND_MARKER = '<!-- test-command -->'
README_MAX_LINES = 150


def read_readme():
  with open(os.path.join(REPO, 'README.md')) as f:
    return f.read()


def readme_test_command(readme):
  """The body of the fenced block on the line right after the test-command marker."""
  lines = readme.splitlines()
  marked = [i for i, line in enumerate(lines) if line.strip() == TEST_COMMAND_MARKER]
  assert marked, (f'README.md has no {TEST_COMMAND_MARKER} line: put it on the line right '
                  f'before the fenced block that holds the test command')
  assert len(marked) == 1, f'README.md has {len(marked)} {TEST_COMMAND_MARKER} lines, not 1'
  start = marked[0] + 1
  assert start < len(lines) and lines[start].startswith('```'), (
      f'the line after {TEST_COMMAND_MARKER} in README.md must open a fenced code block, '
      f'not {lines[start] if start < len(lines) else "the end of the file"!r}')
  body = []
  for line in lines[start + 1:]:
    if line.startswith('```'):
      return '\n'.join(body).strip()
    body.append(line)
  raise AssertionError(f'the code block after {TEST_COMMAND_MARKER} in README.md is not closed')


def ci_commands():
  with open(os.path.join(REPO, '.ci', 'run')) as f:
    skip = ('#', 'set ', 'cd ', 'export ')
    return [line.strip() for line in f if line.strip() and not line.startswith(skip)]


def test_ci_runs_the_readme_test_command():
  test_command = readme_test_command(read_readme())
  assert 'pytest' in test_command, test_command
  assert ci_commands() == [test_command], (
      '.ci/run must run exactly the README test command', test_command)


def test_readme_is_a_front_page_and_its_docs_links_exist():
  readme = read_readme()
  num_lines = len(readme.splitlines())
  assert num_lines <= README_MAX_LINES, (
      f'README.md has {num_lines} lines (at most {README_MAX_LINES}): move detail to docs/')
  links = re.findall(r'\]\((docs/[^)#\s]+\.md)(?:#[^)]*)?\)', readme)
  assert links, 'README.md links no docs/*.md page'
  missing = sorted({l for l in links if not os.path.isfile(os.path.join(REPO, l))})
  assert not missing, f'README.md links docs pages that do not exist: {missing}'


def test_requirements_name_the_stack_with_lower_bounds():
  with open(os.path.join(REPO, 'requirements.txt')) as f:
    lines = [l.split(';')[0].strip() for l in f if l.strip() and not l.startswith('#')]
  names = {re.split(r'[<>=]', l)[0] for l in lines}
  assert {'jax', 'flax', 'optax', 'orbax-checkpoint', 'tensorflow-datasets', 'numpy',
          'opencv-contrib-python-headless', 'pycocotools', 'ml-collections', 'pooch'} <= names
  assert 'opencv-python-headless' not in names  # it would shadow the contrib cv2
  assert {'tensorflow-cpu', 'tensorflow'} & names
  assert all('>=' in l for l in lines)
