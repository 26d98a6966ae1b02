"""Errors about the user's input: a file, config key, value or checkpoint that is not right.

A leaf module (it imports nothing from the project), so both packages can raise these. The
entry points print any ``UserError`` as one line and exit with status 1; every other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(ValueError):
  """Bad input named by its message: a file, key or value, and what was expected."""


class MissingFileError(UserError, FileNotFoundError):
  """A file or folder the user named (or a config points to) does not exist."""


class ExistingFileError(UserError, FileExistsError):
  """An output that already exists and would be overwritten."""


class ConfigError(UserError, KeyError):
  """A config key that does not exist, or a config value that cannot be used."""

  def __str__(self) -> str:  # KeyError would print the message quoted
    return str(self.args[0]) if self.args else ''
