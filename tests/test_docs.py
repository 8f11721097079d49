"""The README stays true to the code: every command documented, help blocks current, keys listed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from aq.core.manifest import KNOWN_KEYS
from aq.ui.cli.app import app
from tests.helpers.cli import run_aq

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
sys.path.insert(0, str(ROOT / "scripts"))
import readme  # noqa: E402


def test_every_command_has_help_and_a_readme_entry() -> None:
    """Each registered command has a help text and a '### aq NAME' section in the README."""
    names = readme.commands()
    assert len(names) >= 15
    for info in app.registered_commands:
        assert info.callback is not None and (info.callback.__doc__ or "").strip(), info.name
    for name in names:
        assert f"### aq {name}\n" in README, f"README has no entry for aq {name}"


def help_here(command: str) -> str:
    """`aq COMMAND --help` run in this process, in the terminal scripts/readme.py prints for."""
    ran = run_aq(command, "--help", cwd=ROOT, env=readme.HELP_ENV)
    assert ran.returncode == 0, ran.stderr
    return ran.stdout.rstrip()


def test_readme_command_reference_is_generated_from_the_current_help() -> None:
    """The README's help blocks equal `aq CMD --help` now (run scripts/readme.py to refresh).
    They are made in this process: ~30 starts of `python -m aq` would cost seconds."""
    assert readme.updated(README, help_here) == README, \
        "README is stale: run python scripts/readme.py"


def test_help_run_here_is_what_scripts_readme_writes() -> None:
    """A help text made in this process equals the one scripts/readme.py takes from a process
    of its own (`add`: the command with the most options to wrap)."""
    assert help_here("add") == readme.help_text("add")


def test_every_manifest_key_is_in_the_readme_table() -> None:
    """Each manifest key the parser accepts appears in the README's key table."""
    table = README[README.index("| key | meaning | default |"):]
    table = table[: table.index("\n\n")]
    for key in KNOWN_KEYS:
        assert re.search(rf"(^\| |, ){re.escape(key)}[ ,]", table, re.M), key


def test_readme_opens_with_the_two_newcomer_commands_and_ci_runs_them() -> None:
    """The README's first code block is the demo and the test command, and .ci/run runs the latter."""
    first_block = README.split("```sh\n", 1)[1].split("```", 1)[0]
    assert first_block.splitlines()[0].startswith("./demo.sh")
    assert first_block.splitlines()[1].startswith("./test.sh")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "./test.sh" in ci and "./selftest.sh" in ci
