"""Job ids: a file's stem, never a path; new ones slug-based and valid."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aq.core.ids import check_job_id, is_job_id, new_job_id, slugify
from aq.errors import ExitStatus, InvalidJobId


@pytest.mark.parametrize("job_id", ["fix-login-3f2a", "a", "0", "v1.2_beta", "x" * 120])
def test_valid_ids_are_accepted(job_id: str) -> None:
    """Lower-case letters, digits, `-`, `_` and `.` starting with a letter or digit make an id."""
    assert check_job_id(job_id) == job_id
    assert is_job_id(job_id)


@pytest.mark.parametrize(
    ("job_id", "problem"),
    [
        ("../x", "is a path"),
        ("a/b", "is a path"),
        ("a\\b", "is a path"),
        ("a..b", "is a path"),
        ("/etc/passwd", "is a path"),
        ("", "is empty"),
        ("Fix-Login", "has characters other than"),
        ("fix login", "has characters other than"),
        ("-x", "has characters other than"),
        (".hidden", "has characters other than"),
        ("x" * 121, "is longer than 120 characters"),
        ("notes.md", "ends in '.md', as job files do (it would name job 'notes')"),
    ],
)
def test_bad_ids_are_refused_saying_why(job_id: str, problem: str) -> None:
    """A path, an empty id, upper case or odd characters are refused with the problem and the rule."""
    with pytest.raises(InvalidJobId) as caught:
        check_job_id(job_id)
    message = str(caught.value)
    assert message.startswith(f"job id {job_id!r} {problem}")
    assert "use lower-case letters, digits, '-', '_' and '.'" in message
    assert caught.value.exit_status is ExitStatus.USAGE
    assert not is_job_id(job_id)


@pytest.mark.parametrize(
    ("title", "slug"),
    [
        ("Fix the login page!", "fix-the-login-page"),
        ("  Café résumé  ", "cafe-resume"),
        ("a/b\\c..d", "a-b-c-d"),
        ("!!!", ""),
        ("word " * 20, "word-word-word-word-word-word-word-word"),
    ],
)
def test_slugify(title: str, slug: str) -> None:
    """A title becomes lower-case ASCII words joined by `-`, cut at a word within 40 characters."""
    assert slugify(title) == slug


def test_new_job_id_is_slug_plus_suffix() -> None:
    """A new id is the title's slug, `-`, and six base32 characters from the entropy."""
    assert new_job_id("Fix the login page!", 0) == "fix-the-login-page-000000"
    assert new_job_id("Fix the login page!", 1) == "fix-the-login-page-100000"
    assert new_job_id("Fix the login page!", 2**30 - 1) == "fix-the-login-page-zzzzzz"


def test_new_job_id_without_words_is_job() -> None:
    """A title with no letters or digits gives a `job-` id."""
    assert new_job_id("???", 33) == "job-110000"


def test_new_job_ids_differ_with_entropy() -> None:
    """Two entropies give two different ids for the same title."""
    assert new_job_id("same", 12345) != new_job_id("same", 54321)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(0, 2**30 - 1))
def test_new_job_id_is_always_a_valid_id(title: str, entropy: int) -> None:
    """Whatever the title, a new id passes check_job_id and keeps the title's slug."""
    job_id = new_job_id(title, entropy)
    assert check_job_id(job_id) == job_id
    assert re.fullmatch(r"[a-z0-9-]{1,40}-[0-9a-hjkmnp-tv-z]{6}", job_id)
    assert job_id.startswith((slugify(title) or "job") + "-")
