"""The reader of goose run --output-format stream-json."""

from __future__ import annotations

from dataclasses import replace

from aq.core.usage import plus_model, short_text
from aq.infra.usage.reader import UsageReader


class GooseReader(UsageReader):
    """goose run --output-format stream-json (JSON Lines: message, notification, model_change,
    error, complete), per goose's source. It reports only a total token count (`complete`),
    which a Usage cannot hold without its split, and no cost or session: this reader gives the
    models (`model_change`) and cli_error (an `error` event; goose exits 0 after one).
    """

    name = "goose-json"

    def _take(self, event: dict[str, object]) -> None:
        kind = event.get("type")
        if kind == "model_change":
            model = short_text(event.get("model"))
            if model is not None:
                self._now = replace(self._now, models=plus_model(self._now.models, model))
        elif kind == "error":
            self._fail("error", event.get("error"))

