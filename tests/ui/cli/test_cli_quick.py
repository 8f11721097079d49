"""The quick path (aq.ui.cli.quick): `aq ls` and `aq next` run without Typer, and print, say
and exit exactly as the Typer commands do. AQ_NO_QUICK=1 forces the Typer path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aq.ui.cli.quick import quick_command
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.queue import write_job

# Each argv is run both ways; "{queue}" stands for the queue's path.
BOTH_WAYS = [
    ("ls",),
    ("ls", "--json"),
    ("ls", "-s", "inbox"),
    ("ls", "--stage=review", "--stage", "inbox", "--json"),
    ("ls", "--ready"),
    ("ls", "--blocked", "--json"),
    ("ls", "--ready", "--blocked"),
    ("ls", "--stage", "bogus"),
    ("ls", "--stage="),
    ("ls", "-q", "{queue}", "--json"),
    ("ls", "--queue={queue}", "--queue", "{queue}/nowhere"),
    ("ls", "--fetch", "--json"),
    ("next",),
    ("next", "--json"),
    ("next", "--explain"),
    ("next", "--cap", "gpu", "--cap=linux", "--explain", "--json"),
    ("next", "-q", "{queue}"),
    # forms the quick path leaves to Typer: the same either way, by construction
    ("ls", "--bogus"),
    ("ls", "-s"),
    ("ls", "--json=1"),
    ("next", "extra"),
    ("next", "--stage", "inbox"),
]


@pytest.fixture
def listed(queue_root: Path) -> Path:
    """A job that is ready, one that waits for a dep, one in review and one that cannot parse."""
    write_job(queue_root, "reviewed", stage="review", title="Reviewed")
    write_job(queue_root, "ready-one", title="Ready one", priority="high")
    write_job(queue_root, "waiting", title="Waiting", deps=["reviewed"])
    write_job(queue_root, "needs-gpu", title="Needs a GPU", capabilities=["gpu"])
    (queue_root / "queue" / "inbox" / "broken.md").write_text("---\ntitle: [\n---\nbody\n")
    return queue_root


def both_ways(argv: tuple[str, ...], cwd: Path) -> tuple[Ran, Ran]:
    return run_aq(*argv, cwd=cwd), run_aq(*argv, cwd=cwd, env={"AQ_NO_QUICK": "1"})


@pytest.mark.parametrize("argv", BOTH_WAYS, ids=" ".join)
def test_quick_and_typer_paths_print_the_same(listed: Path, argv: tuple[str, ...]) -> None:
    """Every listed argv gives the same stdout, stderr and exit code with or without Typer."""
    argv = tuple(arg.replace("{queue}", str(listed)) for arg in argv)
    quick, typer = both_ways(argv, listed)
    assert (quick.returncode, quick.stdout, quick.stderr) == \
        (typer.returncode, typer.stdout, typer.stderr)


@pytest.mark.parametrize("argv", [("ls",), ("ls", "--json"), ("next", "--json")], ids=" ".join)
def test_no_queue_here_is_said_the_same_both_ways(tmp_path: Path, argv: tuple[str, ...]) -> None:
    """Outside any queue, both paths refuse with the same line and exit code."""
    quick, typer = both_ways(argv, tmp_path)
    assert quick.returncode == typer.returncode != 0
    assert quick.stderr == typer.stderr and quick.stderr.startswith("aq: ")


def test_the_quick_path_takes_only_what_it_fully_reads() -> None:
    """ls and next in their everyday forms are taken; help, other commands, odd forms are not."""
    taken = [["ls"], ["ls", "--json", "-s", "inbox"], ["next", "--cap=gpu", "-q", "x"]]
    left = [[], ["--help"], ["add"], ["ls", "--help"], ["ls", "-h"], ["ls", "-sinbox"],
            ["ls", "-s=inbox"], ["ls", "--stage"], ["ls", "--stage", "--json"], ["ls", "x"],
            ["next", "--ready"], ["next", "--explain=yes"], ["ls", "--", "x"], ["show", "x"]]
    assert all(quick_command(argv) is not None for argv in taken)
    assert [argv for argv in left if quick_command(argv) is not None] == []


def test_the_quick_path_imports_no_typer(listed: Path) -> None:
    """`aq ls --json` runs without importing Typer, click, rich or textual: their import costs
    more than the listing."""
    probe = ("import sys, io\n"
             "sys.argv = ['aq', 'ls', '--json']\n"
             "from aq.ui.cli import main\n"
             "sys.stdout = io.StringIO()\n"
             "try:\n    main()\nexcept SystemExit as end:\n    code = end.code\n"
             "sys.stdout = sys.__stdout__\n"
             "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
             "('typer', 'click', 'rich', 'textual'))\n"
             "print(code, heavy)\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=listed, env=aq_env(), capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "0 []", done.stderr


@pytest.mark.parametrize("name", ["ls", "next"])
def test_the_quick_grammar_knows_every_option_of_the_typer_command(name: str) -> None:
    """The quick path reads exactly the options the Typer command declares, flags as flags: an
    option added to one and not the other fails here."""
    import typer.main

    from aq.ui.cli.app import app
    from aq.ui.cli.quick import LS, NEXT

    command = typer.main.get_command(app).commands[name]
    declared = {(spelling, bool(param.is_flag))
                for param in command.params if param.name != "help"
                for spelling in param.opts}
    grammar = LS if name == "ls" else NEXT
    known = {(s, True) for s in grammar.flags} | {(s, False) for s in grammar.values}
    assert declared == known
