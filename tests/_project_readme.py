"""The README's "Your project" walk-through and the project CI job, as commands a test can run or check.

One parser for both readers: tests/test_project_e2e.py runs the ```bash block(s) of the section in
a project folder outside the repository; tests/test_project_readme.py checks every toolkit
command of the section and of examples/project-ci.yml against the CLI's own parser (no engine).
A command line's trailing ``# ... exit N ...`` comment is its expected exit code (else 0), as in
tests/test_readme.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CI_JOB = REPO / "examples" / "project-ci.yml"
SECTION = "## Your project"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
_YAML_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.S | re.M)
_EXIT = re.compile(r"#.*\bexit (\d+)\b")


def section(text: str) -> str:
    """The README's "Your project" section: from its heading to the next ``## `` heading."""
    start = text.index(SECTION + "\n")
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end != -1 else len(text)]


def project_commands(text: str) -> list[tuple[str, int]]:
    """``(command, expected exit code)`` for every line of every ```bash block of the section, in order."""
    commands = []
    for block in _BASH_BLOCK.findall(section(text)):
        for line in block.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith("#"):
                continue
            command = line.split(" #", 1)[0].strip()
            if command:
                expected = _EXIT.search(line)
                commands.append((command, int(expected.group(1)) if expected else 0))
    return commands


def ci_yaml_block(text: str) -> str:
    """The ```yaml block of the section (the CI job, shown as examples/project-ci.yml holds it)."""
    (block,) = _YAML_BLOCK.findall(section(text))
    return str(block)


def ci_run_commands(job_text: str) -> list[str]:
    """Every shell command of every ``run:`` step of a GitHub Actions workflow, ``&&`` split."""
    import yaml

    workflow = yaml.safe_load(job_text)
    commands = []
    for job in workflow["jobs"].values():
        for step in job["steps"]:
            for line in str(step.get("run", "")).splitlines():
                line = line.split(" #", 1)[0].strip()
                commands += [part.strip() for part in line.split("&&") if part.strip()]
    return commands


def toolkit_argv(command: str) -> list[str] | None:
    """The arguments after ``toolkit`` (or ``.venv/bin/toolkit``), or None for another program."""
    words = shlex.split(command)
    if not words or Path(words[0]).name != "toolkit":
        return None
    return words[1:]
