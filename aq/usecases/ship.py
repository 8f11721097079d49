"""What a ship does to a job's repo (merge its branch, or open a pull request), the gate on
files changed outside its allowed-scope, and `aq diff`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aq.core.manifest import Manifest
from aq.core.profile import apply_profile
from aq.errors import MoveRefused, NotApplicable, PullRequestFailed
from aq.infra import gitops, proc
from aq.infra.repocache import default_branch, ensure_cache, resolve_repo
from aq.infra.shipping import diff_against_base, merge_into_base
from aq.store.queue import Queue
from aq.store.snapshot import Job


def scope_gate(job_id: str, outside: tuple[str, ...], allowed: bool) -> None:
    """Refuse to ship a job that changed files outside its allowed-scope, unless a person said so."""
    if outside and not allowed:
        raise MoveRefused(
            f"{job_id} changed {len(outside)} file(s) outside its allowed-scope "
            f"({', '.join(outside[:3])}{' …' if len(outside) > 3 else ''}): review them "
            "('aq show'), then 'aq ship --allow-out-of-scope' to ship anyway")


def workspace_of(queue: Queue, job: Job) -> tuple[str, str | None, Path, Manifest] | None:
    """(repo, base, workspaces root, manifest with its profile) of a job that works on a repo."""
    if job.manifest is None:
        return None
    profile = queue.profiles().found.get(job.manifest.profile) if job.manifest.profile else None
    manifest = apply_profile(job.manifest, profile)
    repo = queue.config.repo_for(manifest)
    if repo is None:
        return None

    return (resolve_repo(repo, queue.root), queue.config.base_for(manifest),
            queue.config.workspaces_root(queue.workspace_key), manifest)


def ship_work(queue: Queue, job: Job, who: str) -> dict[str, object]:
    """What `ship:` asks for a job with a repo, done before its stage moves: `merge` merges
    the job's branch (aq/<job>, or its winning sample's) into base and pushes (a conflict refuses the ship; the job stays), `pr` opens a
    pull request with gh. Returns what the moved event records."""
    found = workspace_of(queue, job)
    if found is None:
        return {}
    repo, base, root, manifest = found
    mode = queue.config.ship_for(manifest)
    if mode == "mark":
        return {}

    branch = job_branch(job)
    cache = ensure_cache(repo, root)
    base = base or default_branch(cache)
    if mode == "merge":
        merged = merge_into_base(repo, root, branch, base, f"aq: ship {job.id}: merge {branch}",
                                 gitops.identity_args(queue.root))
        return {"ship": "merge", "branch": branch, "base": base, "merged": merged}
    return {"ship": "pr", "branch": branch, "base": base,
            "pr": _open_pull_request(queue, repo, cache, job, branch, base)}


def _open_pull_request(queue: Queue, repo: str, cache: Path, job: Job, branch: str, base: str) -> str:
    """With gh when it is installed, else through the GitHub API (trackers.github, a token
    from the environment) when the repo is on GitHub; the pull request's page."""
    import shutil

    title = job.manifest.title if job.manifest else job.id
    body = f"Job {job.id}, run by aq."
    gh = shutil.which("gh")
    if gh is None:
        return _pull_request_by_api(queue, repo, job, branch, base, title, body)
    done = proc.run([gh, "pr", "create", "--head", branch, "--base", base, "--title", title,
                     "--body", body], cwd=cache, timeout=120)
    if done.returncode != 0:
        reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no answer"]
        raise PullRequestFailed(f"ship: gh could not open a pull request for {branch}: {reason[0]}")
    return done.stdout.strip().splitlines()[-1]


def _pull_request_by_api(queue: Queue, repo: str, job: Job, branch: str, base: str, title: str,
                         body: str) -> str:
    import os
    import re
    from urllib.parse import urlsplit

    from aq.trackers.github import GitHub  # lazily: an HTTP adapter, for a pull request without gh

    settings = queue.config.trackers.github
    api_host = urlsplit(settings.api_url).netloc
    hosts = {"github.com", api_host.removeprefix("api.")}
    found = re.match(r"^(?:https?://|ssh://git@|git@)([^/:]+)[:/]([^/]+)/([^/]+?)(?:\.git)?/?$",
                     repo)
    if found is None or found.group(1).rpartition("@")[2] not in hosts:
        raise PullRequestFailed(f"ship: pr needs the GitHub CLI (install gh and run 'gh auth login'), "
                                f"or a repo on GitHub for its API; set ship: merge or mark for {job.id}")
    if not os.environ.get(settings.token_env):
        raise PullRequestFailed(f"ship: pr needs gh (install it and run 'gh auth login') or a GitHub "
                                f"token in {settings.token_env}, to open a pull request for {job.id}")
    owner_repo = f"{found.group(2)}/{found.group(3)}"
    return GitHub(settings, os.environ).open_pull_request(owner_repo, branch, base, title, body)


@dataclass(frozen=True, slots=True)
class DiffResult:
    job_id: str
    branch: str
    base: str
    patch: str


def job_branch(job: Job) -> str:
    """The branch holding a job's work: the one its last attempt left (a job with samples
    adopts its winning sample's), else the one aq names after it."""
    return job.state.branch or f"aq/{job.id}"


def job_diff(queue: Queue, ref: str, *, branch: str | None = None) -> DiffResult:
    """The patch a job's branch (or `branch`) makes against its base, from the repo's remote."""
    job = queue.resolve(ref)
    found = workspace_of(queue, job)
    if found is None:
        raise NotApplicable(f"{job.id} works on no repo (no repo: in the job, its profile or "
                            "aq.yaml): there is no branch to compare")
    repo, base, root, _manifest = found

    cache = ensure_cache(repo, root)
    base = base or default_branch(cache)
    branch = branch or job_branch(job)
    return DiffResult(job.id, branch, base, diff_against_base(cache, branch, base, fetch=False))
