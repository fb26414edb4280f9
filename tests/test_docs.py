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


# -- The commands the documents give ---------------------------------------------------

def _document_names():
  return ["README.md"] + sorted(os.path.join("docs", name)
                                for name in os.listdir(os.path.join(ROOT, "docs"))
                                if name.endswith(".md"))


def _commands(text):
  """Every `python run.py ...` and `python experiments/NAME.py ...` command of a
  markdown text: the lines of its code blocks (backslash continuations joined) and
  its inline code spans."""
  pieces = []
  for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.S):
    pieces += block.replace("\\\n", " ").splitlines()
  pieces += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S).replace(
      "\n", " "))
  commands = []
  for piece in pieces:
    for match in re.finditer(r"python (run\.py|experiments/\w+\.py)(.*?)(?=$|;|&&|\|)", piece):
      commands.append((match.group(1), match.group(2).split()))
  return commands


def _is_placeholder(argument):
  """Synopses and examples with names to fill in: --experiment=NAME, [--flag], ..."""
  return bool(re.search(r"[\[\]()|]|\.\.\.|=[A-Z][A-Z_]*\b|^[A-Z]+$|[<>]|\$", argument))


def _run_py_flags():
  """The flags run.py defines, read from its source (importing it would define
  them on absl's global FLAGS)."""
  with open(os.path.join(ROOT, "run.py"), encoding="utf-8") as handle:
    return set(re.findall(r'flags\.DEFINE_\w+\(\s*"(\w+)"', handle.read()))


def _script_options(script):
  with open(os.path.join(ROOT, script), encoding="utf-8") as handle:
    return set(re.findall(r'add_argument\(\s*"--(\w+)"', handle.read()))


def _problems_of_command(script, arguments, run_flags):
  """What is wrong with one documented command, checked without running it: unknown
  flags, and for run.py an experiment, method, preset or override that does not
  resolve to a valid config; for experiments/study.py unknown variants."""
  from acn_tf.config import command_line

  if _is_placeholder(" ".join(arguments)):
    return []
  if not os.path.exists(os.path.join(ROOT, script)):
    return [f"{script}: no such script"]
  options = {}
  for argument in arguments:
    if not argument.startswith("--"):
      continue
    name, _, value = argument[2:].partition("=")
    options.setdefault(name, []).append(value)
  if script != "run.py":
    known = _script_options(script)
    problems = [f"{script} has no option --{name}" for name in options if name not in known]
    if script == "experiments/study.py" and "variants" in options:
      from importlib import util
      spec = util.spec_from_file_location("study", os.path.join(ROOT, script))
      study = util.module_from_spec(spec)
      spec.loader.exec_module(study)
      problems += [f"study.py has no variant {variant}"
                   for variant in options["variants"][-1].split(",")
                   if variant not in study.VARIANTS]
    return problems
  problems = [f"run.py has no flag --{name}" for name in options
              if name not in run_flags and not (name.startswith("no") and name[2:] in run_flags)]
  config_file = options.get("config_file", [None])[-1]
  if problems or "experiment" not in options or config_file:
    return problems  # A config file of the reader's own cannot be checked here.
  try:
    command_line.resolve_config(options["experiment"][-1], options.get("method", [None])[-1],
                                None, options.get("override", []),
                                options.get("preset", [None])[-1])
  except Exception as error:  # pylint: disable=broad-except
    problems.append(f"{error}")
  return problems


def test_the_command_check_finds_bad_commands():
  text = ("```sh\npython run.py --experiment=digits --method=acn \\\n"
          "    --override=wieght_decay=1\n```\n"
          "`python run.py --experiment=nope` and `python run.py --experiment=digits --colour=red`"
          " and `python experiments/study.py --variants=dml,no_such_variant`"
          " and `python run.py --experiment=NAME` and `python run.py --experiment=digits "
          "--noexport`")
  commands = _commands(text)
  assert len(commands) == 6
  problems = [_problems_of_command(script, arguments, _run_py_flags())
              for script, arguments in commands]
  assert "wieght_decay" in " ".join(problems[0])
  assert "nope" in " ".join(problems[1])
  assert problems[2] == ["run.py has no flag --colour"]
  assert problems[3] == ["study.py has no variant no_such_variant"]
  assert problems[4] == [] and problems[5] == []


def test_every_command_of_the_documents_is_valid():
  """The commands README.md and docs/ give resolve (flags, experiment, method, preset,
  overrides, study variants), so a reader who copies one gets a run, not an error."""
  run_flags = _run_py_flags()
  problems, count = [], 0
  for name in _document_names():
    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
      for script, arguments in _commands(handle.read()):
        count += 1
        problems += [f"{name}: python {script} {' '.join(arguments)}: {problem}"
                     for problem in _problems_of_command(script, arguments, run_flags)]
  assert count >= 10, count
  assert not problems, "\n".join(problems)
