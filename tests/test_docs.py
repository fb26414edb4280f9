"""The project's documents stand on their own and cover the method's settings."""

import os
import re
import subprocess

import pytest

from acn_tf.config import schema
from conftest import ROOT

# A relative path that climbs out of its folder: dot-dot, slash, then a name.
_CLIMBING_PATH = re.compile(r"(?:\.\./)+[\w.\-/]+")


def _tracked_text_files():
  try:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
  except (OSError, subprocess.CalledProcessError):
    pytest.skip("not a git checkout")
  for name in names:
    path = os.path.join(ROOT, name)
    try:
      with open(path, encoding="utf-8") as handle:
        yield name, handle.read()
    except (UnicodeDecodeError, FileNotFoundError):
      continue  # Binary files (figures) and files deleted in the work tree.


def test_no_tracked_file_points_outside_the_repository():
  outside = []
  for name, text in _tracked_text_files():
    for match in _CLIMBING_PATH.finditer(text):
      resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(name), match.group()))
      if not resolved.startswith(ROOT + os.sep):
        outside.append(f"{name}: {match.group()}")
  assert not outside, outside


def test_method_document_names_every_method_setting():
  with open(os.path.join(ROOT, "docs", "METHOD.md"), encoding="utf-8") as handle:
    method = handle.read()
  fields = schema.fields_unused_by("dml") | schema.fields_unused_by("independent")
  missing = sorted(field for field in fields if f"`{field}`" not in method)
  assert not missing, f"docs/METHOD.md does not name {missing}"


def test_readme_links_the_method_document():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
    assert "docs/METHOD.md" in handle.read()


def test_python_api_page_example_is_the_one_the_tests_run():
  """tests/test_api.py runs acn_tf/api.py's docstring example; docs/PYTHON_API.md shows it."""
  def python_blocks(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
      return [block.strip() for block in re.findall(r"```python\n(.*?)```", handle.read(),
                                                     re.S)]
  api_example, = python_blocks(os.path.join("acn_tf", "api.py"))
  assert api_example in python_blocks(os.path.join("docs", "PYTHON_API.md"))

