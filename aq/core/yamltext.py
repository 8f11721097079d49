"""YAML as people write frontmatter: only true/false are booleans, and no value is a date.

YAML 1.1 (PyYAML's default) reads `on`, `off`, `yes`, `no` as booleans, so `retry: {on: [...]}`
would lose its key and an unknown key `yes:` would be reported as `True`. It reads
`2026-01-01` as a date, which no key of aq takes: kept as text, a title or a lock is what was
written, and a key that refuses it quotes it as written, not as `datetime.date(2026, 1, 1)`.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_DATE = "tag:yaml.org,2002:timestamp"


class _Loader(_BASE):  # type: ignore[misc]
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _DATE)]
    for first, resolvers in _BASE.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)
