"""aq.yaml: the queue's configuration, validated, with defaults for every key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aq.core.durations import parse_duration, parse_money, parse_positive_duration, parse_size
from aq.core.manifest import (
    DEFAULT_RETRY_ON,
    RETRY_ON,
    Manifest,
    ReviewGate,
    _ship,
    _text,
    review_gate,
)
from aq.errors import ConfigError
from aq.infra.confine import describe, read_regular
from aq.infra.files import StatCache, signature

if TYPE_CHECKING:  # the sections most queues leave out are imported when aq.yaml has them
    from aq.core.alert_rules import AlertRules
    from aq.core.decisions import RetryRule
    from aq.core.prices import Price
    from aq.infra.engines import EngineSpec
    from aq.infra.hooks import HookSettings
    from aq.store.pacer import PushBudget
    from aq.trackers.settings import TrackerSettings

CONFIG_NAME = "aq.yaml"

DEFAULT_CONFIG_TEXT = """\
# aq.yaml: this queue's configuration. Every key is optional; the values shown are the defaults.

# Engine for jobs that name none (and whose profile names none).
default_engine: claude

# Wall limit of one attempt (engine + verify); a job's `timeout:` overrides it.
timeout: 1h
# After a timeout or a stop: TERM the engine's process group, wait this long, then KILL.
kill_grace: 10s

# Retry defaults for every job; a job's own `retry:` overrides them key by key.
# max 0: a job's first failure is final (failed); with retries it ends in dead_letter.
retry:
  max: 0
  backoff: 5m
  on: [timeout, verify_failed, engine_failed]

# A job whose worker stops under it this many times goes to dead_letter (reason lease_expired).
max_reclaims: 3
lease_ttl: 10m

# How often `aq run` looks for work when idle.
poll: 5s

# Attempt logs and artifacts kept in the queue (secrets are scrubbed before anything is written).
log_max: 1MiB
artifact_max: 10MiB
# `aq gc` removes the logs and artifacts of jobs final (shipped, failed, dead) for longer than
# this; unset, it keeps them.
# log_retention: 90d
# Jobs final (shipped, failed, dead letter) for longer than this are due to move to
# queue/.archive/<yyyy>/<mm>/<nnn>/ with their events and logs, so no folder nears a forge's
# limit (GitHub: 3,000 entries); idle workers move what is due (at most once an hour each,
# 500 jobs a commit), and `aq archive` does at once. Unset: only `aq archive` moves jobs, those
# final for over 14 days.
# archive_after: 14d

# Engine classes: a job or profile may ask for `engine-class: coding-agent`; a worker runs the
# first engine of the profile's `prefers-engine`, else of this list, that it has installed.
engine_classes:
  coding-agent: [claude, codex, gemini, aider, copilot, opencode, qwen, cursor-agent, amp, goose, devin]

# A job's `prefers:` (factory:<worker>, engine:<name>) gives the workers it names first pick
# for this long after the job is ready; then any able worker may take it.
prefer_window: 2m

# Workspaces: a job with `repo:` (here, in its profile or in the job) works in its own git
# worktree of that repo on branch aq/<job-id>, pushed before the job leaves building.
# repo: git@example.com:team/project.git
# base: main                 # the branch jobs start from (default: the repo's own)
# ship: mark                 # what `aq ship` does: mark (stage only), merge (into base), pr
# workspaces_dir: ~/.cache/aq/workspaces

# Trackers: `aq from-tracker REF` imports an item as a job; its progress goes back to it.
# Tokens come from the environment (GITHUB_TOKEN, or `gh auth token`), never from this file.
# trackers:
#   takeover: 10m                         # a post its mover did not send: anyone sends it after
#   github:
#     api_url: https://api.github.com     # GitHub Enterprise: https://HOST/api/v3
#     token_env: GITHUB_TOKEN
#     label: agent:run                    # --query github:OWNER/REPO imports open issues with it
#     in_progress_label: aq:in-progress   # set while a job builds; shipped closes the issue
#   backlog:
#     path: ../planning                   # a Backlog.md project, relative to this queue
#   cmd:
#     jira:                               # cmd:jira:PROJ-7
#       view: jira issue view {id} --raw
#       comment: jira issue comment add {id} {text}
#       status: jira issue move {id} {status}
#       fields: {title: fields.summary, body: fields.description, labels: fields.labels}
#       statuses: {in_progress: In Progress, done: Done}
#       secret_env: [JIRA_API_TOKEN]

# Engines: command templates; add your own or override a built-in (claude, codex, gemini,
# aider, copilot, opencode, qwen, cursor-agent, amp, goose, devin, shell). `input: stdin` feeds
# the prompt on stdin (never read as an option, no length limit); else it goes where cmd has
# {prompt_file}, or {prompt} behind `--`. {yolo} marks where the auto-approve flags go (else
# before any `--`). `usage:` names the reader of the engine's JSON output (claude-json,
# codex-json, gemini-json, ...), so every run records its tokens and cost. `mcp:` (flags, with
# {mcp_config}: a JSON file of aq's MCP server) gives the CLI aq's server for jobs with mcp: true.
# engines:
#   claude:
#     env: {IS_SANDBOX: 1}            # claude refuses --dangerously-skip-permissions as root without it
#   my-agent:
#     cmd: [my-agent, --json, --task-file, "{prompt_file}"]
#     usage: claude-json

# Prices (USD per million tokens) for engines that report tokens but no cost (codex, gemini,
# qwen): the cost of a run is computed from them; without a price it stays unknown.
# prices:
#   gpt-5-codex: {input: 1.25, output: 10, cache_read: 0.125}

# What the whole queue may spend in a UTC day, counted from the runs recorded on the remote:
# crossing it halts the queue (queue/HALT, reason budget) until a person runs `aq resume`.
# budget: {usd_per_day: 50, tokens_per_day: 20M}

# The fleet's pushes allowed in any minute, kept by pacing (a push over a forge's limit is
# refused): GitHub recommends at most 6 a minute per repository; GitLab allows 600 a minute per
# user and project. Unset: no pacing.
# push_budget: {per_minute: 6}

# Alerts (`aq alerts`; an idle worker hands each new one to hooks.on_alert): a building job
# with no sign of progress for `stall`, `failure_spike` failures of one engine/profile within
# a window, a machine's heartbeat silent for `offline` (at least twice lease_ttl) without a
# goodbye, the queue's budget crossed or a job stopped at its own, a dead letter. `off`
# switches a kind off. These are the defaults:
# alerts: {stall: 30m, failure_spike: 5/1h, offline: 30m, budget: on, dead_letter: on}

# Hooks: your commands, run with `sh -c` in this folder by the worker or person who moved a job
# (on_stage: the stage it moved to) or raised an alert (on_alert). Each gets the event as JSON on
# stdin ("text" holds a line to show) and AQ_JOB_ID, AQ_STAGE, AQ_FROM_STAGE, AQ_EVENT, AQ_HOOK,
# AQ_TITLE, AQ_QUEUE. A hook never blocks or fails the move: one that fails or outlives timeout
# (its process group is stopped) is reported in a line and recorded as a `hook` event.
# Ready-made ones: examples/hooks/ (notify-send.sh, webhook.py, sendmail.sh) in aq's source.
# hooks:
#   on_stage:
#     failed: notify-send "aq: $AQ_JOB_ID failed" "$AQ_TITLE"
#     dead_letter: ./hooks/webhook.py   # posts to $AQ_WEBHOOK_URL, set where aq runs (not here)
#     review: AQ_MAIL_TO=you@example.com ./hooks/sendmail.sh
#   on_alert: ./hooks/webhook.py
#   timeout: 10s
"""

DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {"coding-agent": (
    "claude", "codex", "gemini", "aider", "copilot", "opencode", "qwen", "cursor-agent", "amp", "goose",
    "devin")}

_KNOWN = ("default_engine", "timeout", "kill_grace", "retry", "max_reclaims", "lease_ttl",
          "heartbeat_interval", "poll", "log_max", "artifact_max", "engines", "remote",
          "engine_classes", "prefer_window", "repo", "base", "ship", "workspaces_dir",
          "log_retention", "archive_after", "trackers", "prices", "budget", "review",
          "push_budget", "hooks", "alerts")


@dataclass(frozen=True, slots=True)
class QueueConfig:
    default_engine: str = "claude"
    timeout: float = 3600.0
    kill_grace: float = 10.0
    retry_max: int = 0
    retry_backoff: float = 300.0
    retry_on: frozenset[str] = frozenset(DEFAULT_RETRY_ON)
    max_reclaims: int = 3
    lease_ttl: float = 600.0
    heartbeat_interval: float | None = None
    poll: float = 5.0
    log_max: int = 1 << 20
    artifact_max: int = 10 << 20
    log_retention: float | None = None  # aq gc removes logs of jobs final for longer than this
    archive_after: float | None = None  # final jobs final for longer than this are archived
    remote: str | None = None
    engine_classes: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_CLASSES))
    prefer_window: float = 120.0
    repo: str | None = None  # the project jobs work on, unless a job or its profile names one
    base: str | None = None
    ship: str = "mark"
    workspaces_dir: str | None = None  # where cache clones and worktrees live (default: user cache)
    engine_settings: dict[str, EngineSpec] = field(default_factory=dict)  # aq.yaml `engines:`
    tracker_settings: TrackerSettings | None = None  # aq.yaml `trackers:`, if it has them
    prices: dict[str, Price] = field(default_factory=dict)  # USD per million tokens, per model
    budget_usd_per_day: float | None = None  # the queue halts when a UTC day's runs cost more
    budget_tokens_per_day: int | None = None
    review: ReviewGate | None = None  # the review gate of every job that sets none of its own
    push_budget: PushBudget | None = None  # the fleet's pushes allowed per window (paced)
    hooks: HookSettings | None = None  # commands run when a job moves or an alert is raised
    alert_rules: AlertRules | None = None  # aq.yaml `alerts:`, if it has them

    # `aq ls` reads the config unpickled: a section aq.yaml leaves out is None there, so its
    # module (and its dataclasses, a millisecond each to make on Python 3.11) is not imported
    @property
    def engines(self) -> dict[str, EngineSpec]:
        """The engines jobs can name: the built-in ones, with aq.yaml's `engines:` over them."""
        from aq.infra.engines import DEFAULT_ENGINES

        return {**DEFAULT_ENGINES, **self.engine_settings}

    @property
    def trackers(self) -> TrackerSettings:
        """The trackers' settings (aq.yaml `trackers:`, else the defaults)."""
        if self.tracker_settings is not None:
            return self.tracker_settings
        from aq.trackers.settings import TrackerSettings

        return TrackerSettings()

    @property
    def alerts(self) -> AlertRules:
        """When a trouble is worth telling (aq.yaml `alerts:`, else the defaults)."""
        if self.alert_rules is not None:
            return self.alert_rules
        from aq.core.alert_rules import AlertRules

        return AlertRules()

    def review_for(self, manifest: Manifest) -> ReviewGate | None:
        """The job's review gate: its own (or its profile's), else aq.yaml's. A review job is
        never reviewed itself, nor is a sample (its job is, once one of its samples won)."""
        from aq.core.review import REVIEW_KEY  # the review use-case's: no listing needs it
        from aq.core.samples import SAMPLE_KEY

        if manifest.idempotency_key and manifest.idempotency_key.startswith((REVIEW_KEY,
                                                                             SAMPLE_KEY)):
            return None
        return manifest.review or self.review

    def repo_for(self, manifest: Manifest) -> str | None:
        return manifest.repo or self.repo

    def base_for(self, manifest: Manifest) -> str | None:
        return manifest.base or self.base

    def ship_for(self, manifest: Manifest) -> str:
        return manifest.ship or self.ship

    def workspaces_root(self, queue_key: str) -> Path:
        """One queue's worktrees on this machine; beside it, the repo caches all queues share."""
        from aq.infra.repos import default_root  # lazily: worktree plumbing, not for `aq ls`

        top = Path(self.workspaces_dir).expanduser() if self.workspaces_dir else default_root()
        return top / queue_key

    def retry_rule(self, manifest: Manifest) -> RetryRule:
        from aq.core.decisions import RetryRule  # a worker's: no listing decides anything

        policy = manifest.retry
        return RetryRule(
            max=policy.max if policy and policy.max is not None else self.retry_max,
            backoff=policy.backoff if policy and policy.backoff is not None else self.retry_backoff,
            on=frozenset(policy.on) if policy and policy.on is not None else self.retry_on,
        )

    def engine_for(self, manifest: Manifest) -> str:
        return manifest.engine or self.default_engine

    def timeout_for(self, manifest: Manifest) -> float:
        return manifest.timeout or self.timeout


def load_config(root: Path, cache_dir: Path | None = None) -> QueueConfig:
    """aq.yaml parsed; with `cache_dir`, a warm run reuses the parse while the file is unchanged."""
    path = root / CONFIG_NAME
    try:
        stat = path.lstat()  # a link is refused, never followed (DESIGN §5)
    except FileNotFoundError:
        return QueueConfig()
    refused = describe(CONFIG_NAME, stat.st_mode)
    if refused is not None:
        raise ConfigError(refused)
    if cache_dir is None:
        return _read_config(path)
    cache = StatCache(cache_dir / "config.pickle", _CACHE_VERSION)
    cached = cache.load(signature(stat))
    if isinstance(cached, QueueConfig):
        return cached
    config = _read_config(path)
    cache.save(signature(stat), config)
    return config


_CACHE_VERSION = 14  # bumped when QueueConfig's fields change (an old pickle lacks the new ones)
# or when the same aq.yaml would now parse otherwise


def _read_config(path: Path) -> QueueConfig:
    import yaml  # lazily: a warm run reuses the cached parse and loads no YAML parser

    from aq.core.yamltext import load_yaml

    try:
        data = read_regular(path, CONFIG_NAME)
        raw = load_yaml(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                          f"{err.start}): save it as UTF-8") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {getattr(err, 'problem', err)}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    return parse_config(raw or {}, str(path))


def _engines(raw: object, source: str) -> dict[str, EngineSpec]:
    """aq.yaml's `engines:` entries, each over the built-in engine of its name if any."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key 'engines': expected a mapping of engine names")
    if not raw:
        return {}
    # lazily: only when aq.yaml is parsed; a warm command unpickles the config instead
    from aq.infra.engines import DEFAULT_ENGINES, engine_from_config
    from aq.infra.usage.registry import READERS

    return {str(name): engine_from_config(str(name), spec, DEFAULT_ENGINES.get(str(name)),
                                          frozenset(READERS))
            for name, spec in raw.items()}


def parse_config(raw: Any, source: str = CONFIG_NAME) -> QueueConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of keys such as 'timeout: 1h'")
    for key in raw:
        if key not in _KNOWN:
            import difflib  # only for a misspelt key

            close = difflib.get_close_matches(str(key), _KNOWN, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
    values: dict[str, Any] = {}

    def take(key: str, parse: Any, attr: str | None = None) -> None:
        if raw.get(key) is not None:
            try:
                values[attr or key] = parse(raw[key])
            except ValueError as err:
                raise ConfigError(f"{source}: key '{key}': {err}") from None

    for key in ("kill_grace", "prefer_window", "log_retention", "archive_after"):
        take(key, parse_duration)
    for key in ("timeout", "lease_ttl", "heartbeat_interval", "poll"):  # 0: every job times out,
        take(key, parse_positive_duration)  # or a worker spins
    for key in ("log_max", "artifact_max"):
        take(key, parse_size)
    take("max_reclaims", _positive_int)
    take("default_engine", _text)
    take("remote", _text)
    retry = raw.get("retry") or {}
    if not isinstance(retry, dict):
        raise ConfigError(f"{source}: key 'retry': expected {{max: 0, backoff: 5m, on: [...]}}")
    take_retry = {"max": ("retry_max", _count), "backoff": ("retry_backoff", parse_duration),
                  "on": ("retry_on", _retry_on)}
    for key, value in retry.items():
        if key not in take_retry:
            raise ConfigError(f"{source}: unknown key 'retry.{key}'; known: max, backoff, on")
        attr, parse = take_retry[key]
        try:
            values[attr] = parse(value)
        except ValueError as err:
            raise ConfigError(f"{source}: key 'retry.{key}': {err}") from None
    values["engine_classes"] = _engine_classes(raw.get("engine_classes"), source)
    take("repo", _text)
    take("base", _text)
    take("workspaces_dir", _text)
    take("ship", _ship_mode)
    take("review", review_gate)
    values["engine_settings"] = _engines(raw.get("engines") or {}, source)
    if raw.get("prices"):
        from aq.core.prices import parse_prices

        values["prices"] = parse_prices(raw["prices"], f"{source}: prices")
    values.update(_queue_budget(raw.get("budget"), source))
    if raw.get("push_budget") is not None:
        values["push_budget"] = _push_budget(raw["push_budget"], source)
    try:
        values.update(_sections(raw, source))
    except ValueError as err:
        raise ConfigError(f"{source}: {err}") from None
    return QueueConfig(**values)


def _sections(raw: dict[Any, Any], source: str) -> dict[str, object]:
    """The trackers, hooks and alerts sections aq.yaml has (each parsed by its own module)."""
    values: dict[str, object] = {}
    if raw.get("trackers") is not None:
        from aq.trackers.settings import parse_settings

        values["tracker_settings"] = parse_settings(raw["trackers"], source)
    if raw.get("hooks") is not None:
        from aq.infra.hooks import parse_hooks

        values["hooks"] = parse_hooks(raw["hooks"])
    if raw.get("alerts") is not None:
        from aq.core.alert_rules import parse_alert_rules

        values["alert_rules"] = parse_alert_rules(raw["alerts"])
    return values


def _queue_budget(raw: object, source: str) -> dict[str, object]:
    """`budget: {usd_per_day: 50, tokens_per_day: 20M}`: what the whole queue may spend a day."""
    if raw is None:
        return {}
    example = "expected {usd_per_day: 50, tokens_per_day: 20M}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key 'budget': {example}")
    values: dict[str, object] = {}
    for key, item in raw.items():
        try:
            if key == "usd_per_day":
                values["budget_usd_per_day"] = parse_money(item)
            elif key == "tokens_per_day":
                values["budget_tokens_per_day"] = parse_size(item)
            else:
                raise ConfigError(f"{source}: unknown key 'budget.{key}'; known: usd_per_day, tokens_per_day")
        except ValueError as err:
            raise ConfigError(f"{source}: key 'budget.{key}': {err}") from None
    return values


def _push_budget(raw: object, source: str) -> PushBudget:
    """`push_budget: {per_minute: 6}`, or `{pushes: 6, per: 1m}`: the fleet's pushes allowed in
    any such window."""
    example = "expected {per_minute: 6} or {pushes: 6, per: 1m}"
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f"{source}: key 'push_budget': {example}")
    known = ("per_minute", "pushes", "per")
    for key in raw:
        if key not in known:
            raise ConfigError(f"{source}: unknown key 'push_budget.{key}'; known: {', '.join(known)}")
    count = raw.get("per_minute", raw.get("pushes"))
    if ("per_minute" in raw) == ("pushes" in raw) or isinstance(count, bool) \
            or not isinstance(count, int) or count < 1:
        raise ConfigError(f"{source}: key 'push_budget': a whole number of pushes of 1 or more "
                          f"as per_minute or pushes; {example}")
    try:
        per = 60.0 if "per_minute" in raw else parse_duration(raw.get("per", "1m"))
    except ValueError as err:
        raise ConfigError(f"{source}: key 'push_budget.per': {err}") from None
    if per <= 0:
        raise ConfigError(f"{source}: key 'push_budget.per': a window longer than 0s; {example}")
    from aq.store.pacer import PushBudget

    return PushBudget(count, per)


def _ship_mode(value: object) -> str:
    return _ship(value)


def _engine_classes(raw: object, source: str) -> dict[str, tuple[str, ...]]:
    classes = dict(DEFAULT_CLASSES)
    if raw is None:
        return classes
    example = "expected a mapping such as 'coding-agent: [claude, codex]'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: key 'engine_classes': {example}")
    for name, engines in raw.items():
        if not isinstance(engines, list) or not all(isinstance(e, str) and e for e in engines):
            raise ConfigError(f"{source}: key 'engine_classes.{name}': {example}")
        classes[str(name)] = tuple(engines)
    return classes


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{value!r} is not a whole number of 1 or more")
    return value


def _count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{value!r} is not a whole number of 0 or more")
    return value


def _retry_on(value: object) -> frozenset[str]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ValueError(f"{value!r} is not a list of outcomes")
    outcomes = frozenset(str(item).strip() for item in items)
    unknown = outcomes - set(RETRY_ON)
    if unknown:
        raise ValueError(f"{sorted(unknown)[0]!r} is not an outcome; expected some of {', '.join(RETRY_ON)}")
    return outcomes
