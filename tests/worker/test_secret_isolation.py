"""Secret isolation (DESIGN §6): a planted secret reaches no committed file, log or git object.

Every test runs the real `aq` CLI with the shell engine on a real git queue, plants known secrets
(in env vars whose names hold TOKEN, KEY, SECRET or PASSWORD, in an engine's `env:`, or as token
shapes the job prints), and then sweeps everything the run could have written with `scan`:
the work tree, every git object (reachable from any ref or not), commit messages, the whole git
dir outside the object store (the aq state folder with running logs, reflogs, refs, the index),
a fleet's bare remote, and what aq printed.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

from aq.infra.rundir import RunFiles
from tests.helpers.cli import aq_env, run_aq
from tests.helpers.fleet import fleet_in
from tests.helpers.queue import events, stage_of, write_job
from tests.helpers.secrets import _git, leaks, needles, scan
from tests.helpers.waiting import wait_until

REDACTED = "[REDACTED]"  # what aq/core/scrub.py writes in place of a secret

# --- secrets in env vars (each name holds TOKEN, KEY, SECRET or PASSWORD) -------------------------
GITHUB_TOKEN = "ghp_" + "R7kQ2mX9vL4tB8nW3cY6" + "pZ1sD5fH0jK2gA4e"  # ghp_ + 36 characters
MY_API_KEY = "apikey-5b1e9c37-d0a4-4f6e-9b2a-73c8e1f04d6a"
DB_PASSWORD = "db-first-line-Xq81Zr\n  db-second-line-Pe44Lm\ndb-third-line-Kw09Tu"  # three lines
AWS_SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzq8Vt3Lk2N"  # 40 chars, with / and +
LOWER_TOKEN = "lowercase-name-token-0c7d2e9f"
SECRET_ENV = {
    "GITHUB_TOKEN": GITHUB_TOKEN,
    "MY_API_KEY": MY_API_KEY,
    "DB_PASSWORD": DB_PASSWORD,
    "AWS_SECRET_ACCESS_KEY": AWS_SECRET_ACCESS_KEY,
    "lowercase_api_token": LOWER_TOKEN,  # the names are matched regardless of case
}


# --- the scanner ----------------------------------------------------------------------------------


# --- running aq -----------------------------------------------------------------------------------



def printed(root: Path, job_id: str) -> dict[str, str]:
    """What aq shows a person about the job, asked without any secret in the environment."""
    shown = {"aq logs": run_aq("logs", job_id, cwd=root),
             "aq show --json": run_aq("show", job_id, "--json", cwd=root)}
    texts: dict[str, str] = {}
    for name, ran in shown.items():
        assert ran.returncode == 0, f"{name}: {ran.stderr}"
        texts[name] = ran.stdout + ran.stderr
    return texts


def gate(out: Path) -> str:
    """Shell lines: say this attempt has printed everything, then wait (at most 60 s) for go-<n>."""
    return (f'touch "{out}/ready-$AQ_ATTEMPT"\n'
            f'for _ in $(seq 1200); do [ -e "{out}/go-$AQ_ATTEMPT" ] && break; sleep 0.05; done\n')


# --- the scanner finds what it looks for ------------------------------------------------------

def test_the_scanner_finds_a_secret_in_every_place_it_claims_to_look(tmp_path: Path) -> None:
    """A secret planted in history, a file name, a message, .git/aq, a loose blob, a worker ref or a bare remote is found."""
    repo = tmp_path / "repo"
    repo.mkdir()
    planted = {name: f"planted-{name}-7f3a91c2" for name in
               ("file", "filename", "message", "state", "loose", "ref", "untracked", "extra")}
    _git(repo, "init", "-q", "-b", "main")
    (repo / "queue").mkdir()
    (repo / "queue" / "a.txt").write_text(f"x {planted['file']} y\n")
    (repo / "queue" / f"{planted['filename']}.log").write_text("harmless\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", f"add {planted['message']}")
    (repo / "queue" / "a.txt").write_text("rewritten\n")  # the secret now lives only in history
    _git(repo, "commit", "-q", "-am", "rewrite")
    (repo / ".git" / "aq" / "running" / "job").mkdir(parents=True)
    (repo / ".git" / "aq" / "running" / "job" / "1.log").write_text(planted["state"])
    _git(repo, "hash-object", "-w", "--stdin", input=planted["loose"].encode())
    blob = _git(repo, "hash-object", "-w", "--stdin", input=planted["ref"].encode())
    blob = blob.decode().strip()
    tree = _git(repo, "mktree", input=f"100644 blob {blob}\tbeat.json\n".encode()).decode().strip()
    beat = _git(repo, "commit-tree", tree, "-m", "heartbeat").decode().strip()
    _git(repo, "update-ref", "refs/aq/workers/w1", beat)
    (repo / "untracked.txt").write_text(planted["untracked"])
    multi = "line-one-abcdef\nline-two-ghijkl"
    (repo / "events.jsonl").write_text(json.dumps({"tail": "line-two-ghijkl"}) + "\n")
    hits = scan(repo, [*planted.values(), multi], extra={"aq run stdout": planted["extra"]})
    where: dict[str, list[str]] = {}
    for place, secret in hits:
        where.setdefault(secret, []).append(place)

    def seen(name: str, prefix: str) -> bool:
        return any(place.startswith(prefix) for place in where.get(planted[name], []))

    assert seen("file", "object ") and not seen("file", "work tree")  # only in history
    assert seen("filename", "work tree path queue/") and seen("filename", "object path queue/")
    assert seen("filename", "object ")  # the tree that names it
    assert seen("message", "commit messages") and seen("message", "object ")
    assert seen("message", "git dir file logs/HEAD")  # the reflog holds the subject
    assert where[planted["state"]] == ["git dir file aq/running/job/1.log"]
    assert len(where[planted["loose"]]) == 1
    assert seen("loose", "unreachable object ")
    assert seen("ref", "object ")  # reached from refs/aq/workers/w1 only
    assert where[planted["untracked"]] == ["work tree file untracked.txt"]
    assert ("aq run stdout", planted["extra"]) in hits
    assert ("work tree file events.jsonl", multi) in hits  # one line of a multi-line value leaks

    bare = tmp_path / "remote.git"
    _git(tmp_path, "clone", "-q", "--bare", str(repo), str(bare))
    _git(repo, "push", "-q", str(bare), "refs/aq/workers/w1:refs/aq/workers/w1")
    remote = {secret for _, secret in scan(bare, planted.values())}
    assert {planted["file"], planted["filename"], planted["message"], planted["ref"]} <= remote
    assert planted["state"] not in remote and planted["untracked"] not in remote


# --- a. secrets in env vars ------------------------------------------------------------------

def test_env_secrets_printed_everywhere_by_a_failing_job_reach_no_file_log_or_object(
        queue_root: Path, tmp_path: Path) -> None:
    """Secret env values a job echoes to stdout, stderr, an artifact, its failure tail, its retry and verify land nowhere."""
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    dump = ('echo "gh=$GITHUB_TOKEN key=$MY_API_KEY"\n'
            'echo "aws=$AWS_SECRET_ACCESS_KEY low=$lowercase_api_token" >&2\n'
            'printf "%s\\n" "$DB_PASSWORD"\n'
            'printf "pw=%s\\n" "$DB_PASSWORD" >&2\n')
    body = (dump
            + "{\n" + dump.replace(" >&2", "") + "} > report.txt\n"
            + 'if [ -n "${AQ_PREVIOUS_FAILURE_FILE:-}" ]; then\n'
              '  cat "$AQ_PREVIOUS_FAILURE_FILE"\n'
              '  cp "$AQ_PREVIOUS_FAILURE_FILE" previous-failure.txt\n'
              'fi\n'
            + gate(out)
            + '[ "$AQ_ATTEMPT" = 1 ] && exit 3\nexit 0\n')
    verify = ('echo "verify gh=$GITHUB_TOKEN key=$MY_API_KEY aws=$AWS_SECRET_ACCESS_KEY"; '
              'printf "%s\\n" "$DB_PASSWORD" >&2; echo "low=$lowercase_api_token"; exit 1')
    write_job(queue_root, "leaky", body, cwd=str(work), verify=verify,
              artifacts=["report.txt", "previous-failure.txt"],
              retry={"max": 1, "backoff": "200ms", "on": ["engine_failed", "verify_failed"]})
    manifest_text = (queue_root / "queue" / "inbox" / "leaky.md").read_text()
    assert not [s for s in needles(SECRET_ENV.values()) if s.decode() in manifest_text]

    stdout, stderr = tmp_path / "run.out", tmp_path / "run.err"
    with open(stdout, "wb") as out_file, open(stderr, "wb") as err_file:
        worker = subprocess.Popen([sys.executable, "-m", "aq", "run", "--drain", "--worker", "w1"],
                                  cwd=queue_root, env=aq_env(SECRET_ENV), stdin=subprocess.DEVNULL,
                                  stdout=out_file, stderr=err_file)
    running = queue_root / ".git" / "aq" / "running" / "leaky"
    try:
        # mid-run, each attempt: the claim is committed; the running log (and, for the retry, the
        # previous failure handed to it) sit in the state folder under .git/aq
        for n in (1, 2):
            assert wait_until((out / f"ready-{n}").exists, 60), stderr.read_text()
            assert stage_of(queue_root, "leaky") == "building"
            # the job has printed everything; the worker's reader may still be writing it down
            files = RunFiles(running, n)
            assert wait_until(lambda files=files: files.log.read_text().count(REDACTED) >= 8,
                              60), files.log.read_text()
            if n == 2:
                assert "gh=[REDACTED]" in files.previous_failure.read_text()
            mid = scan(queue_root, SECRET_ENV.values())
            assert not leaks(mid), f"secret found while attempt {n} ran:\n" + leaks(mid)
            (out / f"go-{n}").touch()
        assert worker.wait(timeout=120) == 0, stderr.read_text()
    finally:
        (out / "go-1").touch()
        (out / "go-2").touch()
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=30)

    # the run really happened: two attempts (engine failure, then verify failure), then dead_letter
    assert stage_of(queue_root, "leaky") == "dead_letter"
    first, second = events(queue_root, "leaky", "finished")
    assert (first["outcome"], second["outcome"]) == ("engine_failed", "verify_failed")
    assert REDACTED in first["tail"] and REDACTED in second["tail"]
    assert "gh=[REDACTED] key=[REDACTED]" in first["tail"]
    assert "verify gh=[REDACTED] key=[REDACTED] aws=[REDACTED]" in second["tail"]
    logs = queue_root / "queue" / ".logs" / "leaky"
    for n in (1, 2):
        text = (logs / f"{n}.log").read_text()
        assert "gh=[REDACTED] key=[REDACTED]" in text and "low=[REDACTED]" in text
        assert "pw=[REDACTED]" in text
        assert REDACTED in (logs / str(n) / "report.txt").read_text()
    # the retry was handed the first failure's tail (and kept it as an artifact)
    assert "gh=[REDACTED]" in (logs / "2" / "previous-failure.txt").read_text()
    assert "verify gh=[REDACTED]" in (logs / "2.log").read_text()
    assert (work / "report.txt").read_text().count(GITHUB_TOKEN) == 1  # the job did write them
    assert "[REDACTED]" in _git(queue_root, "log", "-p", "--all").decode()

    hits = scan(queue_root, SECRET_ENV.values(), extra={
        "aq run stdout": stdout.read_bytes(), "aq run stderr": stderr.read_bytes(),
        **printed(queue_root, "leaky")})
    assert not leaks(hits), "secret found after the run:\n" + leaks(hits)


def test_env_secrets_in_the_name_of_an_artifact_are_not_committed(
        queue_root: Path, tmp_path: Path) -> None:
    """An artifact whose file name holds a secret env value puts it in no committed path or event."""
    work = tmp_path / "work"
    work.mkdir()
    write_job(queue_root, "named", 'mkdir -p out\necho data > "out/dump-$MY_API_KEY.txt"\n',
              cwd=str(work), artifacts=["out/*"])
    ran = run_aq("run", "--once", cwd=queue_root, env=SECRET_ENV)
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "named") == "review"
    assert (work / "out" / f"dump-{MY_API_KEY}.txt").exists()  # the job did name the file so
    assert events(queue_root, "named", "finished")[0]["artifacts"]  # and aq kept it
    hits = scan(queue_root, SECRET_ENV.values(), extra={"aq run": ran.stdout + ran.stderr})
    assert not leaks(hits), leaks(hits)


# --- b. token shapes that are in no env var ---------------------------------------------------

# The job builds each token at run time from its reversed text, so the manifest (committed by
# design: it is the person's own text) never holds a token, whole or in part.
TOKENS = {
    "github classic": ("ghp_", "aB3dE5gH7jK9mN1pQ3rS5tU7vW9xY1zA2bC4"),
    "github fine-grained": ("github_pat_", "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"),
    "openai": ("sk-", "proj-Tq8vW2xY4zA6bC8dE0fG2hJ4kL6mN8"),
    "anthropic": ("sk-", "ant-api03-Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0F"),
    "aws key id": ("AKIA", "IOSFODNN7EXAMPLZ"),
    "aws session id": ("ASIA", "Q3EGW7XYZ2ABCDEF"),
    "slack": ("xoxb-", "123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    "gitlab": ("glpat-", "Xy7Zk2Lm9Np4Qr6St8Uv"),
    "google": ("AIza", "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    "bearer": ("Authorization: Bearer ", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhcSJ9.c2lnbmF0dXJl"),
}
KEY_LINES = ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7",
             "xY9pQ2rT5uV8wZ1aB4cD7eF0gH3iJ6kL9mN2oP5qR8sT1uV4wX7y",
             "Zb3Cd6Ef9Gh2Ij5Kl8Mn1Op4Qr7St0Uv3Wx6Yz9Ab2Cd5Ef8Gh1Ij")


def token_value(name: str) -> str:
    """The secret part of a token: the whole token, or for `Bearer` the credential after it."""
    head, tail = TOKENS[name]
    return tail if name == "bearer" else head + tail


def built(text: str) -> str:
    """A shell expression that prints `text`, written in the script only reversed."""
    return f"$(printf %s '{text[::-1]}' | rev)"


def token_lines() -> str:
    """Shell lines printing every token shape and three private key blocks."""
    lines = [f'echo "{name}: {built(head + tail)}"' for name, (head, tail) in TOKENS.items()]
    lines.append('b="-----BEGIN"; e="-----END"')
    lines.append('echo "${b} PRIVATE KEY-----"')
    lines += [f'echo "{built(line)}"' for line in KEY_LINES]
    lines.append('echo "${e} PRIVATE KEY-----"; echo "after the key block"')
    lines.append('echo "${b} OPENSSH PRIVATE KEY-----"')
    lines.append(f'echo "{built(KEY_LINES[1])}"')
    lines.append('echo "${e} OPENSSH PRIVATE KEY-----"')
    # a service-account JSON holds its key on one line, with escaped newlines
    lines.append(f'echo "{{\\"private_key\\": \\"${{b}} RSA PRIVATE KEY-----\\\\n'
                 f'{built(KEY_LINES[2])}\\\\n${{e}} RSA PRIVATE KEY-----\\\\n\\", \\"id\\": 7}}"')
    return "\n".join(lines) + "\n"


TOKEN_SECRETS = [*(token_value(name) for name in TOKENS), *KEY_LINES]


def test_token_shaped_strings_printed_by_the_engine_are_never_committed(
        queue_root: Path, tmp_path: Path) -> None:
    """Every token shape scrub.py names, printed by a job (engine, verify, artifact), lands nowhere."""
    work = tmp_path / "work"
    work.mkdir()
    shapes = token_lines()
    body = f"{shapes}{{\n{shapes}}} > tokens.txt\n{{\n{shapes}}} >&2\nexit 0\n"
    write_job(queue_root, "shapes", body, cwd=str(work), artifacts=["tokens.txt"],
              verify=f"bash -c {shlex.quote(shapes)} && exit 1")
    manifest_text = (queue_root / "queue" / "inbox" / "shapes.md").read_text()
    assert not [s for s in TOKEN_SECRETS if s in manifest_text]
    ran = run_aq("run", "--once", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr

    assert stage_of(queue_root, "shapes") == "failed"
    finished = events(queue_root, "shapes", "finished")[0]
    assert finished["outcome"] == "verify_failed"
    printed_for_real = (work / "tokens.txt").read_text()
    assert all(secret in printed_for_real for secret in TOKEN_SECRETS)
    log = (queue_root / "queue" / ".logs" / "shapes" / "1.log").read_text()
    for name in TOKENS:
        shown = f"{name}: Authorization: {REDACTED}" if name == "bearer" else f"{name}: {REDACTED}"
        assert log.count(shown) >= 3, name  # stdout, stderr and verify
    assert log.count('{"private_key": "[REDACTED]\\n", "id": 7}') >= 3
    assert "after the key block" in log  # the block ended: what follows it is kept
    assert f"github classic: {REDACTED}" in finished["tail"]
    kept = (queue_root / "queue" / ".logs" / "shapes" / "1" / "tokens.txt").read_text()
    assert kept.count(REDACTED) >= len(TOKENS)

    hits = scan(queue_root, TOKEN_SECRETS, extra={"aq run": ran.stdout + ran.stderr,
                                                   **printed(queue_root, "shapes")})
    assert not leaks(hits), leaks(hits)


# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
B64_BEARER = "Qm9va2luZy5zZXJ2aWNl/cmVmcmVzaC10b2tlbg+eHl6d3Z1dHNycXBvbm1sa2pp=="


def test_a_bearer_token_with_base64_characters_is_scrubbed_whole(queue_root: Path) -> None:
    """A `Bearer` credential holding RFC 6750 characters (/ + =) reaches no committed file, whole or in part."""
    write_job(queue_root, "bearer", f'echo "Authorization: Bearer {built(B64_BEARER)}"\nexit 1\n')
    ran = run_aq("run", "--once", cwd=queue_root)
    assert ran.returncode == 0, ran.stderr
    assert stage_of(queue_root, "bearer") == "failed"
    # the credential's parts between its / and + are each long enough to be a secret on their own
    parts = [B64_BEARER, *B64_BEARER.replace("+", "/").split("/")]
    hits = scan(queue_root, parts, extra=printed(queue_root, "bearer"))
    assert not leaks(hits), leaks(hits)


# --- c. a fleet: the bare remote holds no secret ----------------------------------------------

def test_a_fleet_worker_pushes_no_secret_to_the_bare_remote(tmp_path: Path) -> None:
    """A clone runs a job printing env secrets; the bare remote's objects, refs and messages hold none."""
    work = tmp_path / "work"
    work.mkdir()
    body = ('echo "gh=$GITHUB_TOKEN key=$MY_API_KEY"\nprintf "%s\\n" "$DB_PASSWORD" >&2\n'
            'echo "aws=$AWS_SECRET_ACCESS_KEY low=$lowercase_api_token" | tee report.txt\nexit 4\n')
    verify_body = 'echo "gh=$GITHUB_TOKEN"; exit 1'
    with fleet_in(tmp_path / "fleet", clones=1) as fleet:
        fleet.drop_jobs({
            "remote-leak": (body, {"cwd": str(work), "artifacts": ["report.txt"]}),
            "remote-verify": (verify_body.replace("exit 1", "true"),
                              {"cwd": str(work), "verify": verify_body}),
        })
        clone = fleet.clones[0]
        ran = fleet.aq(clone, "run", "--drain", "--worker", "w1", "--poll", "0.1",
                       "--heartbeat", "0.2s", env=SECRET_ENV, timeout=120)
        assert ran.returncode == 0, ran.stderr

        assert fleet.stage("remote-leak") == fleet.stage("remote-verify") == "failed"
        finished = fleet.events("remote-leak", "finished")[0]
        assert finished["outcome"] == "engine_failed"
        assert "gh=[REDACTED] key=[REDACTED]" in finished["tail"]
        assert "gh=[REDACTED]" in fleet.events("remote-verify", "finished")[0]["tail"]
        remote_log = _git(fleet.bare, "show", "main:queue/.logs/remote-leak/1.log").decode()
        assert "aws=[REDACTED] low=[REDACTED]" in remote_log
        artifact = _git(fleet.bare, "show", "main:queue/.logs/remote-leak/1/report.txt").decode()
        assert artifact.strip() == "aws=[REDACTED] low=[REDACTED]"
        assert _git(fleet.bare, "for-each-ref", "refs/aq/workers").strip()  # heartbeats pushed

        remote_hits = scan(fleet.bare, SECRET_ENV.values())
        assert not leaks(remote_hits), "secret on the remote:\n" + leaks(remote_hits)
        fleet.pull_seed()
        for root in (clone, fleet.seed):
            hits = scan(root, SECRET_ENV.values(), extra={"aq run": ran.stdout + ran.stderr})
            assert not leaks(hits), f"secret in {root.name}:\n" + leaks(hits)


# --- d. secrets in an engine's own env in aq.yaml -------------------------------------------

ENGINE_KEY = "engine-env-api-key-5d2c8e71b9"
ENGINE_TOKEN = "engine-env-deploy-token-a4f09b36"


def test_secrets_in_an_engines_env_in_aq_yaml_are_scrubbed(queue_root: Path, tmp_path: Path) -> None:
    """Secret-named values in the shell engine's `env:` in aq.yaml, printed by job and verify, land nowhere."""
    config = queue_root / "aq.yaml"
    config.write_text(config.read_text() + "engines:\n  shell:\n    env:\n"
                      f"      SERVICE_API_KEY: {ENGINE_KEY}\n      DEPLOY_TOKEN: {ENGINE_TOKEN}\n")
    work = tmp_path / "work"
    work.mkdir()
    body = ('echo "key=$SERVICE_API_KEY"\necho "token=$DEPLOY_TOKEN" >&2\n'
            'echo "key=$SERVICE_API_KEY token=$DEPLOY_TOKEN" > env.txt\n')
    write_job(queue_root, "engine-env", body, cwd=str(work), artifacts=["env.txt"],
              verify='echo "verify key=$SERVICE_API_KEY token=$DEPLOY_TOKEN"; exit 1')
    ran = run_aq("run", "--once", cwd=queue_root)  # the secrets are in aq.yaml only, not in env
    assert ran.returncode == 0, ran.stderr

    assert stage_of(queue_root, "engine-env") == "failed"
    assert (work / "env.txt").read_text().strip() == f"key={ENGINE_KEY} token={ENGINE_TOKEN}"
    log = (queue_root / "queue" / ".logs" / "engine-env" / "1.log").read_text()
    assert "key=[REDACTED]" in log and "token=[REDACTED]" in log
    assert "verify key=[REDACTED] token=[REDACTED]" in log
    artifact = queue_root / "queue" / ".logs" / "engine-env" / "1" / "env.txt"
    assert artifact.read_text().strip() == "key=[REDACTED] token=[REDACTED]"
    tail = events(queue_root, "engine-env", "finished")[0]["tail"]
    assert "verify key=[REDACTED] token=[REDACTED]" in tail

    hits = scan(queue_root, [ENGINE_KEY, ENGINE_TOKEN], extra={"aq run": ran.stdout + ran.stderr,
                                                              **printed(queue_root, "engine-env")})
    # where the person wrote the secrets (never committed by aq: the scan of every git object
    # proves it), and aq's local, uncommitted parse cache of that same file
    sources = {"work tree file aq.yaml", "git dir file aq/config.pickle"}
    assert ("work tree file aq.yaml", ENGINE_KEY) in hits  # the scanner does see the source
    assert not leaks(hits, sources), leaks(hits, sources)
