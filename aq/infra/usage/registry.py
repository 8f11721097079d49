"""Every usage reader by the name an engine gives its output format (aq.infra.engines)."""

from __future__ import annotations

from aq.infra.usage.aider import AiderReader
from aq.infra.usage.claude import AmpReader, ClaudeReader, CursorReader, QwenReader
from aq.infra.usage.codex import CodexReader
from aq.infra.usage.copilot import CopilotReader
from aq.infra.usage.gemini import GeminiReader
from aq.infra.usage.goose import GooseReader
from aq.infra.usage.opencode import OpencodeReader
from aq.infra.usage.reader import UsageReader

READERS: dict[str, type[UsageReader]] = {
    reader.name: reader
    for reader in (ClaudeReader, CodexReader, GeminiReader, AiderReader, CopilotReader,
                   OpencodeReader, QwenReader, CursorReader, AmpReader, GooseReader)
}


def reader_for(name: str) -> UsageReader:
    """A fresh reader of the output format `name` (a key of READERS)."""
    reader = READERS.get(name)
    if reader is None:
        raise ValueError(f"{name!r} is not a usage reader; known: {', '.join(sorted(READERS))}")
    return reader()

