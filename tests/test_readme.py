"""Every command line the README shows parses as the CLI parses it (issue 20).

Each line of a fenced block that starts with ``pageext-inspect`` (or ``$
pageext-inspect``) is cut at its comment, pipe or redirection and handed to
the CLI's own parser (cli.normalize_argv, then click's make_context, which
checks the command and every option without running anything).  A README
that names an option or command the tool no longer has fails here.  The ones
that need no kernel (simulate on a recorded scenario, anything on the
shipped demo core) also run.
"""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from conftest import ROOT, inspect

README = (ROOT / "README.md").read_text()


def example_lines() -> list[str]:
    lines, fenced = [], False
    for raw in README.splitlines():
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            continue
        line = re.sub(r"^\s*\$\s+", "", raw).strip()
        if fenced and re.match(r"pageext-inspect(\s|$)", line):
            lines.append(line)
    return lines


def words(line: str) -> list[str]:
    code = line.split(" #", 1)[0]
    code = re.split(r"\s[|>]\s?", code)[0]
    code = re.sub(r"\$\([^)]*\)", "X", code)  # $(scripts/build-kernel.sh | tail -1)/vmlinux -> X/vmlinux
    return shlex.split(code)[1:]


EXAMPLES = example_lines()


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 30


@pytest.mark.parametrize("line", EXAMPLES)
def test_readme_command_line_parses(line):
    from inspector.cli import build_app, normalize_argv
    if words(line) == ["--version"]:
        return
    argv = normalize_argv(words(line))
    if "--help" in argv:
        return
    group = typer.main.get_command(build_app())
    name, *rest = argv
    command = group.get_command(None, name)
    assert command is not None, f"no command {name!r}: {line}"
    command.make_context(name, list(rest))  # raises click's UsageError on an unknown option or a bad value


def test_readme_simulate_examples_run():
    ran = 0
    for line in EXAMPLES:
        argv = words(line)
        if argv[:1] == ["simulate"] and "--record" not in argv:
            proc = inspect(*argv)
            assert proc.stdout, line
            ran += 1
    assert ran >= 2


def test_readme_demo_examples_run():
    """The README's lines on the shipped demo core run, as written."""
    from inspector.demo import files
    core, vmlinux = files()
    ran = 0
    for line in EXAMPLES:
        if "$(pageext-inspect demo --args)" not in line:
            continue
        code = line.split(" #", 1)[0].replace("$(pageext-inspect demo --args)", shlex.join([str(core), "-s",
                                                                                           str(vmlinux)]))
        proc = inspect(*shlex.split(code)[1:])
        assert proc.stdout, line
        ran += 1
    assert ran >= 1
