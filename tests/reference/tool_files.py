"""The files of an official tool at a commit, checked by their git blob ids.

Used by the reference scripts that run a dataset's own evaluation tool (crowdpose-api,
poseval) to make fixtures: the tool's code is read unchanged, from a clone or bare mirror of
its repository or from a folder holding the files.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys


def blob_id(data: bytes) -> str:
  """The git blob id of a file's bytes."""
  return hashlib.sha1(b'blob %d\0' % len(data) + data).hexdigest()


def read_tool(source: str, *, repository: str, commit: str, tool_path: str,
              blobs: dict[str, str]) -> dict[str, bytes]:
  """{file name: bytes} of ``tool_path/NAME`` for each of ``blobs`` at ``commit``.

  ``source`` is a git repository (a clone, or a bare mirror ending in .git) or a folder that
  holds the files (or ``tool_path`` below it). Exits if a file's blob id is not the expected.
  """
  first = next(iter(blobs))
  folder = next((f for f in (source, os.path.join(source, tool_path))
                 if os.path.isfile(os.path.join(f, first))), None)
  if folder is not None:
    files = {}
    for name in blobs:
      with open(os.path.join(folder, name), 'rb') as f:
        files[name] = f.read()
  else:
    git = ['git', f'--git-dir={source}'] if source.endswith('.git') else ['git', '-C', source]
    files = {name: subprocess.run(git + ['show', f'{commit}:{tool_path}/{name}'], check=True,
                                  capture_output=True).stdout for name in blobs}
  for name, data in files.items():
    if blob_id(data) != blobs[name]:
      sys.exit(f'{name} of {source} is not the one of {repository} {commit}')
  return files


def write_package(files: dict[str, bytes], folder: str, package: str) -> str:
  """Writes ``files`` into ``folder/package`` and puts ``folder`` first on sys.path."""
  path = os.path.join(folder, package)
  os.makedirs(path)
  for name, data in files.items():
    with open(os.path.join(path, name), 'wb') as f:
      f.write(data)
  sys.path.insert(0, folder)
  return path
