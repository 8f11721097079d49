"""aq.worker.attempt.execute: one attempt of a job (engine, then verify) with real processes and files."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from aq.core.lifecycle import Outcome
from aq.core.manifest import parse_manifest
from aq.infra.engines import DEFAULT_ENGINES, EngineSpec
from aq.infra.proctree import MARK_VAR
from aq.infra.rundir import RunFiles
from aq.store.config import QueueConfig, parse_config
from aq.usecases.spend import live_usage
from aq.worker.attempt import AttemptResult, execute
from aq.worker.plan import AttemptPlan
from aq.worker.prompts import build_prompt
from tests.helpers.processes import wait_dead

JOB = "job-1"
TOKEN_VALUE = "tok-s3cr3t-value-4471"
GHP = "ghp_" + "Zq7" * 12  # 36 characters after the prefix: a GitHub token by its shape


def make_config(**raw: Any) -> QueueConfig:
    return parse_config({"default_engine": "shell", "kill_grace": "1s", **raw})


def run_attempt(tmp_path: Path, text: str, *, config: QueueConfig | None = None,
                attempt: int = 1, previous_failure: str | None = None,
                wall_used: float = 0.0, stop: threading.Event | None = None,
                verify_only: bool = False) -> AttemptResult:
    """Execute attempt `attempt` of a job whose manifest file reads `text`."""
    root = tmp_path / "q"
    root.mkdir(exist_ok=True)
    plan = AttemptPlan(
        job_id=JOB, attempt=attempt, token=f"{attempt}.w-test.abc123", worker="w-test",
        manifest=parse_manifest(JOB, text, f"queue/inbox/{JOB}.md"), queue_root=root,
        run_dir=tmp_path / "run" / JOB, previous_failure=previous_failure, wall_used=wall_used,
        verify_only=verify_only,
    )
    return execute(plan, config or make_config(), stop=stop or threading.Event())


def env_lines(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_engine_and_verify_get_the_aq_environment(tmp_path: Path) -> None:
    """Engine and verify both see AQ_JOB_ID, AQ_ATTEMPT, AQ_QUEUE, AQ_WORKER_ID and AQ_PROMPT_FILE."""
    out = tmp_path / "out"
    out.mkdir()
    text = (f"---\nverify: env | grep ^AQ_ > {out}/verify.env\n---\n"
            f"env | grep ^AQ_ > {out}/engine.env\n")
    result = run_attempt(tmp_path, text, attempt=2)
    assert result.outcome is Outcome.OK
    for name in ("engine.env", "verify.env"):
        env = env_lines(out / name)
        assert env["AQ_JOB_ID"] == JOB
        assert env["AQ_ATTEMPT"] == "2"
        assert Path(env["AQ_QUEUE"]) == tmp_path / "q"
        assert env["AQ_WORKER_ID"] == "w-test"
        assert Path(env["AQ_PROMPT_FILE"]).is_file()


def test_the_shell_engine_runs_the_body_as_a_bash_script_in_cwd(tmp_path: Path) -> None:
    """With the shell engine the prompt file is the body itself, run by bash in the job's cwd."""
    work = tmp_path / "work"
    work.mkdir()
    text = f"---\ncwd: {work}\n---\nset -e\npwd > where\ncp \"$AQ_PROMPT_FILE\" body.copy\n"
    result = run_attempt(tmp_path, text)
    assert result.outcome is Outcome.OK
    assert (work / "where").read_text().strip() == str(work)
    assert (work / "body.copy").read_text().strip().endswith('cp "$AQ_PROMPT_FILE" body.copy')


def argdump_config(out: Path) -> QueueConfig:
    """An engine that writes its {prompt} and {prompt_file} arguments, and any extra args, to `out`."""
    script = ('printf %s "${1#--prompt=}" > "$0/prompt"; printf %s "$2" > "$0/prompt_file"; '
              'shift 2; printf "%s\\n" "$@" > "$0/rest"')
    return make_config(engines={"argdump": {
        "cmd": ["bash", "-c", script, str(out), "--prompt={prompt}", "{prompt_file}"],
        "yolo": ["--yes-to-all", "--no-sandbox"],
    }})


@pytest.mark.parametrize("yolo", [True, False])
def test_placeholders_are_substituted_and_yolo_adds_the_engine_flags(tmp_path: Path,
                                                                      yolo: bool) -> None:
    """{prompt} becomes the prompt text, {prompt_file} a file holding it; yolo: true appends the yolo args."""
    out = tmp_path / "out"
    out.mkdir()
    text = f"---\nengine: argdump\nyolo: {str(yolo).lower()}\n---\n# Tidy the docs\nMake them tidy.\n"
    result = run_attempt(tmp_path, text, config=argdump_config(out))
    assert result.outcome is Outcome.OK, result.log_text
    prompt = (out / "prompt").read_text()
    assert "Make them tidy." in prompt
    assert "{prompt}" not in prompt
    assert Path((out / "prompt_file").read_text()).read_text() == prompt
    rest = (out / "rest").read_text().split()
    assert rest == (["--yes-to-all", "--no-sandbox"] if yolo else [])


def test_a_yolo_placeholder_puts_the_flags_where_it_stands() -> None:
    """`{yolo}` as a whole element places the flags there, and nothing there when yolo is off."""
    spec = EngineSpec("x", ("tool", "{yolo}", "--file", "{prompt_file}"), ("-y",))
    assert spec.argv(prompt="p", prompt_file="/f", yolo=True) == ["tool", "-y", "--file", "/f"]
    assert spec.argv(prompt="p", prompt_file="/f", yolo=False) == ["tool", "--file", "/f"]
    assert DEFAULT_ENGINES["claude"].argv(prompt="hi", prompt_file="/f", yolo=True) == [
        "claude", "-p", "--output-format", "stream-json", "--verbose", "--dangerously-skip-permissions"]


def test_a_retry_prompt_ends_with_the_previous_failure(tmp_path: Path) -> None:
    """On a retry the prompt is the body, then the tail of the previous failure; the tail is also a file."""
    out = tmp_path / "out"
    out.mkdir()
    tail = "tests/test_widget.py::test_spin FAILED\nAssertionError: widget is broken"
    text = ("---\nengine: argdump\nverify: cp \"$AQ_PREVIOUS_FAILURE_FILE\" "
            f"{out}/previous\n---\nFix the widget.\n")
    result = run_attempt(tmp_path, text, config=argdump_config(out), attempt=2,
                         previous_failure=tail)
    assert result.outcome is Outcome.OK, result.log_text
    prompt = (out / "prompt").read_text()
    assert prompt.startswith("Fix the widget.")
    assert prompt.index("Fix the widget.") < prompt.index(tail)
    assert prompt.rstrip().endswith("Fix the cause of that failure.")
    assert tail in prompt[-len(tail) - 200:]
    assert (out / "previous").read_text() == tail


def test_a_first_attempt_prompt_has_no_failure_section(tmp_path: Path) -> None:
    """Without a previous failure the prompt is the body alone."""
    manifest = parse_manifest(JOB, "Do the thing.\n", "x.md")
    plan = AttemptPlan(job_id=JOB, attempt=1, token="t", worker="w", manifest=manifest,
                       queue_root=tmp_path, run_dir=tmp_path / "run")
    assert build_prompt(plan) == "Do the thing.\n"


def test_engine_failure_keeps_the_exit_code_and_the_output_tail(tmp_path: Path) -> None:
    """An engine exiting non-zero is engine_failed; its last lines become the tail for the retry."""
    result = run_attempt(tmp_path, "for i in $(seq 100); do echo line-$i; done\necho boom >&2\nexit 3\n")
    assert result.outcome is Outcome.ENGINE_FAILED
    assert result.exit_code == 3
    assert result.verified is None
    lines = result.tail.splitlines()
    assert lines[-2:] == ["boom", "[engine_failed: engine exited with 3]"]
    assert "line-100" in lines and "line-1" not in lines  # a tail, not the whole output


def test_verify_failure_tail_is_the_verify_output_only(tmp_path: Path) -> None:
    """When verify fails, the tail holds what verify printed, not the engine's output."""
    text = "---\nverify: \"echo 'verify: 2 tests failed'; exit 4\"\n---\necho engine-was-fine\n"
    result = run_attempt(tmp_path, text)
    assert result.outcome is Outcome.VERIFY_FAILED
    assert result.verified is False
    assert (result.exit_code, result.verify_exit) == (0, 4)
    assert "verify: 2 tests failed" in result.tail
    assert "engine-was-fine" not in result.tail
    assert "engine-was-fine" in result.log_text  # the log keeps both


@pytest.mark.parametrize(("verify", "verified"), [("true", True), (None, None)])
def test_engine_ok_reports_whether_verify_ran(tmp_path: Path, verify: str | None,
                                              verified: bool | None) -> None:
    """Engine exit 0 is ok; verified is True after a passing verify and None when there is none."""
    text = f"---\nverify: '{verify}'\n---\necho hi\n" if verify else "echo hi\n"
    result = run_attempt(tmp_path, text)
    assert result.outcome is Outcome.OK
    assert result.verified is verified
    assert result.tail == ""


def test_an_engine_not_defined_is_engine_missing_naming_the_known_ones(tmp_path: Path) -> None:
    """A job naming an engine aq.yaml does not define fails as engine_missing, saying what is known."""
    result = run_attempt(tmp_path, "---\nengine: ghost\n---\necho hi\n")
    assert result.outcome is Outcome.ENGINE_MISSING
    assert "'ghost' is not defined" in result.detail
    assert "shell" in result.detail


def test_an_engine_whose_program_is_not_installed_is_engine_missing(tmp_path: Path) -> None:
    """An engine whose command is not on PATH fails the attempt with a reason naming the program."""
    config = make_config(engines={"phantom": {"cmd": ["aq-test-phantom-agent", "--", "{prompt}"]}})
    result = run_attempt(tmp_path, "---\nengine: phantom\n---\necho hi\n", config=config)
    assert result.outcome is Outcome.ENGINE_MISSING
    assert "aq-test-phantom-agent" in result.detail
    assert "not installed" in result.detail


def test_a_cwd_that_does_not_exist_fails_without_running(tmp_path: Path) -> None:
    """A cwd missing on this machine is engine_failed with the path in the reason."""
    result = run_attempt(tmp_path, f"---\ncwd: {tmp_path}/nowhere\n---\necho hi\n")
    assert result.outcome is Outcome.ENGINE_FAILED
    assert f"{tmp_path}/nowhere" in result.detail


def test_a_used_up_wall_budget_does_not_start_the_engine(tmp_path: Path) -> None:
    """budget.wall counts earlier attempts: when it is used up the engine is not started."""
    marker = tmp_path / "ran"
    text = f"---\nbudget: {{wall: 10s}}\n---\ntouch {marker}\n"
    result = run_attempt(tmp_path, text, attempt=3, wall_used=10.5)
    assert result.outcome is Outcome.BUDGET_EXHAUSTED
    assert not marker.exists()


def test_a_parent_whose_engine_used_its_wall_budget_still_runs_its_verify(tmp_path: Path) -> None:
    """A verify-only attempt (its children settled) starts no engine: budget.wall, spent by the
    engine's attempt, does not stop the verify, which has the job's timeout."""
    ran = tmp_path / "engine-ran"
    text = (f"---\nengine: ghost\nbudget: {{wall: 10s}}\nverify: sleep 0.2 && echo checked\n"
            f"---\ntouch {ran}\n")
    result = run_attempt(tmp_path, text, attempt=2, wall_used=9.99, verify_only=True)
    assert result.outcome is Outcome.OK, result.log_text
    assert "checked" in result.log_text and "only its verify runs" in result.log_text
    assert not ran.exists()


def test_the_rest_of_the_wall_budget_is_the_attempt_limit(tmp_path: Path) -> None:
    """An attempt may only use what is left of budget.wall, even under a long timeout."""
    text = "---\ntimeout: 1h\nbudget: {wall: 10s}\n---\necho $$ > pid\nsleep 300\n"
    work = tmp_path / "q"
    result = run_attempt(tmp_path, text, attempt=2, wall_used=9.5)
    assert result.outcome is Outcome.TIMEOUT
    assert wait_dead(int((work / "pid").read_text()))


def test_a_stop_request_interrupts_the_attempt(tmp_path: Path) -> None:
    """Setting the stop event ends the attempt as interrupted and kills the engine."""
    stop = threading.Event()
    pidfile = tmp_path / "q" / "pid"
    box: dict[str, AttemptResult] = {}
    thread = threading.Thread(target=lambda: box.setdefault(
        "r", run_attempt(tmp_path, "echo $$ > pid\nsleep 300\n", stop=stop)))
    thread.start()
    try:
        for _ in range(200):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert box["r"].outcome is Outcome.INTERRUPTED
    assert wait_dead(int(pidfile.read_text()))


def test_secrets_are_scrubbed_from_the_log_file_the_kept_log_and_the_tail(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values of secret-named env vars and token shapes are redacted before anything is written."""
    monkeypatch.setenv("MY_API_TOKEN", TOKEN_VALUE)
    body = ('echo "token=$MY_API_TOKEN"\n'
            'p=ghp_; echo "gh=${p}' + GHP[4:] + '" >&2\n'
            "exit 1\n")
    result = run_attempt(tmp_path, body)
    assert result.outcome is Outcome.ENGINE_FAILED
    for text in (result.log_path.read_text(), result.log_text, result.tail):
        assert TOKEN_VALUE not in text
        assert GHP not in text
        assert "token=[REDACTED]" in text
        assert "gh=[REDACTED]" in text


def test_a_multi_line_secret_value_is_scrubbed_line_by_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret env var holding several lines (a JSON credential) is redacted when the job prints it."""
    monkeypatch.setenv("SERVICE_SECRET", '{\n  "private": "pk-91f0c2d7e4",\n  "client": "cl-55aa0b"\n}')
    result = run_attempt(tmp_path, 'echo "$SERVICE_SECRET"\nexit 1\n')
    assert result.log_text.count("[REDACTED]") >= 2  # the job did print it: each secret line redacted
    assert "pk-91f0c2d7e4" not in result.log_text
    assert "pk-91f0c2d7e4" not in result.tail


def test_secret_values_in_the_engine_env_from_aq_yaml_are_scrubbed(tmp_path: Path) -> None:
    """An engine's `env:` in aq.yaml is part of the engine's environment: its secret-named values are redacted too."""
    config = make_config(engines={"shell": {"env": {"SERVICE_API_KEY": TOKEN_VALUE}}})
    result = run_attempt(tmp_path, 'echo "key=$SERVICE_API_KEY"\nexit 1\n', config=config)
    assert result.outcome is Outcome.ENGINE_FAILED
    assert "key=" in result.log_text
    for text in (result.log_path.read_text(), result.log_text, result.tail):
        assert TOKEN_VALUE not in text


def test_verify_that_runs_past_the_limit_is_a_timeout(tmp_path: Path) -> None:
    """The attempt's wall limit covers verify too: a hanging verify ends as timeout and is killed."""
    text = "---\ntimeout: 1s\nverify: echo $$ > verify.pid; sleep 300\n---\necho engine done\n"
    result = run_attempt(tmp_path, text)
    assert result.outcome is Outcome.TIMEOUT
    assert "verify" in result.detail
    assert wait_dead(int((tmp_path / "q" / "verify.pid").read_text()))


def test_a_log_over_log_max_keeps_head_and_tail_with_a_cut_marker(tmp_path: Path) -> None:
    """The kept log stays near log_max: the head, a marker saying how much was cut, then the tail."""
    config = make_config(log_max="2KiB")
    result = run_attempt(tmp_path, 'for i in $(seq 3000); do echo "row $i of the output"; done\n',
                         config=config)
    assert result.outcome is Outcome.OK
    kept = result.log_text
    assert len(kept.encode()) < 3 * 2048
    assert "bytes cut to keep this log under 2048 bytes" in kept
    assert "row 1 of the output" in kept
    assert "row 3000 of the output" in kept
    assert kept.index("row 1 of") < kept.index("bytes cut") < kept.index("row 3000 of")


def test_artifacts_matching_the_globs_are_collected(tmp_path: Path) -> None:
    """Files under cwd matching `artifacts` globs are returned; other files are not."""
    work = tmp_path / "work"
    work.mkdir()
    text = (f"---\ncwd: {work}\nartifacts: ['dist/*.txt', report.md]\n---\n"
            "mkdir -p dist; echo a > dist/a.txt; echo b > dist/b.bin; echo r > report.md\n")
    result = run_attempt(tmp_path, text)
    assert result.outcome is Outcome.OK
    assert sorted(p.relative_to(work).as_posix() for p in result.artifacts) == [
        "dist/a.txt", "report.md"]


def test_the_run_folder_holds_the_files_rundir_names(tmp_path: Path) -> None:
    """The attempt writes its log, prompt, previous failure, pgid and mark where RunFiles says,
    the paths every reader (reclaim, `aq logs -f`, the board) takes from it."""
    result = run_attempt(tmp_path, f"echo ${MARK_VAR} > mark-seen\necho $$ > pid\necho done\n",
                         attempt=2, previous_failure="it broke")
    assert result.outcome is Outcome.OK, result.log_text
    files = RunFiles(tmp_path / "run" / JOB, 2)
    assert result.log_path == files.log
    assert "done" in files.log.read_text()
    assert "echo done" in files.prompt.read_text()
    assert files.previous_failure.read_text() == "it broke"
    assert files.mark.read_text() == (tmp_path / "q" / "mark-seen").read_text().strip()
    assert int(files.pgid.read_text()) == int((tmp_path / "q" / "pid").read_text())


STREAMED = ('echo \'{"type":"assistant","message":{"model":"m1",'
            '"usage":{"input_tokens":100000,"output_tokens":0}}}\'\n')


def test_the_usage_so_far_is_kept_where_live_usage_reads_it(tmp_path: Path) -> None:
    """An engine that streams usage has its running figure kept in the run folder, priced; the
    board and a reclaim read it back with live_usage."""
    config = make_config(engines={"streamer": {"cmd": ["bash", "{prompt_file}"], "input": "body",
                                               "usage": "claude-json"}},
                         prices={"m1": {"input": 10, "output": 10}})
    result = run_attempt(tmp_path, "---\nengine: streamer\n---\n" + STREAMED, config=config)
    assert result.outcome is Outcome.OK, result.log_text
    kept = live_usage(tmp_path / "run" / JOB, 1)
    assert kept is not None
    assert kept.input_tokens == 100_000
    assert kept.cost_usd == pytest.approx(1.0)
