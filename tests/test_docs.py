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


# A markdown link or image: ](target) or ](target "title").
_MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _heading_anchors(text):
  """The anchors GitHub gives a page's headings: lower case, punctuation dropped,
  spaces to hyphens, a repeated heading numbered -1, -2, ..."""
  anchors, seen = set(), {}
  for heading in re.findall(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.sub(r"```.*?```", "", text, flags=re.S),
                            re.M):
    slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
    count = seen.get(slug, 0)
    seen[slug] = count + 1
    anchors.add(slug if count == 0 else f"{slug}-{count}")
  return anchors


def _broken_links(name, text):
  """The relative links of markdown file `name` (text) whose file, folder or heading is
  missing; URLs and mail addresses are not checked."""
  broken = []
  for target in _MARKDOWN_LINK.findall(text):
    if re.match(r"[a-z][a-z0-9+.\-]*:", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (os.path.normpath(os.path.join(ROOT, os.path.dirname(name), path)) if path
                else os.path.join(ROOT, name))
    if not os.path.exists(resolved):
      broken.append(f"{name}: {target} (no such file)")
    elif anchor and resolved.endswith(".md"):
      with open(resolved, encoding="utf-8") as handle:
        if anchor not in _heading_anchors(handle.read()):
          broken.append(f"{name}: {target} (no such heading)")
  return broken


def test_link_check_finds_a_missing_file_and_a_missing_heading():
  text = ("[ok](docs/METHOD.md) [ok](docs/METHOD.md#every-field) [web](https://x.org/a) "
          "[gone](docs/NO_SUCH_PAGE.md) [gone](docs/METHOD.md#no-such-heading)")
  assert _broken_links("README.md", text) == [
      "README.md: docs/NO_SUCH_PAGE.md (no such file)",
      "README.md: docs/METHOD.md#no-such-heading (no such heading)"]


def test_every_relative_link_of_the_documents_resolves():
  """Every link in README.md and docs/*.md that is not a URL names an existing file
  or folder of the repository and, into a markdown page, an existing heading."""
  names = ["README.md"] + sorted(os.path.join("docs", name)
                                 for name in os.listdir(os.path.join(ROOT, "docs"))
                                 if name.endswith(".md"))
  broken = []
  for name in names:
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
      broken += _broken_links(name, handle.read())
  assert not broken, broken
