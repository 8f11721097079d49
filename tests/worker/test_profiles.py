"""Profiles end to end (README "Profiles", "A job", "Picking"): the real CLI on a real queue.

Persona injection is pinned by golden prompt files in tests/worker/golden/: an engine configured in
aq.yaml copies its `{prompt_file}` to a folder of the test's, and the copy must equal the golden
file byte for byte. After a deliberate change to the prompt, regenerate the goldens with

    AQ_UPDATE_GOLDEN=1 pytest tests/worker/test_profiles.py -k golden

and review the diff of tests/worker/golden/ before committing it. (The variable is read when this module
is imported, since the queue fixture clears every AQ_* variable from the environment.)

Also here: the profile pinned at the claim, `aq show`'s resolved settings and their sources,
missing profiles and refused yolo, `aq profiles`, `aq init`'s catalog, and allowed-scope.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest

from aq.usecases.setup import who_am_i
from tests.helpers.cli import Ran, aq_env, run_aq
from tests.helpers.queue import configure, events, stage_of, write_job

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE_GOLDEN = os.environ.get("AQ_UPDATE_GOLDEN") == "1"

Aq = Callable[..., Ran]

PERSONA = """\
# Role

You are a careful maintainer of this repository.

- Read the job to the end first.
- Change only what it asks for; say what you left alone.
"""

BODY = """\
# Fix the login redirect

After login, users land on /home instead of the page they asked for.
Keep the `next=` parameter.
"""


# --- helpers -----------------------------------------------------------------------------------


def capture_engine(out: Path, then: str = "") -> dict[str, Any]:
    """An engine that copies its prompt file to out/<job>-<attempt>.txt, then runs `then`."""
    script = f'cp "$1" "$0/$AQ_JOB_ID-$AQ_ATTEMPT.txt"\n{then}'
    return {"cmd": ["bash", "-c", script, str(out), "{prompt_file}"], "input": "prompt"}


def write_profile(root: Path, name: str, persona: str = PERSONA, **keys: Any) -> str:
    """Write profiles/<name>.md (keys spelled with '_' for '-') and return its text."""
    import yaml

    front = {key.replace("_", "-"): value for key, value in keys.items()}
    text = (f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n{persona}" if front
            else persona)
    (root / "profiles" / f"{name}.md").write_text(text)
    return text


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_golden(name: str, actual: bytes) -> None:
    """`actual` equals tests/worker/golden/<name> byte for byte (or becomes it with AQ_UPDATE_GOLDEN=1)."""
    path = GOLDEN / name
    if UPDATE_GOLDEN:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(actual)
        return
    assert path.exists(), f"{path} is missing: run with AQ_UPDATE_GOLDEN=1 to write it"
    assert actual == path.read_bytes(), (
        f"the prompt differs from {path} (AQ_UPDATE_GOLDEN=1 rewrites it):\n{actual.decode()}")


def one_line_error(ran: Ran) -> str:
    """The refusal: exit 1 with exactly one line on stderr, which is returned."""
    assert ran.returncode == 1, (ran.stdout, ran.stderr)
    lines = ran.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("aq: "), ran.stderr
    return lines[0]


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


@contextlib.contextmanager
def background(*args: str, cwd: Path) -> Iterator[subprocess.Popen[str]]:
    """`aq ARGS` in the background (its own session); killed with its group if still running."""
    proc = subprocess.Popen([sys.executable, "-m", "aq", *args], cwd=cwd, env=aq_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def wait_for_file(path: Path, proc: subprocess.Popen[str], within: float = 30.0) -> None:
    end = time.monotonic() + within
    while not path.exists():
        assert proc.poll() is None, f"aq exited before {path.name} appeared: {proc.communicate()}"
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)


# --- persona injection: golden prompts ---------------------------------------------------------

def test_golden_prompt_of_a_job_with_a_profile(queue_root: Path, aq: Aq, out: Path) -> None:
    """The prompt is the profile's persona, a `---` rule, then the job's body."""
    configure(queue_root, engines={"capture": capture_engine(out)})
    write_profile(queue_root, "maintainer", engine="capture", version=2)
    write_job(queue_root, "login", BODY, profile="maintainer")
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    prompt = (out / "login-1.txt").read_bytes()
    assert prompt == f"{PERSONA.strip()}\n\n---\n\n{BODY.strip()}\n".encode()
    check_golden("prompt_with_profile.txt", prompt)


def test_golden_prompt_of_a_retry(queue_root: Path, aq: Aq, out: Path) -> None:
    """A retry's prompt is the persona, the body, then the tail of the previous verify failure."""
    configure(queue_root, engines={"capture": capture_engine(out)})
    write_profile(queue_root, "maintainer", engine="capture")
    verify = ('test "$AQ_ATTEMPT" = 2 || { echo "FAIL: test_login_keeps_next"; '
              'echo "expected /orders, got /home"; exit 1; }')
    write_job(queue_root, "login", BODY, profile="maintainer", verify=verify,
              retry={"max": 1, "backoff": "100ms"})
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "login") == "testing"
    first, second = (out / "login-1.txt").read_text(), (out / "login-2.txt").read_bytes()
    assert first == f"{PERSONA.strip()}\n\n---\n\n{BODY.strip()}\n"
    assert second.decode().startswith(first.rstrip("\n") + "\n\n---\n\nThe previous attempt")
    assert b"expected /orders, got /home\n[verify_failed: verify exited with 1]" in second
    check_golden("prompt_retry.txt", second)


def test_golden_prompt_of_a_job_without_a_profile(queue_root: Path, aq: Aq, out: Path) -> None:
    """Without a profile the prompt is the job's body alone."""
    configure(queue_root, engines={"capture": capture_engine(out)})
    write_job(queue_root, "login", BODY, engine="capture")
    ran = aq("run", "--once")
    assert ran.returncode == 0, ran.stderr
    prompt = (out / "login-1.txt").read_bytes()
    assert prompt == f"{BODY.strip()}\n".encode()
    check_golden("prompt_without_profile.txt", prompt)


def test_a_body_engine_gets_the_body_without_the_persona(queue_root: Path, aq: Aq, out: Path) -> None:
    """The shell engine runs the job's body as a script: the persona is not put before it."""
    write_profile(queue_root, "scripter", engine="shell")
    write_job(queue_root, "script", f'cp "$AQ_PROMPT_FILE" {out}/script.txt', profile="scripter")
    assert aq("run", "--once").returncode == 0
    assert (out / "script.txt").read_text().strip() == f'cp "$AQ_PROMPT_FILE" {out}/script.txt'


# --- the profile is pinned at the claim --------------------------------------------------------

def test_an_edit_to_the_profile_while_a_job_runs_does_not_change_that_attempt(
        queue_root: Path, aq: Aq, out: Path) -> None:
    """The running attempt keeps the persona and verify it was claimed with, its claimed event
    records the hash of the profile as it was then, and the next job claimed gets the edit."""
    wait = f'n=0; while [ ! -e {out}/go ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n+1)); done'
    configure(queue_root, engines={"blocker": capture_engine(out, wait)})
    verify = 'echo {} > ' + str(out) + '/"$AQ_JOB_ID".verify'
    old = write_profile(queue_root, "snap", "You are the OLD persona.\n", engine="blocker",
                        default_verify=verify.format("OLD"))
    write_job(queue_root, "first", "Do the first thing.", profile="snap", priority="high")
    write_job(queue_root, "second", "Do the second thing.", profile="snap", priority="low")
    with background("run", "--once", "--worker", "w-snap", cwd=queue_root) as proc:
        wait_for_file(out / "first-1.txt", proc)
        assert stage_of(queue_root, "first") == "building"
        new = write_profile(queue_root, "snap", "You are the NEW persona, edited while a job ran.\n",
                            version=2, engine="blocker", default_verify=verify.format("NEW"))
        (out / "go").touch()
        assert proc.wait(timeout=60) == 0
    assert (out / "first-1.txt").read_text() == "You are the OLD persona.\n\n---\n\nDo the first thing.\n"
    assert (out / "first.verify").read_text() == "OLD\n"
    assert events(queue_root, "first", "claimed")[0]["profile"] == {
        "name": "snap", "version": "1", "hash": short_hash(old)}
    assert stage_of(queue_root, "first") == "testing"

    assert aq("run", "--once").returncode == 0
    assert (out / "second-1.txt").read_text().startswith("You are the NEW persona, edited while a job ran.")
    assert (out / "second.verify").read_text() == "NEW\n"
    assert events(queue_root, "second", "claimed")[0]["profile"] == {
        "name": "snap", "version": "2", "hash": short_hash(new)}


def test_a_job_without_a_profile_records_none_in_its_claim(queue_root: Path, aq: Aq) -> None:
    """The claimed event of a job without profile or engine class names neither."""
    write_job(queue_root, "plain", "true")
    assert aq("run", "--once").returncode == 0
    claimed = events(queue_root, "plain", "claimed")[0]
    assert "profile" not in claimed and "engine" not in claimed


# --- aq show: resolved settings and where they came from ---------------------------------------

def test_show_json_gives_each_resolved_value_and_its_source(queue_root: Path, aq: Aq) -> None:
    """Keys the job sets say job, keys its profile fills say `profile <name>`, the rest the queue
    default; capabilities from both say so."""
    write_profile(queue_root, "tester", engine="shell", default_verify="make check",
                  allowed_scope=["src/**"], timeout="5m", capabilities=["has:git"],
                  review_policy="auto")
    write_job(queue_root, "mixed", "echo hi", profile="tester", verify="pytest -q",
              capabilities=["os:linux"], priority="high")
    ran = aq("show", "mixed", "--json")
    assert ran.returncode == 0, ran.stderr
    resolved = json.loads(ran.stdout)["resolved"]
    assert resolved["profile"] == {"value": "tester", "source": "job"}
    assert resolved["verify"] == {"value": "pytest -q", "source": "job"}
    assert resolved["priority"] == {"value": "high", "source": "job"}
    assert resolved["engine"] == {"value": "shell", "source": "profile tester"}
    assert resolved["allowed-scope"] == {"value": ["src/**"], "source": "profile tester"}
    assert resolved["timeout"] == {"value": 300.0, "source": "profile tester"}
    assert resolved["review-policy"] == {"value": "auto", "source": "profile tester"}
    assert resolved["capabilities"] == {"value": ["os:linux", "has:git"], "source": "job + profile"}
    assert resolved["lock"] == {"value": None, "source": "queue default"}
    assert resolved["cwd"] == {"value": str(queue_root.resolve()), "source": "queue default"}
    assert resolved["retry"]["source"] == "queue default"
    assert resolved["retry"]["value"]["max"] == 0


def test_show_without_a_profile_gives_the_queue_defaults(queue_root: Path, aq: Aq) -> None:
    """A job with no profile: what it does not set comes from aq.yaml."""
    write_job(queue_root, "bare", "echo hi")
    resolved = json.loads(aq("show", "bare", "--json").stdout)["resolved"]
    assert resolved["profile"] == {"value": None, "source": "none"}
    assert resolved["engine"] == {"value": "shell", "source": "queue default"}
    assert resolved["timeout"] == {"value": 3600.0, "source": "queue default"}
    assert resolved["verify"] == {"value": None, "source": "queue default"}
    assert resolved["review-policy"] == {"value": "manual", "source": "queue default"}


def test_show_text_prints_each_value_with_its_source(queue_root: Path, aq: Aq) -> None:
    """`aq show JOB` prints one line per resolved value with its source in parentheses."""
    write_profile(queue_root, "tester", engine="shell", default_verify="make check", timeout="5m",
                  capabilities=["has:git"])
    write_job(queue_root, "mixed", "echo hi", profile="tester", verify="pytest -q")
    ran = aq("show", "mixed")
    assert ran.returncode == 0, ran.stderr
    lines = [" ".join(line.split()) for line in ran.stdout.splitlines()]
    for expected in ("profile: tester (job)", "verify: pytest -q (job)",
                     "engine: shell (profile tester)", "timeout: 5m (profile tester)",
                     "capabilities: has:git (profile tester)", "priority: medium (queue default)",
                     f"cwd: {queue_root.resolve()} (queue default)"):
        assert expected in lines, ran.stdout


def test_show_does_not_claim_the_default_engine_for_a_job_run_by_engine_class(
        queue_root: Path, aq: Aq) -> None:
    """A job whose profile gives an engine class is not shown as running aq.yaml's default engine."""
    write_job(queue_root, "dev", "fix it", profile="developer")
    resolved = json.loads(aq("show", "dev", "--json").stdout)["resolved"]
    assert resolved["engine-class"] == {"value": "coding-agent", "source": "profile developer"}
    assert resolved["engine"]["value"] != "shell"


# --- missing profile, refused yolo -------------------------------------------------------------

def test_a_job_naming_a_missing_profile_is_a_lint_error_and_never_picked(queue_root: Path, aq: Aq) -> None:
    """lint exits 1 naming the profile; `next --explain` gives it as the block reason; `run` takes
    the other job and leaves it in the inbox; show marks the profile missing."""
    write_job(queue_root, "orphan", "echo orphan", profile="ghost", priority="critical")
    write_job(queue_root, "plain", "echo plain", priority="low")
    reason = "profile 'ghost' does not exist: add profiles/ghost.md or fix the job's 'profile:'"
    lint = aq("lint")
    assert lint.returncode == 1
    assert lint.stdout.splitlines() == [f"queue/inbox/orphan.md: key 'profile': {reason}"]
    explained = aq("next", "--explain")
    assert explained.stdout.splitlines()[0].startswith("plain ")
    assert f"  skip  orphan: {reason}" in explained.stdout.splitlines()
    passed = json.loads(aq("next", "--json").stdout)["passed_over"]
    assert passed == [{"id": "orphan", "ready": False, "kind": "profile", "reason": reason}]
    ran = aq("run", "--drain")
    assert ran.returncode == 0, ran.stderr
    assert (stage_of(queue_root, "orphan"), stage_of(queue_root, "plain")) == ("inbox", "review")
    assert events(queue_root, "orphan", "claimed") == []
    shown = json.loads(aq("show", "orphan", "--json").stdout)
    assert shown["resolved"]["profile"]["source"] == "job (missing: profiles/ghost.md does not exist)"
    assert shown["blocked"] == {"kind": "profile", "reason": reason}


def test_yolo_is_refused_for_a_profile_that_does_not_allow_it(queue_root: Path, aq: Aq) -> None:
    """A yolo job whose profile lacks allow-yolo is a lint error and never picked; under a profile
    with `allow-yolo: true` it runs."""
    write_profile(queue_root, "careful", engine="shell")
    write_profile(queue_root, "daring", engine="shell", allow_yolo=True)
    write_job(queue_root, "bold", "echo bold", profile="careful", yolo=True, priority="critical")
    write_job(queue_root, "brave", "echo brave", profile="daring", yolo=True)
    reason = ("yolo is not allowed by profile 'careful': remove 'yolo: true' or set "
              "'allow-yolo: true' in the profile")
    lint = aq("lint")
    assert lint.returncode == 1
    assert lint.stdout.splitlines() == [f"queue/inbox/bold.md: key 'yolo': {reason}"]
    assert f"  skip  bold: {reason}" in aq("next", "--explain").stdout.splitlines()
    assert aq("run", "--drain").returncode == 0
    assert (stage_of(queue_root, "bold"), stage_of(queue_root, "brave")) == ("inbox", "review")


def test_lint_reports_a_profiles_malformed_requirements_and_globs(queue_root: Path, aq: Aq) -> None:
    """A profile whose capability requirement or scope glob is malformed is a lint problem."""
    write_profile(queue_root, "odd", engine="shell", capabilities=["node>=twenty"],
                  allowed_scope=["/etc/**"])
    write_job(queue_root, "oddjob", "echo hi", profile="odd")
    assert aq("next", "--json").returncode == 0
    lint = aq("lint")
    assert lint.returncode == 1
    assert "node>=twenty" in lint.stdout and "/etc/**" in lint.stdout


# --- aq profiles -------------------------------------------------------------------------------

def test_profiles_json_lists_the_catalog_with_job_counts(queue_root: Path, aq: Aq) -> None:
    """`aq profiles --json` lists every profile with its settings and how many jobs (any stage) name it."""
    write_job(queue_root, "a", "x", profile="qa")
    write_job(queue_root, "b", "x", profile="qa", stage="failed")
    write_job(queue_root, "c", "x", profile="reviewer")
    ran = aq("profiles", "--json")
    assert ran.returncode == 0, ran.stderr
    listing = json.loads(ran.stdout)
    assert listing["problems"] == []
    by_name = {p["name"]: p for p in listing["profiles"]}
    assert sorted(by_name) == ["backend-engineer", "developer", "docs-writer", "frontend-engineer",
                               "qa", "reviewer", "ui-designer", "ux-designer"]
    assert (by_name["qa"]["jobs"], by_name["reviewer"]["jobs"], by_name["developer"]["jobs"]) == (2, 1, 0)
    reviewer = by_name["reviewer"]
    text = (queue_root / "profiles" / "reviewer.md").read_text()
    assert reviewer == {"name": "reviewer", "version": "1", "hash": short_hash(text),
                        "capabilities": ["has:git"], "default-verify": "test -s REVIEW.md",
                        "engine": None, "engine-class": "coding-agent",
                        "prefers-engine": ["claude", "codex", "gemini"],
                        "allowed-scope": ["REVIEW.md", "reviews/**"], "review-policy": "manual",
                        "timeout": 2700.0, "allow-yolo": False, "jobs": 1}
    assert by_name["qa"]["default-verify"] is None  # default-verify: "" means none


def test_profiles_show_prints_the_settings_and_the_persona(queue_root: Path, aq: Aq) -> None:
    """`aq profiles show qa` prints its name, version and hash, its settings, then its persona."""
    from aq.core.profile import parse_profile

    text = (queue_root / "profiles" / "qa.md").read_text()
    persona = parse_profile("qa", text, "profiles/qa.md").persona
    ran = aq("profiles", "show", "qa")
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines()[0] == f"qa (version 1, hash {short_hash(text)})"
    assert re.search(r"^  engine-class: +coding-agent$", ran.stdout, re.M)
    assert ran.stdout.rstrip("\n").endswith(persona)
    shown = json.loads(aq("profiles", "show", "qa", "--json").stdout)
    assert (shown["name"], shown["persona"], shown["hash"]) == ("qa", persona, short_hash(text))


def test_profiles_show_of_a_missing_name_is_one_line_naming_the_known_ones(queue_root: Path, aq: Aq) -> None:
    """Showing a profile that does not exist exits 1 with one line listing those that do."""
    line = one_line_error(aq("profiles", "show", "nope"))
    assert line == ("aq: no profile 'nope' in profiles/ (known: backend-engineer, developer, "
                    "docs-writer, frontend-engineer, qa, reviewer, ui-designer, ux-designer); "
                    "add profiles/nope.md")


def test_profiles_show_of_a_path_says_what_a_profile_name_is(queue_root: Path, aq: Aq) -> None:
    """`show ../x` suggested adding profiles/../x.md, a file outside profiles/."""
    ran = aq("profiles", "show", "../x")
    assert (ran.returncode, ran.stdout) == (2, "")
    assert ran.stderr.splitlines() == [
        "aq: '../x' is not a profile name (letters, digits, '.', '_', '-', the name of a file in "
        "profiles/ without .md; known: backend-engineer, developer, docs-writer, "
        "frontend-engineer, qa, reviewer, ui-designer, ux-designer)"]


def test_a_malformed_profile_is_reported_not_shown(queue_root: Path, aq: Aq) -> None:
    """A profile file that does not parse: `show` exits 1 with its problem, the listing and lint
    report it, and the other profiles still list."""
    (queue_root / "profiles" / "broken.md").write_text("---\ntimeout: soon\n---\nYou are broken.\n")
    line = one_line_error(aq("profiles", "show", "broken"))
    assert line.startswith("aq: profiles/broken.md: key 'timeout': ")
    listing = json.loads(aq("profiles", "--json").stdout)
    assert [p.split(":")[0] for p in listing["problems"]] == ["profiles/broken.md"]
    assert "broken" not in {p["name"] for p in listing["profiles"]}
    lint = aq("lint")
    assert lint.returncode == 1
    assert any(line.startswith("profiles/broken.md: key 'timeout'") for line in lint.stdout.splitlines())


def test_profiles_with_an_unknown_action_is_a_usage_error(queue_root: Path, aq: Aq) -> None:
    """`aq profiles list` is not a command: exit 2 with one line saying the usage."""
    ran = aq("profiles", "list")
    assert ran.returncode == 2
    assert ran.stderr.strip() == "aq: usage: aq profiles [--json] | aq profiles show NAME [--json]"


def test_init_copies_the_catalog_and_keeps_an_existing_profile(tmp_path: Path) -> None:
    """`aq init` writes the starter profiles into profiles/, committed, except a file already there."""
    root = tmp_path / "fresh"
    (root / "profiles").mkdir(parents=True)
    mine = "---\nname: developer\nversion: 9\n---\nYou are our own developer.\n"
    (root / "profiles" / "developer.md").write_text(mine)
    ran = run_aq("init", str(root), cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert (root / "profiles" / "developer.md").read_text() == mine
    catalog = {entry.name: entry.read_text(encoding="utf-8")
               for entry in files("aq.catalog").joinpath("profiles").iterdir()
               if entry.name.endswith(".md")}
    assert sorted(p.name for p in (root / "profiles").iterdir()) == sorted(catalog)
    for name, text in catalog.items():
        if name != "developer.md":
            assert (root / "profiles" / name).read_text() == text, name
    assert "profiles/developer.md" not in ran.stdout and "profiles/qa.md" in ran.stdout
    tracked = subprocess.run(["git", "ls-files", "profiles"], cwd=root, capture_output=True,
                             text=True, env=aq_env()).stdout.split()
    assert sorted(tracked) == sorted(f"profiles/{name}" for name in catalog)
    again = run_aq("init", str(root), cwd=tmp_path)
    assert again.returncode == 0 and "nothing changed" in again.stdout
    listed = json.loads(run_aq("profiles", "--json", cwd=root).stdout)["profiles"]
    assert {p["name"]: p["version"] for p in listed}["developer"] == "9"


# --- allowed-scope -----------------------------------------------------------------------------

def work_repo(path: Path) -> Path:
    """A separate git repository with one commit: where a job's engine works."""
    path.mkdir(parents=True)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        if args[0] == "add":
            (path / "README.md").write_text("work\n")
        subprocess.run(["git", *args], cwd=path, check=True, capture_output=True, env=aq_env())
    return path


WRITES_SRC_AND_DOCS = "mkdir -p src docs\necho ok > src/ok.py\necho out > docs/out.md"


def test_changes_outside_the_allowed_scope_are_recorded_shown_and_gate_the_ship(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    """A job allowed src/** that also writes docs/out.md: the finished event lists docs/out.md,
    `aq show` warns, `aq ship` refuses in one line, and --allow-out-of-scope ships it recording
    the override and who made it."""
    repo = work_repo(tmp_path / "work")
    write_job(queue_root, "spill", WRITES_SRC_AND_DOCS, cwd=str(repo), allowed_scope=["src/**"])
    assert aq("run", "--once").returncode == 0
    finished = events(queue_root, "spill", "finished")[0]
    assert (finished["to"], finished["out_of_scope"]) == ("review", ["docs/out.md"])
    shown = aq("show", "spill")
    assert ("WARNING:  the last attempt changed 1 file(s) outside allowed-scope: docs/out.md"
            in shown.stdout)
    assert json.loads(aq("show", "spill", "--json").stdout)["out_of_scope"] == ["docs/out.md"]
    line = one_line_error(aq("ship", "spill"))
    assert "outside its allowed-scope (docs/out.md)" in line and "--allow-out-of-scope" in line
    assert stage_of(queue_root, "spill") == "review"
    ran = aq("ship", "spill", "--allow-out-of-scope")
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "spill") == "shipped"
    moved = events(queue_root, "spill", "moved")[-1]
    assert (moved["to"], moved["override"], moved["out_of_scope"], moved["by"]) == (
        "shipped", "out_of_scope", ["docs/out.md"], who_am_i())


def test_review_policy_auto_does_not_ship_a_job_that_left_its_scope(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    """With review-policy auto and verify passing, a job with out-of-scope changes stops in
    testing; one whose changes are all in scope ships."""
    spill, tidy = work_repo(tmp_path / "spill"), work_repo(tmp_path / "tidy")
    write_job(queue_root, "spill", WRITES_SRC_AND_DOCS, cwd=str(spill), allowed_scope=["src/**"],
              review_policy="auto", verify="test -f src/ok.py")
    write_job(queue_root, "tidy", "mkdir -p src\necho ok > src/ok.py", cwd=str(tidy),
              allowed_scope=["src/**"], review_policy="auto", verify="test -f src/ok.py")
    assert aq("run", "--drain").returncode == 0
    assert (stage_of(queue_root, "spill"), stage_of(queue_root, "tidy")) == ("testing", "shipped")
    spilled = events(queue_root, "spill", "finished")[0]
    assert spilled["out_of_scope"] == ["docs/out.md"]
    assert "not shipped by review-policy auto" in spilled["why"]
    assert "out_of_scope" not in events(queue_root, "tidy", "finished")[0]
    assert aq("ship", "tidy").returncode == 1  # already shipped: no further move


def test_a_profiles_allowed_scope_applies_to_its_jobs(queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    """A job that sets no allowed-scope is held to its profile's."""
    repo = work_repo(tmp_path / "work")
    write_profile(queue_root, "docs-only", engine="shell", allowed_scope=["docs/**"])
    write_job(queue_root, "spill", WRITES_SRC_AND_DOCS, cwd=str(repo), profile="docs-only")
    assert aq("run", "--once").returncode == 0
    assert events(queue_root, "spill", "finished")[0]["out_of_scope"] == ["src/ok.py"]


def test_in_the_queues_own_tree_only_files_outside_the_queue_count(queue_root: Path, aq: Aq) -> None:
    """A job running in the queue root: aq's own commits and queue files never count, the
    job's file outside its scope does."""
    write_job(queue_root, "local", "mkdir -p src\necho a > src/a.py\necho s > stray.txt",
              allowed_scope=["src/**"])
    write_job(queue_root, "clean", "mkdir -p src\necho b > src/b.py", allowed_scope=["src/**"],
              priority="low")
    assert aq("run", "--drain").returncode == 0
    assert events(queue_root, "local", "finished")[0]["out_of_scope"] == ["stray.txt"]
    assert "out_of_scope" not in events(queue_root, "clean", "finished")[0]
    assert aq("ship", "clean").returncode == 0


def test_a_retry_does_not_launder_an_earlier_attempts_out_of_scope_change(
        queue_root: Path, aq: Aq, tmp_path: Path) -> None:
    """A job whose first attempt wrote outside its scope and failed is not auto-shipped when the
    retry passes: it stops in testing with the file listed."""
    repo = work_repo(tmp_path / "work")
    body = ('mkdir -p src docs\necho ok > src/ok.py\n'
            'if [ "$AQ_ATTEMPT" = 1 ]; then echo out > docs/out.md; fi')
    write_job(queue_root, "spill", body, cwd=str(repo), allowed_scope=["src/**"],
              review_policy="auto", verify='test "$AQ_ATTEMPT" = 2',
              retry={"max": 1, "backoff": "100ms"})
    assert aq("run", "--drain").returncode == 0
    assert (repo / "docs" / "out.md").exists()
    assert stage_of(queue_root, "spill") == "testing"
    assert json.loads(aq("show", "spill", "--json").stdout)["out_of_scope"] == ["docs/out.md"]
