"""YAML as people write frontmatter: values are what was written, as YAML 1.2 reads them.

YAML 1.1 (PyYAML's default) reads `on`, `off`, `yes`, `no` as booleans, so `retry: {on: [...]}`
would lose its key and an unknown key `yes:` would be reported as `True`. It reads
`2026-01-01` as a date, `10:30` as the number 630 (base 60), `010` as 8 (octal) and `1_000` as
1000: a lock, an engine's name or a duration became something else. Here only true/false are
booleans, numbers are plain decimals (`0`, `-12`, `1.5`, `2.5e3`, `.inf`), and the rest is text.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_BOOL = "tag:yaml.org,2002:bool"
_DATE = "tag:yaml.org,2002:timestamp"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class _Loader(_BASE):  # type: ignore[misc]
    pass


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_BOOL, _DATE, _INT, _FLOAT)]
    for first, resolvers in _BASE.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
# YAML 1.2's core schema, but a leading zero keeps a number text (`010` is a name, not 10)
_Loader.add_implicit_resolver(_INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(  # with a point, as YAML 1.1 asks: 0E0 is text
    r"^(?:[-+]?(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+]?[0-9]+)?|[-+]?\.[0-9]+(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)
