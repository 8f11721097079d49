"""The house rules (README, "Development"): no import circle, and no module, class or function
so big that a newcomer cannot hold it. The layers themselves are import-linter's contract
(pyproject.toml), run by ./test.sh."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import grimp

PACKAGE = Path(__file__).resolve().parent.parent / "aq"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60
# Over a limit on purpose, each with its reason. Empty is the goal; a new entry needs a reason.
EXCEPTIONS: dict[str, str] = {}


def test_no_module_imports_itself_through_others() -> None:
    graph = grimp.build_graph("aq")
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                circles.append(" -> ".join((module, *chain)))
    assert circles == [], "import circles:\n" + "\n".join(circles)


def _sizes() -> Iterator[tuple[str, str, int, int]]:
    """(kind, dotted name, lines, limit) for every module, class and function of aq."""
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        text = path.read_text(encoding="utf-8")
        yield "module", module, len(text.splitlines()), MAX_MODULE_LINES
        yield from _defs(ast.parse(text), module)


def _defs(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, int, int]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            name = f"{prefix}.{child.name}"
            start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
            lines = (child.end_lineno or child.lineno) - start + 1
            if isinstance(child, ast.ClassDef):
                yield "class", name, lines, MAX_CLASS_LINES
            else:
                yield "function", name, lines, MAX_FUNCTION_LINES
            yield from _defs(child, name)


def test_no_module_class_or_function_is_over_its_size() -> None:
    over = [f"{kind} {name}: {lines} lines (limit {limit})"
            for kind, name, lines, limit in _sizes() if lines > limit and name not in EXCEPTIONS]
    assert over == [], "too big:\n" + "\n".join(over)


def test_every_exception_is_still_needed() -> None:
    sizes = {name: (lines, limit) for _, name, lines, limit in _sizes()}
    unneeded = [name for name in EXCEPTIONS if name not in sizes or sizes[name][0] <= sizes[name][1]]
    assert unneeded == [], f"no longer over their limit (remove them): {unneeded}"


TESTS = Path(__file__).resolve().parent
# Test folders that mirror no package: shared helpers, multi-process fleet runs, real agent
# CLIs end to end, and the recorded samples they read.
NOT_MIRRORS = {"helpers", "fleet", "agents", "data", "golden", "__pycache__"}
PROJECT_WIDE = {"test_house.py", "test_docs.py"}  # about the whole project, so at the top


def test_tests_mirror_the_package() -> None:
    """A test of aq/X/... lives in tests/X/...: a newcomer finds a module's tests by its path."""
    strays = [str(path.relative_to(TESTS)) for path in TESTS.rglob("*")
              if path.is_dir() and not NOT_MIRRORS & set(path.relative_to(TESTS).parts)
              and not (PACKAGE / path.relative_to(TESTS)).is_dir()]
    strays += [name for name in (p.name for p in TESTS.glob("test_*.py")) if name not in PROJECT_WIDE]
    assert strays == [], f"tests outside a folder that mirrors aq/: {strays}"
