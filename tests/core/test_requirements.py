"""Capability requirements (DESIGN §2, §4): plain tags by membership, versions by comparison."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aq.core.requirements import (
    check_requirement,
    check_tag,
    compare_versions,
    missing,
    parse_version,
    requirement_met,
    tools_compared,
    version_in,
)

WORKER = frozenset({"os:linux", "arch:x86_64", "has:docker", "engine:claude", "gpu",
                    "node=20.11.1", "python=3.11.4", "python3=3.11.4", "git=2.39.2"})
OPS = [">=", "<=", ">", "<", "==", "!="]
NEGATION = {">=": "<", "<": ">=", "<=": ">", ">": "<=", "==": "!=", "!=": "=="}

versions = st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=4).map(tuple)
tools = st.sampled_from(["node", "python", "git", "go", "my-tool", "cores"])
plain_tags = st.from_regex(r"[a-z][a-z0-9:._-]{0,15}", fullmatch=True)


def text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def have_version(tool: str, version: tuple[int, ...]) -> frozenset[str]:
    return frozenset({"os:linux", f"{tool}={text(version)}"})


# --- parse_version -----------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("v20.11.1", (20, 11, 1)),
    ("3.11.4", (3, 11, 4)),
    ("2.39.2.windows.1", (2, 39, 2)),
    ("1.2.3-rc1", (1, 2, 3)),
    ("20", (20,)),
    ("V1.0", (1, 0)),
    ("20.", (20,)),
    ("", None),
    ("v", None),
    ("abc", None),
    ("rc1", None),
])
def test_parse_version_takes_the_leading_numbers(raw: str, expected: tuple[int, ...] | None) -> None:
    """A version is its leading dotted numbers after an optional v; anything else gives None."""
    assert parse_version(raw) == expected


@given(versions, st.sampled_from(["", "v", "V"]),
       st.sampled_from(["", "-rc1", ".windows.1", "+build5", " (2024-01-02)", "beta"]))
def test_parse_version_ignores_prefix_v_and_any_suffix(
        version: tuple[int, ...], prefix: str, suffix: str) -> None:
    """A written version parses back to its numbers whatever `v` or suffix surrounds it."""
    assert parse_version(prefix + text(version) + suffix) == version


@pytest.mark.parametrize(("output", "expected"), [
    ("v20.11.1\n", "20.11.1"),
    ("Python 3.11.4\n", "3.11.4"),
    ("git version 2.39.2.windows.1\n", "2.39.2"),
    ("go version go1.22.1 linux/amd64\n", "1.22.1"),
    ("Docker version 24.0.7, build afdd53b\n", "24.0.7"),
    ("gh version 2.40.1 (2023-12-13)\nhttps://github.com/cli/cli/releases/tag/v2.40.1\n", "2.40.1"),
    ("cargo 1.75.0 (1d8b05cdd 2023-11-20)\n", "1.75.0"),
    ("Xcode 15.2\nBuild version 15C500\n", "15.2"),
    ("no version here 42\n", None),
    ("", None),
])
def test_version_in_finds_the_first_dotted_version_of_tool_output(
        output: str, expected: str | None) -> None:
    """The version of a `--version` output is its first dotted number, as the tools print it."""
    assert version_in(output) == expected


# --- comparison --------------------------------------------------------------------------------


@given(versions, st.integers(min_value=0, max_value=3))
def test_padding_with_zeros_changes_nothing(version: tuple[int, ...], zeros: int) -> None:
    """20 and 20.0.0 are the same version, for comparison and for every requirement."""
    padded = version + (0,) * zeros
    assert compare_versions(version, padded) == 0
    have = have_version("node", padded)
    for op in OPS:
        assert requirement_met(f"node{op}{text(version)}", have) == (op in {">=", "<=", "=="})


@given(versions, versions)
def test_compare_agrees_with_padded_tuple_order(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    """Versions order part by part, as tuples of the same length would."""
    width = max(len(a), len(b))
    left, right = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    assert compare_versions(a, b) == (left > right) - (left < right)
    assert compare_versions(a, b) == -compare_versions(b, a)


@given(tools, versions, versions, st.sampled_from(OPS))
def test_a_comparison_is_met_exactly_when_its_negation_is_not(
        tool: str, have: tuple[int, ...], bound: tuple[int, ...], op: str) -> None:
    """`tool>=v` is met iff `tool<v` is not, and likewise for every operator and its opposite."""
    caps = have_version(tool, have)
    assert requirement_met(f"{tool}{op}{text(bound)}", caps) != requirement_met(
        f"{tool}{NEGATION[op]}{text(bound)}", caps)


@given(tools, versions, versions, st.sampled_from(OPS))
def test_a_comparison_matches_the_version_order(
        tool: str, have: tuple[int, ...], bound: tuple[int, ...], op: str) -> None:
    """`tool OP v` is met when the worker's version stands in that relation to v."""
    order = compare_versions(have, bound)
    expected = {">=": order >= 0, "<=": order <= 0, ">": order > 0, "<": order < 0,
                "==": order == 0, "!=": order != 0}[op]
    assert requirement_met(f"{tool}{op}{text(bound)}", have_version(tool, have)) == expected


@given(tools, versions, st.lists(st.tuples(st.sampled_from(OPS), versions), min_size=1, max_size=4))
def test_a_conjunction_is_met_when_every_condition_is(
        tool: str, have: tuple[int, ...], conditions: list[tuple[str, tuple[int, ...]]]) -> None:
    """`node>=20,<23` is met exactly when `node>=20` and `node<23` both are."""
    caps = have_version(tool, have)
    parts = [f"{op}{text(bound)}" for op, bound in conditions]
    joined = tool + ",".join(parts)
    assert check_requirement(joined) is None
    assert requirement_met(joined, caps) == all(requirement_met(tool + part, caps) for part in parts)


@given(tools, versions, st.sampled_from(OPS))
def test_a_version_requirement_is_never_met_without_that_tools_version(
        tool: str, bound: tuple[int, ...], op: str) -> None:
    """A worker that reports no version of a tool meets no version requirement on it."""
    caps = frozenset({"os:linux", f"has:{tool}", "other=1.0", f"{tool}x=1.0", f"{tool}=garbage"})
    assert not requirement_met(f"{tool}{op}{text(bound)}", caps)


def test_version_requirements_examples() -> None:
    """The requirements the design names are met or not as a person would read them."""
    assert requirement_met("node>=20", WORKER)
    assert requirement_met("node>=20,<23", WORKER)
    assert not requirement_met("node>=21", WORKER)
    assert requirement_met("python>=3.11", WORKER)
    assert requirement_met("python3>=3.11", WORKER)
    assert not requirement_met("python<3.11", WORKER)
    assert requirement_met("git!=2.39.1", WORKER)
    assert requirement_met("node == 20.11.1", WORKER)
    assert requirement_met("node>=v20", WORKER)
    assert not requirement_met("node==20", WORKER)  # padded: 20 is 20.0.0
    assert not requirement_met("go>=1.20", WORKER)


def test_any_of_several_versions_of_a_tool_will_do() -> None:
    """A worker tagged with two versions of a tool meets a requirement either one meets."""
    caps = frozenset({"node=18.0.0", "node=22.1.0"})
    assert requirement_met("node>=20", caps)
    assert requirement_met("node<20", caps)
    assert not requirement_met("node>=19,<22", caps)


# --- plain tags ----------------------------------------------------------------------------------


@given(plain_tags, st.frozensets(plain_tags, max_size=6))
def test_plain_tags_are_met_by_membership(tag: str, have: frozenset[str]) -> None:
    """A tag with no comparison is met exactly when the worker has that tag."""
    assert requirement_met(tag, have) == (tag in have)
    assert requirement_met(tag, have | {tag})


def test_plain_tag_examples() -> None:
    """`has:docker`, `gpu`, `os:linux`, `engine:claude` and `node` alone are plain tags."""
    for tag in ("has:docker", "gpu", "os:linux", "engine:claude", "arch:x86_64"):
        assert requirement_met(tag, WORKER)
    for tag in ("has:podman", "os:mac", "engine:codex", "node", "python", "node=20"):
        assert not requirement_met(tag, WORKER)
    assert requirement_met("region=eu", frozenset({"region=eu"}))


@given(st.lists(st.one_of(plain_tags, st.builds(lambda t, o, v: f"{t}{o}{text(v)}", tools,
                                                 st.sampled_from(OPS), versions)), max_size=8),
       st.frozensets(st.one_of(plain_tags, st.builds(lambda t, v: f"{t}={text(v)}", tools, versions)),
                     max_size=8))
def test_missing_lists_the_unmet_requirements_in_order(required: list[str], have: frozenset[str]) -> None:
    """`missing` keeps the order of the job's list and holds exactly the requirements not met."""
    assert missing(required, have) == [req for req in required if not requirement_met(req, have)]


def test_missing_example() -> None:
    """A worker without docker or node 22 is told it lacks exactly those, in the job's order."""
    assert missing(["has:docker", "node>=22", "gpu", "has:podman"], WORKER) == ["node>=22", "has:podman"]
    assert missing([], WORKER) == []


# --- malformed requirements ----------------------------------------------------------------------


@pytest.mark.parametrize(("req", "said"), [
    ("", "empty"),
    ("   ", "empty"),
    (">=20", "names no tool"),
    ("node>=abc", "'abc' is not a version"),
    ("node>=", "no version"),
    ("node>=20,", "empty condition"),
    ("node>=20,,<23", "empty condition"),
    ("node>=20,abc", "no comparison"),
    ("node=>20", "'=>' is not a comparison"),
    ("node>>20", "'>>' is not a comparison"),
    ("node>=20<23", "not a version"),
    ("node>=20,python<4", "compares python after node"),
    ("has:node>=20", "'has:node' is not a tool name"),
    ("node>=20.x", "not a version"),
    ("has docker", "holds a space"),
    ("has:git,has:docker", "holds ','"),
    ("!gpu", "cannot be negated"),
    ("node=20", "node>=20,<21"),
    ("python=3.11", "python>=3.11,<3.12"),
])
def test_malformed_requirements_are_reported_and_never_met(req: str, said: str) -> None:
    """A requirement lint would reject gets one line naming it and what is wrong; it is never met."""
    problem = check_requirement(req)
    assert problem is not None
    assert said in problem
    assert repr(req) in problem
    assert "\n" not in problem
    assert not requirement_met(req, WORKER | {"node=abc", "has:node=20"})


@pytest.mark.parametrize("req", [
    "has:docker", "gpu", "os:linux", "engine:claude", "node", "region=eu", "cores=8",
    "node>=20", "node>=20,<23", "node>=20,node<23", "python>=3.11", "git!=2.39.1",
    "node == 20", "node>=v20", "my-tool>=1", "go<1.22.0",
])
def test_well_formed_requirements_pass_the_check(req: str) -> None:
    """Plain tags and well-formed version requirements have no problem to report."""
    assert check_requirement(req) is None


@given(tools, st.lists(st.tuples(st.sampled_from(OPS), versions), min_size=1, max_size=3))
def test_every_generated_version_requirement_is_well_formed(
        tool: str, conditions: list[tuple[str, tuple[int, ...]]]) -> None:
    """Any tool with any list of comparisons against versions passes the check."""
    assert check_requirement(tool + ",".join(f"{op}{text(v)}" for op, v in conditions)) is None


def test_tools_compared_names_the_tools_of_well_formed_version_requirements() -> None:
    """The tools worth probing are those a well-formed version requirement compares."""
    reqs = ["gpu", "node>=20,<23", "python>=3.11", "node=20", "git>=abc", ">=3"]
    assert tools_compared(reqs) == {"node", "python"}


@pytest.mark.parametrize(("tag", "ok"), [
    ("gpu", True), ("has:docker", True), ("node=20.11.1", True), ("region=eu", True),
    ("node>=20", False), ("node==20", False), ("has docker", False), ("a,b", False),
    ("!gpu", False), ("", False),
])
def test_tags_a_worker_declares_are_checked(tag: str, ok: bool) -> None:
    """A worker declares tags and versions, never a requirement, a list or a negation."""
    problem = check_tag(tag)
    assert (problem is None) == ok
    if problem:
        assert repr(tag) in problem
