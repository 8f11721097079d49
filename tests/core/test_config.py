"""aq.yaml parsing: every key read the way a person writes it, defaults for the rest, clear errors."""

from __future__ import annotations

import pytest

from aq.core.decisions import RetryRule
from aq.core.manifest import Manifest, RetryPolicy
from aq.core.yamltext import load_yaml
from aq.errors import ConfigError
from aq.infra.engines import DEFAULT_ENGINES, EngineSpec
from aq.store.config import DEFAULT_CONFIG_TEXT, QueueConfig, parse_config

SOURCE = "/q/aq.yaml"


def config_of(text: str) -> QueueConfig:
    return parse_config(load_yaml(text) or {}, SOURCE)


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        config_of(text)
    return str(caught.value)


def test_empty_config_is_all_defaults() -> None:
    """An empty aq.yaml gives the documented defaults and the built-in engines."""
    config = config_of("")
    assert config == QueueConfig()
    assert (config.default_engine, config.timeout, config.retry_max, config.max_reclaims) == ("claude", 3600.0, 0, 3)
    assert set(config.engines) == {"claude", "codex", "gemini", "aider", "copilot", "opencode", "qwen",
                                   "cursor-agent", "amp", "goose", "devin", "shell"}


def test_the_commented_defaults_are_the_defaults() -> None:
    """The aq.yaml that `aq init` writes means exactly the built-in defaults."""
    assert config_of(DEFAULT_CONFIG_TEXT) == QueueConfig()


def test_every_key_is_read() -> None:
    """Each aq.yaml key, written the way a person writes it, lands normalized."""
    config = config_of(
        "default_engine: shell\ntimeout: 2h\nkill_grace: 5s\nlease_ttl: 15m\nheartbeat_interval: 30s\n"
        "poll: 1m\nlog_max: 2MiB\nartifact_max: 50MB\nmax_reclaims: 5\nremote: origin\n"
        "retry: {max: 2, backoff: 1m, on: [timeout, engine_missing]}\n"
    )
    assert config == QueueConfig(
        default_engine="shell", timeout=7200.0, kill_grace=5.0, lease_ttl=900.0, heartbeat_interval=30.0,
        poll=60.0, log_max=2 * 1024**2, artifact_max=50_000_000, max_reclaims=5, remote="origin",
        retry_max=2, retry_backoff=60.0, retry_on=frozenset({"timeout", "engine_missing"}),
    )


def test_retry_on_as_text_is_read() -> None:
    """`retry.on` may be one comma-separated string."""
    assert config_of("retry:\n  on: timeout, verify_failed\n").retry_on == frozenset({"timeout", "verify_failed"})


def test_engines_are_added_and_override_built_ins() -> None:
    """An `engines:` entry adds an engine, or overrides a built-in's fields keeping the rest."""
    config = config_of(
        "engines:\n"
        "  my-agent: {cmd: [my-agent, --task-file, '{prompt_file}'], env: {MODE: 1}}\n"
        "  claude: {cmd: 'claude --print -- {prompt}'}\n"
    )
    assert config.engines["my-agent"] == EngineSpec("my-agent", ("my-agent", "--task-file", "{prompt_file}"),
                                                    env={"MODE": "1"})
    assert config.engines["claude"].cmd == ("claude", "--print", "--", "{prompt}")
    assert config.engines["claude"].input == "prompt"  # its own cmd places the prompt
    assert config.engines["claude"].yolo == DEFAULT_ENGINES["claude"].yolo
    assert config.engines["shell"] == DEFAULT_ENGINES["shell"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("timout: 1h", f"{SOURCE}: unknown key 'timout' (did you mean 'timeout'?)"),
        ("timeout: soon", f"{SOURCE}: key 'timeout': 'soon' is not a duration such as 90s, 45m, 2h or 1h30m"),
        ("lease_ttl: -5", f"{SOURCE}: key 'lease_ttl': -5 is negative; expected a duration such as"),
        ("log_max: huge", f"{SOURCE}: key 'log_max': 'huge' is not a count or size such as"),
        ("max_reclaims: 0", f"{SOURCE}: key 'max_reclaims': 0 is not a whole number of 1 or more"),
        ("max_reclaims: many", f"{SOURCE}: key 'max_reclaims': 'many' is not a whole number of 1 or more"),
        ("retry: [timeout]", f"{SOURCE}: key 'retry': expected {{max: 0, backoff: 5m, on: [...]}}"),
        ("retry: {mx: 2}", f"{SOURCE}: unknown key 'retry.mx'; known: max, backoff, on"),
        ("retry: {max: -1}", f"{SOURCE}: key 'retry.max': -1 is not a whole number of 0 or more"),
        ("retry: {backoff: later}", f"{SOURCE}: key 'retry.backoff': 'later' is not a duration"),
        ("retry: {on: [timeout, crash]}", f"{SOURCE}: key 'retry.on': 'crash' is not an outcome; expected some of"),
        ("engines: [claude]", f"{SOURCE}: key 'engines': expected a mapping of engine names"),
        ("engines: {mine: {cmd: [x], colour: blue}}", "aq.yaml: engines.mine: unknown key 'colour'"),
        ("engines: {mine: {yolo: [--yes]}}", "aq.yaml: engines.mine: needs cmd"),
        ("engines: {mine: {cmd: [x], input: pipe}}",
         "aq.yaml: engines.mine.input: expected one of stdin, prompt, body"),
        ("engines: {mine: {cmd: [x, '{prompt}']}}", "aq.yaml: engines.mine.cmd: a bare {prompt} before '--'"),
        ("engines: {mine: {cmd: [x, '{prompt}'], input: stdin}}",
         "aq.yaml: engines.mine.cmd: a bare {prompt} before '--'"),
        ("engines: {mine: {cmd: [x, --, '{prompt}'], input: stdin}}",
         "aq.yaml: engines.mine: input: stdin feeds the prompt on stdin; drop {prompt} from cmd"),
        ("engines: {mine: {cmd: [x], usage: nope}}", "aq.yaml: engines.mine.usage: 'nope' is not a usage reader"),
        # once passed here, then failed every attempt with a Python error (or passed "None")
        ("engines: {mine: {cmd: [x], env: {'A=B': c}}}",
         "aq.yaml: engines.mine.env: 'A=B' is not an environment variable name"),
        ("engines: {mine: {cmd: [x], env: {A: null}}}", "aq.yaml: engines.mine.env.A: expected text"),
        ('engines: {mine: {cmd: [x], env: {A: "\\0"}}}', "aq.yaml: engines.mine.env.A: expected text"),
        ('engines: {mine: {cmd: [x, "a\\0b"]}}', "aq.yaml: engines.mine.cmd: holds a NUL byte"),
        ("log_max: .inf", f"{SOURCE}: key 'log_max': inf is too large"),
        ("prices: {m1: {input: cheap}}", f"{SOURCE}: prices"),
        ("budget: {usd_per_week: 5}", f"{SOURCE}: unknown key 'budget.usd_per_week'"),
        ("budget: {usd_per_day: lots}", f"{SOURCE}: key 'budget.usd_per_day'"),
        # accepted: an idle worker spun at 74% of a core, every job timed out at once
        ("poll: 0s", f"{SOURCE}: key 'poll': '0s' is not a positive duration"),
        ("timeout: 0s", f"{SOURCE}: key 'timeout': '0s' is not a positive duration"),
        ("lease_ttl: 0", f"{SOURCE}: key 'lease_ttl': 0 is not a positive duration"),
        ("heartbeat_interval: 0s", f"{SOURCE}: key 'heartbeat_interval': '0s' is not a positive"),
        # accepted as the text of a list: aq doctor showed the folder "['a']/..."
        ("workspaces_dir: [a]", f"{SOURCE}: key 'workspaces_dir': ['a'] is not text"),
        ("repo: {url: x}", f"{SOURCE}: key 'repo': {{'url': 'x'}} is not text"),
        ("default_engine: [claude]", f"{SOURCE}: key 'default_engine': ['claude'] is not text"),
    ],
)
def test_bad_config_names_key_value_and_expectation(text: str, expected: str) -> None:
    """A bad aq.yaml value is a ConfigError naming the file, the key, the value and what was expected."""
    assert error_of(text).startswith(expected)


def test_config_that_is_not_a_mapping_is_refused() -> None:
    """An aq.yaml that is a list is refused, naming the file."""
    with pytest.raises(ConfigError, match=r"^/q/aq\.yaml: expected a mapping of keys"):
        parse_config(["timeout", "1h"], SOURCE)


# --- what the config resolves for a job --------------------------------------------------------


def manifest(**fields: object) -> Manifest:
    return Manifest(id="j", title="j", body="do it", **fields)  # type: ignore[arg-type]


def test_job_retry_overrides_the_queue_defaults() -> None:
    """A job's own retry fields win; the ones it leaves out come from aq.yaml."""
    config = config_of("retry: {max: 1, backoff: 10m, on: [timeout]}")
    assert config.retry_rule(manifest(retry=RetryPolicy(max=4, on=("verify_failed",)))) == RetryRule(
        max=4, backoff=600.0, on=frozenset({"verify_failed"}))
    assert config.retry_rule(manifest(retry=RetryPolicy(backoff=5.0))) == RetryRule(
        max=1, backoff=5.0, on=frozenset({"timeout"}))


def test_job_without_retry_takes_the_queue_wide_retry_default() -> None:
    """aq.yaml's `retry:` is the queue-wide default: a job that sets none retries as it says (max 0 as shipped)."""
    assert config_of("retry: {max: 2, backoff: 1m}").retry_rule(manifest()).max == 2
    assert config_of("timeout: 1h").retry_rule(manifest()).max == 0


def test_engine_and_timeout_fall_back_to_the_queue() -> None:
    """A job without engine or timeout gets aq.yaml's; its own win when set."""
    config = config_of("default_engine: shell\ntimeout: 30m")
    assert (config.engine_for(manifest()), config.timeout_for(manifest())) == ("shell", 1800.0)
    assert (config.engine_for(manifest(engine="codex")), config.timeout_for(manifest(timeout=90.0))) == ("codex", 90.0)
