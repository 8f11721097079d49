"""Profiles (DESIGN §1, §2): parsing `profiles/<name>.md`, applying it to a job, and saying
where each resolved setting came from."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

import pytest

from aq.core.manifest import Manifest, parse_manifest, render_manifest
from aq.core.profile import (
    PROFILE_KEYS,
    Profile,
    apply_profile,
    choose_engine,
    parse_profile,
    profile_problem,
    setting_sources,
)
from aq.core.requirements import check_requirement
from aq.errors import ManifestError
from aq.infra.scope import check_globs

FULL = """\
---
name: builder
version: 3
capabilities: ["has:docker", "node>=20"]
default-verify: make check
engine-class: coding-agent
prefers-engine: [codex, claude]
allowed-scope: ["src/**", "tests/**"]
review-policy: auto
timeout: 45m
allow-yolo: true
---

You build things.

Carefully.
"""


def profile_text(name: str = "p", body: str = "You are careful.", **keys: Any) -> str:
    """A profile file with the given frontmatter keys (spelled with '-')."""
    import yaml

    front = {key.replace("_", "-"): value for key, value in keys.items()}
    head = yaml.safe_dump({"name": name, **front}, sort_keys=False)
    return f"---\n{head}---\n{body}\n"


def profile(name: str = "p", **keys: Any) -> Profile:
    return parse_profile(name, profile_text(name, **keys), f"profiles/{name}.md")


def job(job_id: str = "j", body: str = "do it", **keys: object) -> Manifest:
    """A manifest parsed from a file with these frontmatter keys, as `aq add` would write it."""
    fields = {key.replace("_", "-"): value for key, value in keys.items()}
    return parse_manifest(job_id, render_manifest(fields, body), f"queue/inbox/{job_id}.md")


# --- parse_profile -----------------------------------------------------------------------------


def test_every_key_is_parsed_and_normalized() -> None:
    """A profile setting every key gives each its typed value, and the body is the persona."""
    parsed = parse_profile("builder", FULL, "profiles/builder.md")
    assert parsed == Profile(
        name="builder", persona="You build things.\n\nCarefully.", version="3",
        capabilities=("has:docker", "node>=20"), verify="make check", engine=None,
        engine_class="coding-agent", prefers_engine=("codex", "claude"),
        allowed_scope=("src/**", "tests/**"), review_policy="auto", timeout=2700.0,
        allow_yolo=True, content_hash=hashlib.sha256(FULL.encode()).hexdigest()[:16])


def test_the_known_keys_are_the_documented_ones() -> None:
    """The profile keys are exactly those the README lists."""
    assert set(PROFILE_KEYS) == {"name", "version", "capabilities", "default-verify", "engine",
                                 "engine-class", "prefers-engine", "allowed-scope", "review-policy",
                                 "timeout", "allow-yolo", "repo", "base", "ship", "review"}


def test_a_profile_with_no_frontmatter_is_all_persona_with_defaults() -> None:
    """A file with only a body is a profile named after its file, version 1, setting nothing."""
    parsed = parse_profile("plain", "You are plain.\n", "profiles/plain.md")
    assert (parsed.name, parsed.version, parsed.persona) == ("plain", "1", "You are plain.")
    assert (parsed.verify, parsed.engine, parsed.engine_class, parsed.allowed_scope,
            parsed.review_policy, parsed.timeout, parsed.allow_yolo) == (None,) * 6 + (False,)
    assert parsed.capabilities == parsed.prefers_engine == ()


def test_engine_is_a_concrete_engine_name() -> None:
    """`engine:` names the concrete engine the profile's jobs run by default."""
    assert profile(engine="shell").engine == "shell"


def test_an_empty_default_verify_means_no_verify() -> None:
    """`default-verify: ""` (or only spaces) sets no verify, rather than an empty command."""
    assert profile(default_verify="").verify is None
    assert profile(default_verify="   ").verify is None


def test_a_key_left_empty_is_unset() -> None:
    """A key with nothing after it (`timeout:`) is as if it were absent."""
    text = "---\nname: p\ntimeout:\nengine:\n---\nYou are careful.\n"
    parsed = parse_profile("p", text, "profiles/p.md")
    assert (parsed.timeout, parsed.engine) == (None, None)


def test_the_persona_is_the_body_stripped() -> None:
    """The persona is the whole body after the frontmatter, with outer blank lines removed."""
    body = "\n\n# Role\n\nYou are a reviewer.\n\n- Be precise.\n\n\n"
    assert profile(body=body).persona == "# Role\n\nYou are a reviewer.\n\n- Be precise."


def test_the_content_hash_is_of_the_whole_file() -> None:
    """The hash the claim records is sha256 of the file's text, first 16 hex digits, and changes
    with any edit, the persona included."""
    text = profile_text(body="You are careful.")
    edited = profile_text(body="You are very careful.")
    assert parse_profile("p", text, "x").content_hash == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert parse_profile("p", edited, "x").content_hash != parse_profile("p", text, "x").content_hash


@pytest.mark.parametrize("value, expected", [(2, "2"), ("2.1", "2.1"), ("v7", "v7"), (2.5, "2.5")])
def test_version_is_kept_as_text(value: object, expected: str) -> None:
    """A version written as a number or as text is recorded as text."""
    assert profile(version=value).version == expected


def test_a_version_like_1_10_is_kept_as_written() -> None:
    """`version: 1.10` is recorded as 1.10, not as the number 1.1."""
    text = "---\nname: p\nversion: 1.10\n---\nYou are careful.\n"
    assert parse_profile("p", text, "profiles/p.md").version == "1.10"


@pytest.mark.parametrize("key, suggestion", [
    ("default_verify", "default-verify"),
    ("allowed_scope", "allowed-scope"),
    ("prefer-engine", "prefers-engine"),
    ("allow-yollo", "allow-yolo"),
    ("review_policy", "review-policy"),
])
def test_an_unknown_key_is_named_with_the_nearest_known_one(key: str, suggestion: str) -> None:
    """An unknown key is refused, naming the file and the key and suggesting the nearest known key."""
    with pytest.raises(ManifestError) as caught:
        parse_profile("p", f"---\n{key}: x\n---\nYou are careful.\n", "profiles/p.md")
    message = str(caught.value)
    assert message.startswith(f"profiles/p.md: key '{key}': unknown profile key")
    assert f"(did you mean '{suggestion}'?)" in message
    assert "known keys: name, version" in message


def test_a_jobs_verify_key_in_a_profile_points_to_default_verify() -> None:
    """`verify:` in a profile suggests `default-verify`, the profile's key for it."""
    with pytest.raises(ManifestError) as caught:
        parse_profile("p", "---\nverify: make test\n---\nYou are careful.\n", "profiles/p.md")
    assert "(did you mean 'default-verify'?)" in str(caught.value)


@pytest.mark.parametrize("key, value, says", [
    ("timeout", "soon", "'soon'"),
    ("timeout", "0s", "not a positive duration"),
    ("review-policy", "sometimes", "expected auto or manual"),
    ("allow-yolo", "yes", "is not true or false"),
    ("capabilities", {"gpu": 1}, "is not a list"),
    ("prefers-engine", 3, "is not a list"),
    ("engine", "my engine", "is not a name"),
    ("engine-class", ["a"], "is not text"),
    ("version", [1], "is not a version"),
    ("version", True, "is not a version"),
    ("default-verify", ["make"], "is not text"),
])
def test_a_bad_value_names_the_file_the_key_and_what_was_expected(key: str, value: object,
                                                                  says: str) -> None:
    """A malformed value is one error naming the file, the key and what is wrong with it."""
    with pytest.raises(ManifestError) as caught:
        fields: dict[str, Any] = {key.replace("-", "_"): value}
        parse_profile("p", profile_text("p", **fields), "profiles/p.md")
    assert (caught.value.source, caught.value.key) == ("profiles/p.md", key)
    assert str(caught.value).startswith(f"profiles/p.md: key '{key}': ")
    assert says in str(caught.value)


def test_a_name_that_differs_from_the_file_name_is_refused() -> None:
    """`name: qa` in developer.md is an error naming both and saying how to fix it."""
    with pytest.raises(ManifestError) as caught:
        parse_profile("developer", profile_text("qa"), "profiles/developer.md")
    assert caught.value.key == "name"
    assert "names itself 'qa' but the file is developer.md" in str(caught.value)


def test_a_frontmatter_that_is_not_a_mapping_is_refused() -> None:
    """A frontmatter list is an error naming the file."""
    with pytest.raises(ManifestError, match=r"^profiles/p\.md: frontmatter is a list"):
        parse_profile("p", "---\n- a\n- b\n---\nYou.\n", "profiles/p.md")


# --- apply_profile -----------------------------------------------------------------------------


def test_without_a_profile_the_manifest_is_unchanged() -> None:
    """apply_profile(m, None) is m itself."""
    manifest = job(verify="true")
    assert apply_profile(manifest, None) is manifest


def test_unset_keys_come_from_the_profile() -> None:
    """verify, allowed-scope, review-policy, timeout and the engine class the job leaves unset are
    the profile's."""
    applied = apply_profile(job(profile="builder"), parse_profile("builder", FULL, "x"))
    assert (applied.verify, applied.allowed_scope, applied.review_policy, applied.timeout) == (
        "make check", ("src/**", "tests/**"), "auto", 2700.0)
    assert (applied.engine, applied.engine_class) == (None, "coding-agent")
    assert applied.capabilities == ("has:docker", "node>=20")


def test_keys_the_job_sets_win_over_the_profile() -> None:
    """Every key the job sets itself keeps the job's value."""
    own = job(profile="builder", verify="pytest -q", allowed_scope=["docs/**"],
              review_policy="manual", timeout="5m")
    applied = apply_profile(own, parse_profile("builder", FULL, "x"))
    assert (applied.verify, applied.allowed_scope, applied.review_policy, applied.timeout) == (
        "pytest -q", ("docs/**",), "manual", 300.0)


def test_capabilities_are_the_union_without_duplicates_job_first() -> None:
    """The job's capabilities and then the profile's, each once."""
    own = job(capabilities=["gpu", "has:docker"])
    applied = apply_profile(own, profile(capabilities=["has:docker", "has:git", "gpu", "node>=20"]))
    assert applied.capabilities == ("gpu", "has:docker", "has:git", "node>=20")


def test_a_profile_without_capabilities_leaves_the_jobs_alone() -> None:
    """The job's own capabilities stay as they are when the profile lists none."""
    assert apply_profile(job(capabilities=["gpu"]), profile()).capabilities == ("gpu",)


def test_the_jobs_engine_beats_the_profiles_engine_class() -> None:
    """A job naming a concrete engine runs it; the profile's engine class is not applied."""
    applied = apply_profile(job(engine="shell"), profile(engine_class="coding-agent"))
    assert (applied.engine, applied.engine_class) == ("shell", None)


def test_the_jobs_engine_class_beats_the_profiles_engine() -> None:
    """A job naming an engine class gets an engine of that class, not the profile's engine."""
    applied = apply_profile(job(engine_class="reviewers"), profile(engine="codex"))
    assert (applied.engine, applied.engine_class) == (None, "reviewers")


def test_the_jobs_engine_beats_the_profiles_engine() -> None:
    """Engine against engine: the job's."""
    applied = apply_profile(job(engine="shell"), profile(engine="codex"))
    assert (applied.engine, applied.engine_class) == ("shell", None)


def test_the_profiles_engine_applies_when_the_job_names_none() -> None:
    """A job that names neither engine nor engine class takes the profile's engine."""
    applied = apply_profile(job(), profile(engine="codex"))
    assert (applied.engine, applied.engine_class) == ("codex", None)


def test_an_empty_default_verify_leaves_the_job_without_verify() -> None:
    """A profile whose default-verify is "" gives its jobs no verify."""
    assert apply_profile(job(), profile(default_verify="")).verify is None


def test_the_body_and_other_keys_are_untouched() -> None:
    """Applying a profile changes nothing the profile does not set: body, priority, lock, deps."""
    own = job(body="Fix it.", priority="high", lock="db", deps=["a"])
    applied = apply_profile(own, parse_profile("builder", FULL, "x"))
    assert (applied.body, applied.priority, applied.lock, applied.deps) == ("Fix it.", "high", "db", ("a",))


# --- setting_sources ---------------------------------------------------------------------------


def test_sources_name_the_job_the_profile_or_the_queue_default() -> None:
    """Each key says where its value came from."""
    own = job(profile="builder", verify="pytest -q", capabilities=["gpu"])
    assert setting_sources(own, parse_profile("builder", FULL, "x")) == {
        "verify": "job",
        "allowed-scope": "profile builder",
        "review-policy": "profile builder",
        "timeout": "profile builder",
        "engine": "queue default",  # the profile names a class, not an engine
        "engine-class": "profile builder",
        "capabilities": "job + profile",
        "repo": "queue default", "base": "queue default", "ship": "queue default",
        "review": "queue default",
    }


def test_without_a_profile_unset_keys_are_queue_defaults() -> None:
    """With no profile, a key is the job's if it sets it, else the queue default."""
    assert setting_sources(job(timeout="5m", capabilities=["gpu"]), None) == {
        "verify": "queue default", "allowed-scope": "queue default",
        "review-policy": "queue default", "timeout": "job", "engine": "queue default",
        "engine-class": "queue default", "capabilities": "job",
        "repo": "queue default", "base": "queue default", "ship": "queue default",
        "review": "queue default",
    }


def test_capabilities_only_from_the_profile_name_it() -> None:
    """A job without capabilities whose profile has some: the source is that profile."""
    assert setting_sources(job(), profile("qa", capabilities=["has:git"]))["capabilities"] == "profile qa"


def test_a_profile_that_leaves_a_key_unset_is_not_its_source() -> None:
    """A key the profile does not set (or sets to an empty default-verify) comes from the queue."""
    sources = setting_sources(job(), profile("qa", default_verify=""))
    assert sources["verify"] == sources["timeout"] == "queue default"


def test_a_jobs_engine_class_makes_the_profiles_engine_not_a_source() -> None:
    """When the job names an engine class, the profile's engine is not where the engine came from."""
    sources = setting_sources(job(engine_class="reviewers"), profile("qa", engine="codex"))
    assert (sources["engine"], sources["engine-class"]) == ("queue default", "job")


def test_the_profiles_engine_is_the_source_when_the_job_names_none() -> None:
    """A job naming no engine gets its engine from the profile, and says so."""
    assert setting_sources(job(), profile("qa", engine="codex"))["engine"] == "profile qa"


# --- profile_problem ---------------------------------------------------------------------------


def test_a_job_without_a_profile_has_no_profile_problem() -> None:
    """No profile named: nothing to check."""
    assert profile_problem(job(), {}) is None


def test_a_missing_profile_is_named_with_the_file_to_add() -> None:
    """A job naming a profile that does not exist: the problem names it and its file."""
    problem = profile_problem(job(profile="ghost"), {"qa": profile("qa")})
    assert problem == ("profile 'ghost' does not exist: add profiles/ghost.md or fix the job's "
                       "'profile:'")


def test_yolo_is_refused_unless_the_profile_allows_it() -> None:
    """yolo with a profile lacking allow-yolo is a problem; with allow-yolo: true it is not."""
    strict, lax = profile("strict"), profile("lax", allow_yolo=True)
    problem = profile_problem(job(profile="strict", yolo=True), {"strict": strict})
    assert problem is not None and "yolo is not allowed by profile 'strict'" in problem
    assert profile_problem(job(profile="lax", yolo=True), {"lax": lax}) is None
    assert profile_problem(job(profile="strict"), {"strict": strict}) is None


# --- choose_engine -----------------------------------------------------------------------------


def test_choose_engine_takes_the_first_preferred_engine_the_worker_has() -> None:
    """The order of `preferred` decides, not the order of the worker's tags."""
    have = frozenset({"engine:aider", "engine:codex", "os:linux"})
    assert choose_engine("coding-agent", ["claude", "codex", "aider"], have) == "codex"


def test_choose_engine_without_a_match_is_none() -> None:
    """A worker with none of the engines gets None."""
    assert choose_engine("coding-agent", ["claude", "codex"], frozenset({"engine:shell"})) is None
    assert choose_engine("coding-agent", [], frozenset({"engine:shell"})) is None


def test_choose_engine_with_unknown_capabilities_is_the_first() -> None:
    """Not knowing what the worker has (None), the first preferred engine is chosen."""
    assert choose_engine("coding-agent", ["claude", "codex"], None) == "claude"
    assert choose_engine("coding-agent", [], None) is None


def test_choose_engine_needs_the_engine_tag_not_the_bare_name() -> None:
    """A worker tagged `codex` (not `engine:codex`) does not have the codex engine."""
    assert choose_engine("coding-agent", ["codex"], frozenset({"codex", "has:codex"})) is None


# --- the starter catalog -----------------------------------------------------------------------

CATALOG = sorted((entry for entry in files("aq.catalog").joinpath("profiles").iterdir()
                  if entry.name.endswith(".md")), key=lambda entry: entry.name)


def test_the_catalog_holds_the_documented_roles() -> None:
    """The starter catalog has the eight roles the README lists."""
    assert [entry.name[:-3] for entry in CATALOG] == [
        "backend-engineer", "developer", "docs-writer", "frontend-engineer", "qa", "reviewer",
        "ui-designer", "ux-designer"]


@pytest.mark.parametrize("entry", CATALOG, ids=lambda entry: entry.name[:-3])
def test_every_catalog_profile_parses_with_a_real_persona(entry: Traversable) -> None:
    """Each starter profile parses under its own name, has a persona of several paragraphs, and
    its capabilities and scope globs pass lint."""
    name = entry.name[:-3]
    parsed = parse_profile(name, entry.read_text(encoding="utf-8"), f"profiles/{name}.md")
    assert parsed.name == name
    assert len(parsed.persona) > 800
    assert parsed.persona.count("\n\n") >= 3
    assert parsed.persona.startswith("You are ")
    assert not parsed.allow_yolo
    assert [req for req in parsed.capabilities if check_requirement(req)] == []
    assert parsed.allowed_scope is None or check_globs(parsed.allowed_scope) is None
    assert parsed.engine or parsed.engine_class
