"""The manifest: every DESIGN §2 key parsed and normalized, every bad value named, and round-trips."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.manifest import (
    Budget,
    Manifest,
    RetryPolicy,
    default_title,
    parse_manifest,
    render_manifest,
    split_frontmatter,
)
from aq.errors import ManifestError

SOURCE = "queue/inbox/fix-login-3f2a.md"
JOB = "fix-login-3f2a"


def parse(frontmatter: str, body: str = "Fix the login page.", job_id: str = JOB) -> Manifest:
    return parse_manifest(job_id, f"---\n{frontmatter}\n---\n{body}\n", SOURCE)


def error_of(frontmatter: str, body: str = "Fix the login page.", job_id: str = JOB) -> str:
    with pytest.raises(ManifestError) as caught:
        parse(frontmatter, body, job_id)
    return str(caught.value)


# --- each key of DESIGN §2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frontmatter", "field", "expected"),
    [
        ("title: Fix the login page", "title", "Fix the login page"),
        ("title: 2026", "title", "2026"),
        ("engine: claude", "engine", "claude"),
        ("cwd: ~/src/app", "cwd", "~/src/app"),
        ("yolo: true", "yolo", True),
        ("yolo: false", "yolo", False),
        ("lock: main-db", "lock", "main-db"),
        ("timeout: 45m", "timeout", 2700.0),
        ("timeout: 2h", "timeout", 7200.0),
        ("timeout: 90s", "timeout", 90.0),
        ("timeout: 1h30m", "timeout", 5400.0),
        ("timeout: 600", "timeout", 600.0),
        ("verify: pytest -q tests/auth", "verify", "pytest -q tests/auth"),
        ("verify: |\n  make lint\n  make test", "verify", "make lint\nmake test"),
        ("profile: reviewer", "profile", "reviewer"),
        ("engine-class: frontier", "engine_class", "frontier"),
        (
            "capabilities: [os:linux, has:docker, engine:claude, node>=20, gpu]",
            "capabilities",
            ("os:linux", "has:docker", "engine:claude", "node>=20", "gpu"),
        ),
        ("capabilities: os:linux, gpu", "capabilities", ("os:linux", "gpu")),
        ("prefers: [factory:box-1, engine:codex]", "prefers", ("factory:box-1", "engine:codex")),
        ("priority: critical", "priority", "critical"),
        ("priority: High", "priority", "high"),
        ("priority: low", "priority", "low"),
        ("budget: {wall: 4h, usd: 5, tokens: 2M}", "budget", Budget(wall=14400.0, usd=5.0, tokens=2_000_000)),
        ("budget: {usd: $2.50}", "budget", Budget(usd=2.5)),
        ("deps: [setup-db, add-user]", "deps", ("setup-db", "add-user")),
        ("deps: setup-db, add-user", "deps", ("setup-db", "add-user")),
        ("deps: [setup-db, add-user, setup-db]", "deps", ("setup-db", "add-user")),
        ("idempotency-key: nightly-2026-01-01", "idempotency_key", "nightly-2026-01-01"),
        (
            "retry: {max: 2, backoff: 5m, on: [timeout, verify_failed, engine_failed]}",
            "retry",
            RetryPolicy(max=2, backoff=300.0, on=("timeout", "verify_failed", "engine_failed")),
        ),
        ("retry: 3", "retry", RetryPolicy(max=3)),
        ("retry: {backoff: 30s}", "retry", RetryPolicy(backoff=30.0)),
        ("review-policy: auto", "review_policy", "auto"),
        ("review-policy: Manual", "review_policy", "manual"),
        ("artifacts: [dist/*.whl, report.html]", "artifacts", ("dist/*.whl", "report.html")),
        ("tracker-item: 'github:owner/repo#12'", "tracker_item", "github:owner/repo#12"),
        ("tracker-item: redmine:42", "tracker_item", "redmine:42"),
    ],
)
def test_each_key_is_parsed_and_normalized(frontmatter: str, field: str, expected: object) -> None:
    """Each DESIGN §2 key, written the way a person writes it, lands normalized on its field."""
    assert getattr(parse(frontmatter), field) == expected


def test_defaults_when_no_frontmatter() -> None:
    """A file that is only a body gets every default of DESIGN §2."""
    manifest = parse_manifest(JOB, "# Fix login\n\nThe form 500s.\n", SOURCE)
    assert manifest == Manifest(id=JOB, title="Fix login", body="# Fix login\n\nThe form 500s.")
    assert (manifest.priority, manifest.yolo, manifest.deps, manifest.retry) == ("medium", False, (), None)
    assert manifest.keys == ()


def test_keys_records_the_keys_the_file_set_in_file_order() -> None:
    """`keys` lists the frontmatter keys that were set, in file order, skipping empty ones."""
    manifest = parse("priority: high\nlock:\nengine: shell\ndeps: [a]")
    assert manifest.keys == ("priority", "engine", "deps")
    assert manifest.lock is None


def test_retry_on_read_by_yaml_as_true_is_still_on() -> None:
    """`on:` inside retry, which YAML 1.1 reads as the boolean true, is still the retry.on list."""
    flow = parse("retry: {max: 2, on: [timeout]}")
    block = parse("retry:\n  max: 1\n  on: timeout, engine_missing")
    assert flow.retry == RetryPolicy(max=2, on=("timeout",))
    assert block.retry == RetryPolicy(max=1, on=("timeout", "engine_missing"))


def test_phase_zero_file_keeps_working() -> None:
    """A Phase-0 file with only engine/cwd/yolo/lock/timeout/verify parses to those values."""
    manifest = parse(
        "engine: claude\ncwd: ~/src/app\nyolo: true\nlock: repo\ntimeout: 45m\nverify: make test",
        body="Make the tests pass.",
    )
    assert (manifest.engine, manifest.cwd, manifest.yolo, manifest.lock, manifest.timeout, manifest.verify) == (
        "claude", "~/src/app", True, "repo", 2700.0, "make test",
    )
    assert manifest.title == "Make the tests pass."
    assert manifest.keys == ("engine", "cwd", "yolo", "lock", "timeout", "verify")


@pytest.mark.parametrize(
    ("body", "title"),
    [
        ("# Fix login\n\nThe form 500s.", "Fix login"),
        ("Some intro line\n\n## Later heading", "Later heading"),
        ("\n\n   first real line  \nsecond", "first real line"),
        ("plain line\nanother", "plain line"),
        ("#\nbody", "untitled"),
        ("x" * 300, "x" * 200),
    ],
)
def test_title_defaults_to_first_heading_else_first_line(body: str, title: str) -> None:
    """Without `title:`, the title is the first heading of the body, else its first non-empty line."""
    assert parse_manifest(JOB, body, SOURCE).title == title
    assert default_title(body) == title


def test_explicit_title_wins_over_heading() -> None:
    """`title:` in the frontmatter beats the body's heading."""
    assert parse("title: Short name", body="# A heading\ntext").title == "Short name"


def test_crlf_bom_and_dot_fence_are_read() -> None:
    """A file saved with CRLF line ends, a byte-order mark, or a `...` closing fence still parses."""
    crlf = parse_manifest(JOB, "---\r\npriority: high\r\n---\r\nDo it.\r\n", SOURCE)
    bom = parse_manifest(JOB, "\ufeff---\npriority: low\n...\nDo it.\n", SOURCE)
    assert (crlf.priority, crlf.body) == ("high", "Do it.")
    assert (bom.priority, bom.body) == ("low", "Do it.")


def test_content_hash_follows_the_text() -> None:
    """Two manifests of the same text share a content hash; a changed text changes it."""
    first = parse_manifest(JOB, "Do it.\n", SOURCE)
    again = parse_manifest(JOB, "Do it.\n", SOURCE)
    other = parse_manifest(JOB, "Do it now.\n", SOURCE)
    assert first.content_hash == again.content_hash
    assert first.content_hash != other.content_hash
    assert len(first.content_hash) == 16


# --- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frontmatter", "key", "value", "expected"),
    [
        ("timeout: 45x", "timeout", "'45x'", "a duration such as 90s, 45m, 2h or 1h30m"),
        ("timeout: 0", "timeout", "0", "positive duration"),
        ("timeout: soon", "timeout", "'soon'", "a duration such as"),
        ("priority: urgent", "priority", "'urgent'", "one of critical, high, medium, low"),
        ("yolo: maybe", "yolo", "'maybe'", "true or false"),
        ("deps: [Setup/DB]", "deps", "'Setup/DB'", "not a job id"),
        ("deps: [../x]", "deps", "'../x'", "not a job id"),
        ("budget: 5", "budget", "5", "a budget such as {wall: 4h, usd: 5, tokens: 2M}"),
        ("budget: {wall: soon}", "budget", "'soon'", "a duration such as"),
        ("budget: {tokens: lots}", "budget", "'lots'", "a count or size such as"),
        ("budget: {usd: free}", "budget", "'free'", "an amount of dollars"),
        ("budget: {time: 4h}", "budget", "'budget.time'", "known: wall, usd, tokens"),
        ("retry: {max: -1}", "retry", "-1", "a whole number of 0 or more"),
        ("retry: {max: two}", "retry", "'two'", "a whole number of 0 or more"),
        ("retry: {backoff: later}", "retry", "'later'", "a duration such as"),
        ("retry: {on: [timeout, crash]}", "retry", "'crash'",
         "timeout, verify_failed, engine_failed, engine_missing"),
        ("retry: [timeout]", "retry", "['timeout']", "a retry policy such as"),
        ("review-policy: sometimes", "review-policy", "'sometimes'", "auto or manual"),
        ("artifacts: [/etc/passwd]", "artifacts", "'/etc/passwd'", "globs under cwd"),
        ("artifacts: [../secrets/*]", "artifacts", "'../secrets/*'", "globs under cwd"),
        ("engine: my engine", "engine", "'my engine'", "is not a name"),
        ("profile: [a, b]", "profile", "['a', 'b']", "is not text"),
        ("capabilities: 5", "capabilities", "5", "is not a list"),
        ("title: ''", "title", "", "is empty"),  # an empty value is named by saying so
        ("lock: {a: 1}", "lock", "{'a': 1}", "is not text"),
        ('verify: "test \\0"', "verify", "holds a NUL byte", "holds a NUL byte"),
        ("budget: {tokens: .inf}", "budget", "inf", "too large"),
        ("timeout: .nan", "timeout", "nan", "a duration such as"),
    ],
)
def test_bad_value_names_file_key_value_and_expectation(
    frontmatter: str, key: str, value: str, expected: str
) -> None:
    """A bad value is a ManifestError naming the file, the key, the value and what was expected."""
    message = error_of(frontmatter)
    assert message.startswith(f"{SOURCE}: key '{key}': ")
    assert value in message
    assert expected in message


def test_bad_priority_suggests_the_nearest() -> None:
    """A misspelt priority suggests the priority it is closest to."""
    assert "did you mean 'high'?" in error_of("priority: hihg")


def test_unknown_key_names_it_and_suggests_the_nearest() -> None:
    """An unknown key is an error naming the key and the nearest known key."""
    message = error_of("prioritty: high")
    assert message.startswith(f"{SOURCE}: key 'prioritty': unknown key")
    assert "did you mean 'priority'?" in message


def test_unknown_key_far_from_all_lists_the_known_keys() -> None:
    """An unknown key close to none gets no guess, only the list of known keys."""
    message = error_of("xyzzy: 1")
    assert "key 'xyzzy'" in message
    assert "did you mean" not in message
    assert "known keys: title, engine, cwd, yolo, lock, timeout, verify" in message


def test_unknown_retry_key_suggests_the_nearest() -> None:
    """A misspelt key inside retry names `retry.<key>` and suggests the nearest."""
    message = error_of("retry: {mx: 2}")
    assert "key 'retry'" in message
    assert "'retry.mx' (did you mean 'max'?)" in message


@pytest.mark.parametrize("key", ["yes", "no"])
def test_unknown_key_yaml_reads_as_boolean_is_named_as_written(key: str) -> None:
    """An unknown key that YAML 1.1 reads as a boolean (`yes:`, `no:`) is named as written."""
    assert f"key '{key}'" in error_of(f"{key}: 3")


def test_a_date_is_read_as_written() -> None:
    """YAML 1.1 reads 2026-01-01 as a date: a title became '2026-01-01' by luck of str(), a
    timestamp lock lost its form, and a refusal quoted datetime.date(2026, 1, 1)."""
    assert parse("lock: 2026-01-01T10:00:00Z").lock == "2026-01-01T10:00:00Z"
    assert error_of("timeout: 2026-01-01") == (
        f"{SOURCE}: key 'timeout': '2026-01-01' is not a duration such as 90s, 45m, 2h or 1h30m")
    assert "datetime" not in error_of("priority: 2026-01-01")


@pytest.mark.parametrize(("written", "key"), [
    ("10:30", "lock"), ("010", "lock"), ("1_000", "lock"), ("0x1f", "engine")])
def test_a_yaml_1_1_number_is_read_as_written(written: str, key: str) -> None:
    """YAML 1.1 reads 10:30 as 630 (base 60), 010 as 8, 1_000 as 1000 and 0x1f as 31: a lock or
    an engine named so became another name."""
    assert getattr(parse(f"{key}: {written}"), key) == written


def test_a_base_60_time_is_no_duration() -> None:
    """`timeout: 1:30` was 90 seconds by YAML 1.1's base 60; it now asks for a unit."""
    assert error_of("timeout: 1:30") == (
        f"{SOURCE}: key 'timeout': '1:30' is not a duration such as 90s, 45m, 2h or 1h30m")


def test_dep_on_itself_is_refused() -> None:
    """A job that lists its own id in deps is refused, naming the key and the id."""
    message = error_of(f"deps: [setup, {JOB}]")
    assert message.startswith(f"{SOURCE}: key 'deps': ")
    assert repr(JOB) in message
    assert "depends on itself" in message


def test_bad_yaml_names_the_file_and_line() -> None:
    """Frontmatter YAML cannot parse: the error names the file, the file line and the problem."""
    message = error_of("title: ok\npriority: [high")
    assert message.startswith(f"{SOURCE}: frontmatter is not valid YAML at line ")
    assert "did not find expected ',' or ']'" in message


def test_bad_yaml_line_is_the_file_line() -> None:
    """The YAML error's line number counts from the top of the file, fence included."""
    assert "at line 3:" in error_of("title: ok\nlock: a: b")


@pytest.mark.parametrize(
    ("frontmatter", "kind"),
    [("- a\n- b", "a list"), ("just words", "text"), ("42", "a number"), ("true", "true or false"),
     ("2026-01-01", "text")],
)
def test_frontmatter_that_is_not_a_mapping_is_refused(frontmatter: str, kind: str) -> None:
    """Frontmatter that is a list or a scalar is an error saying, in a person's words, what it
    is and that it is not a mapping of keys."""
    message = error_of(frontmatter)
    assert message == f"{SOURCE}: frontmatter is {kind}, not a mapping of keys such as 'priority: high'"


def test_unclosed_fence_is_refused() -> None:
    """Frontmatter opened with `---` and never closed is an error telling how to close it."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(JOB, "---\npriority: high\nDo it.\n", SOURCE)
    assert str(caught.value) == (
        f"{SOURCE}: the frontmatter opened with '---' is never closed: end it with a line '---'"
    )


@pytest.mark.parametrize("text", ["", "   \n\n", "---\npriority: high\n---\n", "---\ntitle: x\n---\n  \n\t\n"])
def test_empty_body_is_refused(text: str) -> None:
    """A manifest with nothing for the engine to do is an error naming the file."""
    with pytest.raises(ManifestError) as caught:
        parse_manifest(JOB, text, SOURCE)
    assert str(caught.value).startswith(f"{SOURCE}: the body is empty")


def test_empty_frontmatter_is_all_defaults() -> None:
    """An empty `---`/`---` block is a manifest with every default."""
    assert parse_manifest(JOB, "---\n---\nDo it.\n", SOURCE) == Manifest(id=JOB, title="Do it.", body="Do it.")


def test_a_longer_rule_on_the_first_line_is_body() -> None:
    """A file whose first line is a `----` rule (not a `---` fence) is all body."""
    metadata, body = split_frontmatter("----\nDo it.\n", SOURCE)
    assert (metadata, body) == ({}, "----\nDo it.")


# --- render_manifest --------------------------------------------------------------------------

ONE_LINE = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cf", "Zl", "Zp", "Cn")),
    min_size=1, max_size=30,
).filter(lambda text: text.strip() != "")
NAME = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,15}", fullmatch=True)
JOB_ID = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,15}", fullmatch=True)
BODY = st.text(
    alphabet=st.sampled_from(string.ascii_letters + string.digits + string.punctuation + " \n\t#-"),
    min_size=1, max_size=200,
).filter(lambda text: text.strip() != "" and not text.startswith("---"))

# (what a person writes, what the manifest holds)
DURATION = st.one_of(
    st.integers(1, 10**6).map(lambda n: (n, float(n))),
    st.integers(1, 600).map(lambda n: (f"{n}m", n * 60.0)),
    st.integers(1, 48).map(lambda n: (f"{n}h", n * 3600.0)),
    st.tuples(st.integers(1, 9), st.integers(1, 59)).map(lambda hm: (f"{hm[0]}h{hm[1]}m", hm[0] * 3600.0 + hm[1] * 60)),
)
PRIORITY = st.sampled_from(["critical", "high", "medium", "low"]).flatmap(
    lambda p: st.sampled_from([(p, p), (p.upper(), p), (p.title(), p)]))
OUTCOMES = st.lists(st.sampled_from(["timeout", "verify_failed", "engine_failed", "engine_missing"]),
                    min_size=1, max_size=4)


@st.composite
def retry_fields(draw: st.DrawFn) -> tuple[dict[str, object], RetryPolicy]:
    written: dict[str, object] = {}
    policy: dict[str, object] = {}
    if draw(st.booleans()):
        written["max"] = policy["max"] = draw(st.integers(0, 10))
    if draw(st.booleans()):
        written["backoff"], policy["backoff"] = draw(DURATION)
    if draw(st.booleans()):
        on = draw(OUTCOMES)
        written["on"], policy["on"] = on, tuple(on)
    return written, RetryPolicy(**policy)  # type: ignore[arg-type]


@st.composite
def budget_fields(draw: st.DrawFn) -> tuple[dict[str, object], Budget]:
    written: dict[str, object] = {}
    budget: dict[str, object] = {}
    if draw(st.booleans()):
        written["wall"], budget["wall"] = draw(DURATION)
    if draw(st.booleans()):
        written["usd"] = draw(st.integers(0, 1000))
        budget["usd"] = float(written["usd"])  # type: ignore[arg-type]
    if draw(st.booleans()):
        millions = draw(st.integers(1, 50))
        written["tokens"], budget["tokens"] = f"{millions}M", millions * 1_000_000
    return written, Budget(**budget)  # type: ignore[arg-type]


def _strings(items: st.SearchStrategy[str]) -> st.SearchStrategy[tuple[list[str], tuple[str, ...]]]:
    return st.lists(items, max_size=4).map(lambda xs: (xs, tuple(x.strip() for x in xs)))


# key: strategy of (written value, Manifest field, normalized value)
FIELD_STRATEGIES: dict[str, st.SearchStrategy[tuple[object, str, object]]] = {
    "title": ONE_LINE.map(lambda t: (t, "title", t.strip())),
    "engine": NAME.map(lambda n: (n, "engine", n)),
    "cwd": ONE_LINE.map(lambda t: (t, "cwd", t.strip())),
    "yolo": st.booleans().map(lambda b: (b, "yolo", b)),
    "lock": ONE_LINE.map(lambda t: (t, "lock", t.strip())),
    "timeout": DURATION.map(lambda d: (d[0], "timeout", d[1])),
    "verify": ONE_LINE.map(lambda t: (t, "verify", t.strip())),
    "profile": NAME.map(lambda n: (n, "profile", n)),
    "engine-class": NAME.map(lambda n: (n, "engine_class", n)),
    "capabilities": _strings(st.from_regex(r"[a-z][a-z0-9]{0,7}(:[a-z0-9]{1,8})?", fullmatch=True)).map(
        lambda v: (v[0], "capabilities", v[1])),
    "prefers": _strings(ONE_LINE).map(lambda v: (v[0], "prefers", v[1])),
    "priority": PRIORITY.map(lambda p: (p[0], "priority", p[1])),
    "budget": budget_fields().map(lambda b: (b[0], "budget", b[1])),
    "deps": st.lists(JOB_ID.filter(lambda d: d != JOB), max_size=4).map(
        lambda ds: (ds, "deps", tuple(dict.fromkeys(ds)))),
    "idempotency-key": ONE_LINE.map(lambda t: (t, "idempotency_key", t.strip())),
    "retry": retry_fields().map(lambda r: (r[0], "retry", r[1])),
    "review-policy": st.sampled_from(["auto", "manual"]).map(lambda p: (p, "review_policy", p)),
    "artifacts": _strings(st.from_regex(r"[a-z0-9_]{1,8}(/[a-z0-9_*]{1,8}){0,2}(\.[a-z]{1,4})?", fullmatch=True)).map(
        lambda v: (v[0], "artifacts", v[1])),
    "tracker-item": ONE_LINE.map(lambda t: (t, "tracker_item", t.strip())),
}


@st.composite
def manifests_to_write(draw: st.DrawFn) -> tuple[dict[str, object], str, Manifest]:
    keys = draw(st.lists(st.sampled_from(sorted(FIELD_STRATEGIES)), unique=True))
    written: dict[str, object] = {}
    values: dict[str, object] = {}
    for key in keys:
        value, field, normalized = draw(FIELD_STRATEGIES[key])
        written[key] = value
        values[field] = normalized
    # a list key written as [] is still a key the file set, so it stays in `keys`
    body = draw(BODY)
    values.setdefault("title", default_title(body))
    expected = Manifest(id=JOB, body=body.strip(), keys=tuple(keys), **values)  # type: ignore[arg-type]
    return written, body, expected


@settings(max_examples=200, deadline=None)
@given(manifests_to_write())
def test_render_then_parse_round_trips(case: tuple[dict[str, object], str, Manifest]) -> None:
    """Any manifest render_manifest writes parses back to the same keys, values and body."""
    written, body, expected = case
    assert parse_manifest(JOB, render_manifest(written, body), SOURCE) == expected


def test_render_without_fields_is_the_body() -> None:
    """With no keys given, the file is the body alone with one final newline."""
    assert render_manifest({}, "Do it.\n\n\n") == "Do it.\n"


def test_render_refuses_unknown_keys() -> None:
    """render_manifest will not write a key the parser would refuse, and says so as lint does."""
    with pytest.raises(ManifestError, match=r"^job\.md: key 'colour': unknown key.*; known keys: title"):
        render_manifest({"colour": "blue"}, "Do it.", "job.md")


def test_render_body_starting_with_a_rule_round_trips() -> None:
    """A body whose first line is a `---` rule, rendered without keys, parses back to that body."""
    body = "---\nBelow the rule: fix the login page."
    assert parse_manifest(JOB, render_manifest({}, body), SOURCE).body == body


def test_negative_budget_usd_is_refused() -> None:
    """A budget of minus five dollars is an error naming the key and the value."""
    message = error_of("budget: {usd: -5}")
    assert "key 'budget'" in message
    assert "-5" in message


def test_a_malformed_capability_is_refused_where_the_job_is_read() -> None:
    """`capabilities: ["a b"]` matched no worker ever: aq add took it (lint named it), and a
    tracker label cap:"a b" made such a job."""
    assert error_of('capabilities: ["a b"]') == (
        f"{SOURCE}: key 'capabilities': capability 'a b': holds a space; a capability is one "
        "word such as has:docker")
    assert "node>=twenty" in error_of("capabilities: [node>=twenty]")
    # advice is lint's, not a refusal: a worker tagged exactly node=20 meets it
    assert parse("capabilities: [node=20]").capabilities == ("node=20",)
