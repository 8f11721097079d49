"""aq.infra.proc: the one subprocess chokepoint. Real processes in their own group, stopped by deadline or event."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from aq.infra import proc
from tests.helpers.processes import alive, wait_dead


class Sink:
    """Collects streamed output; can fire a callback on a marker line."""

    def __init__(self, on_line: dict[str, threading.Event] | None = None) -> None:
        self.chunks: list[bytes] = []
        self.on_line = on_line or {}

    def __call__(self, data: bytes) -> None:
        self.chunks.append(data)
        text = data.decode()
        for marker, event in self.on_line.items():
            if marker in text:
                event.set()

    @property
    def text(self) -> str:
        return b"".join(self.chunks).decode()


def stream(script: str, tmp_path: Path, *, deadline: float | None = None,
           stop: threading.Event | None = None, grace: float = 0.5, sink: Sink | None = None
           ) -> tuple[proc.StreamResult, Sink]:
    sink = sink or Sink()
    result = proc.run_streaming(
        ["bash", "-c", script], cwd=tmp_path, env=proc.clean_env(), sink=sink,
        deadline=deadline, stop=stop or threading.Event(), grace=grace,
    )
    return result, sink


def test_output_is_streamed_line_by_line_and_the_exit_code_kept(tmp_path: Path) -> None:
    """A process that exits on its own ends 'exit' with its code; stdout and stderr both reach the sink."""
    result, sink = stream("echo one; echo two >&2; exit 3", tmp_path)
    assert result.ended == "exit"
    assert result.returncode == 3
    assert sorted(sink.chunks) == [b"one\n", b"two\n"]


def test_the_child_runs_in_cwd_with_the_env_given(tmp_path: Path) -> None:
    """cwd and env are the ones passed in, nothing else of the caller's."""
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}
    sink = Sink()
    result = proc.run_streaming(["bash", "-c", "pwd; echo ${ONLY_THIS}; echo ${HOME:-nohome}"],
                                cwd=tmp_path, env=env, sink=sink, deadline=None,
                                stop=threading.Event(), grace=0.5)
    assert result.ended == "exit"
    assert sink.text.splitlines() == [str(tmp_path.resolve()), "yes", "nohome"]


def test_deadline_sends_term_then_kill_after_grace_to_a_process_that_traps_term(
        tmp_path: Path) -> None:
    """Past the deadline the group gets TERM; a process that ignores it is KILLed after the grace."""
    script = ("trap 'echo got-term' TERM; echo $$ > pid; echo ready; "
              "while true; do sleep 0.05; done")
    result, sink = stream(script, tmp_path, deadline=time.monotonic() + 0.5, grace=0.5)
    assert result.ended == "timeout"
    assert result.returncode is None
    assert "got-term" in sink.text  # TERM came first and was survived ...
    assert wait_dead(int((tmp_path / "pid").read_text()))  # ... so KILL ended it


def test_deadline_kills_the_whole_group_including_background_children(tmp_path: Path) -> None:
    """A timed-out script's background child dies with it: TERM goes to the process group."""
    script = "sleep 300 & echo $! > child; echo $$ > pid; sleep 300"
    result, _ = stream(script, tmp_path, deadline=time.monotonic() + 0.5)
    assert result.ended == "timeout"
    assert wait_dead(int((tmp_path / "pid").read_text()))
    assert wait_dead(int((tmp_path / "child").read_text()))


def test_a_stop_event_stops_the_group(tmp_path: Path) -> None:
    """Setting `stop` while the process runs ends it as 'stopped' and kills its group."""
    stop = threading.Event()
    sink = Sink(on_line={"ready": stop})
    script = "sleep 300 & echo $! > child; echo $$ > pid; echo ready; wait"
    result, _ = stream(script, tmp_path, stop=stop, sink=sink)
    assert result.ended == "stopped"
    assert result.returncode is None
    assert wait_dead(int((tmp_path / "pid").read_text()))
    assert wait_dead(int((tmp_path / "child").read_text()))


def test_the_engine_runs_in_its_own_process_group(tmp_path: Path) -> None:
    """The child leads a new process group, so killing it never reaches the worker."""
    seen: dict[str, int] = {}
    stop = threading.Event()

    def sink(data: bytes) -> None:
        pid = int(data.decode())
        seen["pgid"], seen["pid"] = os.getpgid(pid), pid
        stop.set()

    result = proc.run_streaming(["bash", "-c", "echo $$; sleep 300"], cwd=tmp_path,
                                env=proc.clean_env(), sink=sink, deadline=None, stop=stop,
                                grace=0.5)
    assert result.ended == "stopped"
    assert seen["pgid"] == seen["pid"]
    assert seen["pgid"] != os.getpgid(0)


def test_leftover_background_children_die_when_the_script_exits(tmp_path: Path) -> None:
    """A script that exits 0 but leaves a child behind: the child is killed, the exit code kept."""
    result, _ = stream("sleep 300 & echo $! > child; exit 0", tmp_path)
    assert result.ended == "exit"
    assert result.returncode == 0
    assert wait_dead(int((tmp_path / "child").read_text()))


def test_a_missing_program_ends_missing_with_a_line_in_the_sink(tmp_path: Path) -> None:
    """A program that is not installed never raises: it ends 'missing' and says so in the output."""
    sink = Sink()
    result = proc.run_streaming(["aq-test-no-such-program-xyz", "arg"], cwd=tmp_path,
                                env=proc.clean_env(), sink=sink, deadline=None,
                                stop=threading.Event(), grace=0.5)
    assert result.ended == "missing"
    assert result.returncode is None
    assert "cannot start aq-test-no-such-program-xyz" in sink.text


def test_clean_env_drops_git_variables_and_adds_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child never inherits what points git elsewhere (a hook's GIT_DIR must not leak), but
    keeps the user's transport, credential and identity settings; extras are added."""
    redirecting = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                   "GIT_QUARANTINE_PATH", "GIT_CONFIG_PARAMETERS", "GIT_TRACE", "GIT_NAMESPACE")
    users = ("GIT_SSH_COMMAND", "GIT_SSH", "GIT_ASKPASS", "GIT_PROXY_COMMAND", "GIT_SSL_CAINFO",
             "GIT_AUTHOR_NAME", "GIT_COMMITTER_EMAIL", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_COUNT",
             "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0", "GIT_TERMINAL_PROMPT")
    for name in (*redirecting, *users):
        monkeypatch.setenv(name, "/somewhere/.git" if name == "GIT_DIR" else "x")
    monkeypatch.setenv("AQ_TEST_KEEP", "kept")
    env = proc.clean_env({"AQ_JOB_ID": "j1"})
    assert [name for name in redirecting if name in env] == []
    assert [name for name in users if name not in env] == []
    assert env["AQ_TEST_KEEP"] == "kept"
    assert env["AQ_JOB_ID"] == "j1"
    assert proc.clean_env(keep_git=True)["GIT_DIR"] == "/somewhere/.git"


def test_a_daemonized_child_holding_the_output_does_not_hang_the_run(tmp_path: Path) -> None:
    """A script that leaves a setsid child with its stdout returns when the script ends, not when
    the child does (which may be killed with it, as a member of its tree, but is not waited for)."""
    script = ("setsid sh -c 'echo $$ > daemon.tmp; mv daemon.tmp daemon; sleep 20; touch ended' &\n"
              "while [ ! -e daemon ]; do sleep 0.05; done; echo started")
    try:
        result, sink = stream(script, tmp_path, deadline=time.monotonic() + 1)
        assert result.ended == "exit" and "started" in sink.text
        assert not (tmp_path / "ended").exists()  # returned before the daemon's 20 s were up
    finally:
        pid = (tmp_path / "daemon").read_text().strip() if (tmp_path / "daemon").exists() else ""
        if pid and alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)
