"""Secret scrubbing: nothing that looks like a credential reaches a log or a committed file.

Token patterns (GitHub, OpenAI/Anthropic, AWS, Slack, GitLab, Google), private key blocks,
and the values of environment variables whose names hold TOKEN, KEY, SECRET or PASSWORD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"
_START = r"(?<![A-Za-z0-9_\-])"  # a token starts a word: "task-queue" holds no "sk-" token
TOKEN_PATTERNS = tuple(_START + pattern for pattern in (
    r"gh[pousr]_[A-Za-z0-9]{20,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}",
    r"(?:AKIA|ASIA)[0-9A-Z]{16}",
    r"xox[abposr]-[A-Za-z0-9\-]{8,}",
    r"glpat-[A-Za-z0-9_\-]{16,}",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"(?i:bearer)\s+[A-Za-z0-9._~+/\-]{20,}=*",  # RFC 6750 b64token
))
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD", re.I)
MIN_SECRET_LENGTH = 6  # shorter values ("1", "yes") would redact ordinary words
KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")


def secret_values(env: Mapping[str, str], names: Iterable[str] = ()) -> list[str]:
    """Values of variables whose names say they are secrets (or are among `names`: secrets
    aq.yaml names, such as a tracker's token_env), longest first."""
    values: set[str] = set()
    also = set(names)
    for name, value in env.items():
        if not SECRET_NAME.search(name) and name not in also:
            continue
        # a multi-line value (a JSON credential) is scrubbed line by line, as logs are written
        for part in (value, *value.splitlines()):
            if len(part.strip()) >= MIN_SECRET_LENGTH:
                values.add(part.strip())
    return sorted(values, key=len, reverse=True)


class Scrubber:
    """Scrubs text line by line; remembers when it is inside a private key block."""

    def __init__(self, env: Mapping[str, str], names: Iterable[str] = ()) -> None:
        alternatives = [re.escape(value) for value in secret_values(env, names)] + list(TOKEN_PATTERNS)
        self._pattern = re.compile("|".join(alternatives))
        self._in_key = False

    def line(self, text: str) -> str:
        if self._in_key:
            if KEY_END.search(text):
                self._in_key = False
                return self._pattern.sub(REDACTED, KEY_END.split(text, maxsplit=1)[1])
            return ""
        begin = KEY_BEGIN.search(text)
        if begin:
            before = text[:begin.start()]
            rest = text[begin.end():]
            if KEY_END.search(rest):
                after = KEY_END.split(rest, maxsplit=1)[1]
                return self.line(before + REDACTED + after)
            self._in_key = True
            return self._pattern.sub(REDACTED, before) + REDACTED + "\n"
        return self._pattern.sub(REDACTED, text)

    def text(self, text: str) -> str:
        return "".join(self.line(line) for line in text.splitlines(keepends=True))

    def fork(self) -> Scrubber:
        """The same secrets with a key-block state of its own: for a second stream (stderr)
        whose lines interleave with this one's."""
        other = object.__new__(Scrubber)
        other._pattern = self._pattern
        other._in_key = False
        return other
