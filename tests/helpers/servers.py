"""Real servers for a queue's remote over the network, on 127.0.0.1, each on a free port: OpenSSH's
`sshd` (run as the current user, with keys the test makes) and git's smart HTTP (`git
http-backend` behind a small threaded HTTP(S) server of its own process). Each is a context
manager; `kill()` is kill -9 of the server and every connection it is serving, and `start()`
brings it back on the same port. `PushTrap` holds a push to main inside the remote, before or
after its ref moves, so that a test can kill the server while that push is in flight.

What cannot run on this machine raises `Unavailable`, saying why (a test skips on it).
`python -m tests.helpers.servers http ...` is the HTTP server's own process.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import os
import pwd
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[2]


class Unavailable(Exception):
    """This machine cannot run the server (no sshd, a locked account, ...): the reason."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def base_env() -> dict[str, str]:
    """Our environment without any GIT_ or AQ_ setting: a server never inherits a test's."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "AQ_"))}


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            found.setdefault(parent, []).append(int(entry.name))
    return found


def kill_tree(pid: int) -> None:
    """kill -9 `pid` and all its descendants, whatever session they made for themselves (sshd's
    connections each have their own). Each is stopped first, so none forks or is reparented
    away while the tree is walked."""
    stopped: list[int] = []
    for _ in range(50):
        tree, todo, seen = _children(), [pid], set(stopped)
        fresh = []
        while todo:
            here = todo.pop()
            todo += tree.get(here, [])
            if here not in seen:
                seen.add(here)
                fresh.append(here)
        for each in fresh:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(each, signal.SIGSTOP)
        stopped += fresh
        if not fresh:
            break
    for each in stopped:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(each, signal.SIGKILL)


class Server:
    """A server process on a fixed port of 127.0.0.1: started, killed with kill -9 (with what
    it serves) and started again on the same port."""

    name = "server"

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = folder / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def process_env(self) -> dict[str, str]:
        return base_env()

    @property
    def client_env(self) -> dict[str, str]:
        """What git (and aq) need in their environment to reach this server."""
        return {}

    def url(self, repo: Path) -> str:
        raise NotImplementedError

    def start(self, within: float = 30.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.argv(), env=self.process_env(),
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + within
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited {self.proc.returncode} at start: "
                                  f"{self.log_tail()}")
            if listening(self.port):
                return
            time.sleep(0.05)
        raise Unavailable(f"{self.name} did not listen on 127.0.0.1:{self.port} within "
                          f"{within:.0f}s: {self.log_tail()}")

    def kill(self) -> None:
        """kill -9 the server and every connection it serves, as a crash of its machine would."""
        if self.proc is None:
            return
        if self.proc.poll() is None:  # not reaped yet: its pid and group are still its own
            kill_tree(self.proc.pid)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        self.proc = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 8) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return " | ".join(text.strip().splitlines()[-lines:]) or "(nothing logged)"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.kill()


# --- ssh ------------------------------------------------------------------------------------------

def find_sshd() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def keygen(path: Path) -> Path:
    """A new ed25519 key pair, no passphrase: `path` and `path`.pub."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "aq-test", "-f",
                    str(path)], check=True, capture_output=True, timeout=60)
    return path


class Sshd(Server):
    """OpenSSH's sshd on 127.0.0.1, run as this user (root on CI), its own config, host key and
    authorized key, no PAM. `client_env` holds the GIT_SSH_COMMAND that reaches it with the
    client key; `url(repo)` the ssh:// URL of a repository on this machine. With `passwords`, it
    also offers password logins (which never succeed): a client with a terminal would prompt."""

    name = "sshd"

    def __init__(self, folder: Path, passwords: bool = False) -> None:
        binary = find_sshd()
        if binary is None:
            raise Unavailable("no sshd: install openssh-server (.ci/run does) to run the ssh tests")
        if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            raise Unavailable("no ssh or ssh-keygen on PATH (openssh-client)")
        super().__init__(folder)
        self.binary = binary
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.host_key = keygen(folder / "host_key")
        self.key = keygen(folder / "client_key")
        self.authorized = folder / "authorized_keys"
        self.authorized.write_text(Path(f"{self.key}.pub").read_text())
        self.config = folder / "sshd_config"
        self.passwords = passwords
        self.home = folder / "home"
        self.home.mkdir(exist_ok=True)
        if os.geteuid() == 0:  # root's sshd wants its privilege separation folder
            with contextlib.suppress(OSError):
                Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self._write_config()

    def _write_config(self) -> None:
        lines = [
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            "PidFile none", f"AuthorizedKeysFile {self.authorized}", "StrictModes no",
            "UsePAM no", "PubkeyAuthentication yes",
            f"PasswordAuthentication {'yes' if self.passwords else 'no'}",
            "KbdInteractiveAuthentication no",
            f"PermitRootLogin {'prohibit-password' if self.passwords else 'yes'}",
            "PermitUserEnvironment no", "UseDNS no", "PrintMotd no", "PrintLastLog no",
            "X11Forwarding no", "AllowTcpForwarding no", "AllowAgentForwarding no",
            "MaxStartups 200", "MaxSessions 200", "LoginGraceTime 30", "LogLevel INFO",
            # the sessions' git is this process's git, and their HOME an empty folder: the
            # user's shell reads no rc file of theirs (bash does for ssh), which a kill -9
            # could catch half-way (pyenv's rehash lock, left behind, stalls every later login)
            f'SetEnv "PATH={os.environ.get("PATH", "/usr/bin:/bin")}" "HOME={self.home}"',
            # OpenSSH 9.8+ shuts out a source address whose connections fail or are cut: the
            # tests kill connections and fail logins on purpose
            "PerSourcePenalties no",
        ]
        self.config.write_text("\n".join(lines) + "\n")
        checked = self._check()
        if "PerSourcePenalties" in checked:  # an OpenSSH before 9.8: no such option
            self.config.write_text("\n".join(lines[:-1]) + "\n")
            checked = self._check()
        if checked:
            raise Unavailable(f"sshd -t rejects its config: {checked}")

    def _check(self) -> str:
        done = subprocess.run([self.binary, "-t", "-f", str(self.config)], capture_output=True,
                              text=True, timeout=60)
        return "" if done.returncode == 0 else (done.stderr.strip() or f"exit {done.returncode}")

    def argv(self) -> list[str]:
        return [self.binary, "-D", "-e", "-f", str(self.config)]

    def ssh_command(self, key: Path | None = None, batch: bool = True) -> str:
        """What GIT_SSH_COMMAND holds to reach this server with `key` (the authorized one by
        default), never asking anything (BatchMode) unless `batch` is False."""
        options = ["-F", "/dev/null", "-i", str(key or self.key), "-p", str(self.port),
                   "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                   "-o", "ConnectTimeout=20"]
        if batch:
            options += ["-o", "BatchMode=yes"]
        return shlex.join(["ssh", *options])

    @property
    def client_env(self) -> dict[str, str]:
        return {"GIT_SSH_COMMAND": self.ssh_command()}

    def url(self, repo: Path) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{repo.resolve()}"

    def __enter__(self) -> Sshd:
        self.start()
        self.probe()
        return self

    def probe(self) -> None:
        """One login with the client key: a server that runs but lets nobody in (a locked
        account, no shell) is unavailable, with sshd's own reason."""
        done = subprocess.run([*shlex.split(self.ssh_command()), f"{self.user}@127.0.0.1", "true"],
                              capture_output=True, text=True, timeout=60, env=base_env(),
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            self.kill()
            raise Unavailable(f"sshd runs but a login as {self.user} with the test's key fails "
                              f"({done.stderr.strip() or done.returncode}): {self.log_tail()}")


# --- smart HTTP -----------------------------------------------------------------------------------

def make_certificate(folder: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate for 127.0.0.1 (cert, key), or None without openssl."""
    if shutil.which("openssl") is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    done = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"], capture_output=True, timeout=60)
    return (cert, key) if done.returncode == 0 else None


class HttpGit(Server):
    """`git http-backend` (smart HTTP, push enabled) for every repository under `root`, behind a
    threaded HTTP server in its own process: HTTPS with a self-signed certificate when openssl
    is there (`client_env` points git at it), else plain HTTP. With `auth` ("user:password") every
    request needs Basic auth. `fail_next_push` answers the next push to main with a 5xx."""

    name = "http"

    def __init__(self, folder: Path, root: Path, auth: str | None = None, tls: bool = True) -> None:
        super().__init__(folder)
        self.root = root.resolve()
        self.auth = auth
        self.control = folder / "control"
        self.control.mkdir(exist_ok=True)
        self.tls = make_certificate(folder) if tls else None
        self.scheme = "https" if self.tls else "http"

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "tests.helpers.servers", "http", "--root", str(self.root),
                "--port", str(self.port), "--control", str(self.control)]
        if self.tls:
            argv += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        if self.auth:
            argv += ["--auth", self.auth]
        return argv

    def process_env(self) -> dict[str, str]:
        return {**base_env(), "PYTHONPATH": str(REPO)}

    @property
    def client_env(self) -> dict[str, str]:
        """What git needs to trust this server: its certificate (GIT_SSL_CAINFO)."""
        return {"GIT_SSL_CAINFO": str(self.tls[0])} if self.tls else {}

    def url(self, repo: Path) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/{repo.resolve().relative_to(self.root)}"

    def fail_next_push(self, when: str, status: int = 502) -> None:
        """The next push to main is answered `status`: "before" it reaches the repository (it
        does not land), or "after" git took it (it landed; the client hears an error)."""
        assert when in ("before", "after"), when
        (self.control / f"fail-{when}").write_text(str(status))

    def forget_failures(self) -> None:
        """No push is answered with an error any more (what fail_next_push set and is not used)."""
        for when in ("before", "after"):
            (self.control / f"fail-{when}").unlink(missing_ok=True)

    def failed(self, when: str) -> str | None:
        """The commit of the push answered with a 5xx `when`, once it happened; else None."""
        path = self.control / f"failed-{when}"
        return path.read_text().strip() if path.exists() else None

    def unavailable(self, on: bool) -> None:
        """While on, every request is answered 503."""
        path = self.control / "down"
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)

    def __enter__(self) -> HttpGit:
        self.start()
        return self


# --- a push held inside the remote ---------------------------------------------------------------

# Only a push that came through a server is held (sshd sets SSH_CONNECTION, a CGI server
# REQUEST_METHOD): a test's own push over the path goes on.
PRE_RECEIVE = """#!/bin/sh
# armed by {trap}/before: the next push to main waits here, before its ref moves
if [ -z "$SSH_CONNECTION$REQUEST_METHOD" ]; then cat >/dev/null; exit 0; fi
while read old new ref; do
    if [ "$ref" = refs/heads/main ] && rm "{trap}/before" 2>/dev/null; then
        echo "$new" > "{trap}/.held" && mv "{trap}/.held" "{trap}/held-before"
        sleep 30
    fi
done
exit 0
"""

REFERENCE_TRANSACTION = """#!/bin/sh
# armed by {trap}/after: the next push to main waits here, its ref moved, before git answers
if [ "$1" != committed ] || [ -z "$SSH_CONNECTION$REQUEST_METHOD" ]; then cat >/dev/null; exit 0; fi
while read old new ref; do
    if [ "$ref" = refs/heads/main ] && rm "{trap}/after" 2>/dev/null; then
        echo "$new" > "{trap}/.held" && mv "{trap}/.held" "{trap}/held-after"
        sleep 30
    fi
done
exit 0
"""


class PushTrap:
    """Hooks in a bare remote that hold the next push to main through a server once armed:
    "before" (pre-receive: the push has not landed) or "after" (reference-transaction,
    committed: it has landed, and the pusher has not been told). While it is held, the test
    kills the server."""

    def __init__(self, remote: Path, folder: Path) -> None:
        self.dir = folder
        self.dir.mkdir(parents=True, exist_ok=True)
        hooks = remote / "hooks"
        for name, text in (("pre-receive", PRE_RECEIVE),
                           ("reference-transaction", REFERENCE_TRANSACTION)):
            (hooks / name).write_text(text.format(trap=self.dir))
            (hooks / name).chmod(0o755)

    def arm(self, when: str) -> None:
        assert when in ("before", "after"), when
        (self.dir / when).touch()

    def disarm(self) -> None:
        for when in ("before", "after"):
            (self.dir / when).unlink(missing_ok=True)

    def held(self, when: str) -> str | None:
        """The commit of the push held `when` (and forget it); None while none is."""
        path = self.dir / f"held-{when}"
        with contextlib.suppress(FileNotFoundError):
            commit = path.read_text().strip()
            path.unlink()
            return commit
        return None


# --- the HTTP server's own process ---------------------------------------------------------------

def _pushed_commit(body: bytes) -> tuple[str, str] | None:
    """(new commit, ref) of the first command of a receive-pack request; None if it is none."""
    with contextlib.suppress(ValueError, IndexError):
        size = int(body[:4], 16)
        first = body[4:size].split(b"\0")[0].split()
        return first[1].decode(), first[2].decode()
    return None


class GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, root: Path, control: Path, auth: str | None,
                 tls: ssl.SSLContext | None) -> None:
        super().__init__(("127.0.0.1", port), GitHandler)
        self.root, self.control, self.tls = root, control, tls
        self.expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None

    def finish_request(self, request: Any, client_address: Any) -> None:
        # the TLS handshake in the connection's own thread: a slow client stalls no other
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError):
                return
        super().finish_request(request, client_address)

    def take(self, name: str) -> str | None:
        """A one-shot order from the test (a file in the control folder), consumed."""
        path = self.control / name
        with contextlib.suppress(FileNotFoundError):
            text = path.read_text().strip()
            path.unlink()
            return text
        return None


class GitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: GitHTTPServer

    def do_GET(self) -> None:
        self.serve()

    def do_POST(self) -> None:
        self.serve()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def answer(self, status: int, body: bytes = b"",
               headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def serve(self) -> None:
        server = self.server
        body = self.read_body()  # read whatever the answer: the connection is kept alive
        if server.expected and self.headers.get("Authorization") != server.expected:
            self.answer(401, b"who are you?\n", {"WWW-Authenticate": 'Basic realm="aq-test"'})
            return
        if (server.control / "down").exists():
            self.answer(503, b"down for maintenance\n")
            return
        path, _, query = self.path.partition("?")
        failing = self.failure(path, body)
        if failing and failing[0] == "before":
            self.answer(failing[1], b"the test says no\n")
            return
        done = subprocess.run(["git", "http-backend"], input=body, capture_output=True,
                              env=self.cgi_env(unquote(path), query, len(body)), timeout=300)
        if failing and b"ok refs/heads/main" in done.stdout:  # git took it; the client hears
            (server.control / "failed-after").write_text(failing[2])  # an error
            self.answer(failing[1], b"the test lost the answer\n")
            return
        if failing:  # git refused it (a lost race): not the landed push asked for; the next one
            (server.control / "fail-after").write_text(str(failing[1]))
        # a CGI answer: header lines, a blank line, the body
        blank = b"\r\n\r\n" if b"\r\n\r\n" in done.stdout else b"\n\n"
        head, _, payload = done.stdout.partition(blank)
        status, headers = 200, {}
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers[name.strip()] = value.strip()
        if done.returncode != 0 and not head:
            status, payload = 500, done.stderr
        self.answer(status, payload, headers)

    def failure(self, path: str, body: bytes) -> tuple[str, int, str] | None:
        """(when, status, commit) if the test ordered this request, a push to main, answered
        with an error; the order is used up, and (before) the pushed commit noted for the test;
        after, it is noted once git says the push landed."""
        if not path.endswith("/git-receive-pack"):
            return None
        plain = gzip.decompress(body) if self.headers.get("Content-Encoding") == "gzip" else body
        pushed = _pushed_commit(plain)
        if pushed is None or pushed[1] != "refs/heads/main":
            return None
        for when in ("before", "after"):
            status = self.server.take(f"fail-{when}")
            if status is not None:
                if when == "before":
                    (self.server.control / "failed-before").write_text(pushed[0])
                return when, int(status), pushed[0]
        return None

    def cgi_env(self, path: str, query: str, length: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update({
            "GIT_PROJECT_ROOT": str(self.server.root), "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0], "REMOTE_USER": "aq-test",
            "SERVER_PROTOCOL": self.request_version,
        })
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        return env


def serve_http(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="servers http")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control", type=Path, required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth")
    args = parser.parse_args(argv)
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    with GitHTTPServer(args.port, args.root, args.control, args.auth, context) as server:
        server.serve_forever()


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        serve_http(sys.argv[2:])
    else:
        sys.exit("usage: python -m tests.helpers.servers http --root R --port P --control C ...")
