"""What this worker offers, probed once at start (DESIGN §2, §4).

`os:linux|mac|windows`, `arch:x86_64|arm64`, `engine:<name>` for each engine whose command is
installed, `has:<tool>` for tools on PATH, `<tool>=<version>` for the versions that
`aq.core.requirements` compares (`node=20.11.1`, `python=3.11.4`), `gpu` when nvidia-smi works,
`has:xcode` when Xcode answers, plus tags from `aq run --cap TAG` and from the worker config file
(`~/.config/aq/worker.yaml`: `capabilities: [tag, ...]`).
"""

from __future__ import annotations

import difflib
import json
import os
import platform
import shutil
import sys
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aq.core.requirements import check_tag, cli_tags, version_in
from aq.errors import ConfigError
from aq.infra import proc
from aq.infra.engines import EngineSpec

PROBED_TOOLS = ("git", "docker", "node", "npm", "python3", "gh", "go", "cargo", "make")
# How each tool tells its version, and the `<name>=` tags that version is reported under.
VERSION_COMMANDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "node": (("--version",), ("node",)),
    "npm": (("--version",), ("npm",)),
    "python3": (("--version",), ("python3", "python")),
    "git": (("--version",), ("git",)),
    "go": (("version",), ("go",)),  # `go --version` is an error
    "docker": (("--version",), ("docker",)),
    "gh": (("--version",), ("gh",)),
    "cargo": (("--version",), ("cargo",)),
}
PROBE_TIMEOUT = 5.0
WORKER_CONFIG_KEYS = ("capabilities",)


def probe(
    engines: Mapping[str, EngineSpec],
    tags: Iterable[str] = (),
    *,
    path: str | None = None,
    config_file: Path | None = None,
    os_name: str | None = None,
    versions: Iterable[str] | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> frozenset[str]:
    """This worker's capabilities: the probed ones (an `engine:NAME` for each of `engines` whose
    command is on PATH), the worker config file's tags and `tags`.

    `path` is the PATH searched (default: ours); `config_file` the worker config file (default:
    `worker_config_path()`, where a missing file means no tags); `os_name` overrides the probed
    os (`linux`, `mac`, `windows`). `versions` limits version probing to those tool names
    (a command that only checks jobs can pass the tools their requirements compare, see
    `aq.core.requirements.tools_compared`; npm alone takes a few hundred ms); None probes all.
    A tool that fails or does not answer within `timeout` seconds is reported without a version.
    """
    declared = [*_file_tags(config_file), *cli_tags(tags)]  # a bad tag fails before any probing
    search = os.environ.get("PATH", os.defpath) if path is None else path
    os_name = os_name or _os_name()
    caps = {f"os:{os_name}", f"arch:{_arch()}", *declared}
    for name, spec in engines.items():
        if spec.cmd and shutil.which(spec.cmd[0], path=search):
            caps.add(f"engine:{name}")
    found = {tool: exe for tool in PROBED_TOOLS if (exe := shutil.which(tool, path=search))}
    caps.update(f"has:{tool}" for tool in found)
    wanted = None if versions is None else frozenset(versions)
    caps.update(_probe_commands(found, search, os_name, wanted, timeout))
    return frozenset(caps)


def describe(caps: Iterable[str]) -> list[str]:
    """Capabilities in display order: os, arch, engines, tools, gpu, versions, then other tags."""
    order = ("os:", "arch:", "engine:", "has:")

    def key(cap: str) -> tuple[int, str]:
        for rank, prefix in enumerate(order):
            if cap.startswith(prefix):
                return rank, cap
        if cap == "gpu":
            return len(order), cap
        return (len(order) + 1 if "=" in cap else len(order) + 2), cap

    return sorted(set(caps), key=key)


def worker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """Where the worker config file is: `$AQ_WORKER_CONFIG`, else `$XDG_CONFIG_HOME/aq/worker.yaml`,
    else `~/.config/aq/worker.yaml`."""
    env = os.environ if environ is None else environ
    if env.get("AQ_WORKER_CONFIG"):
        return Path(env["AQ_WORKER_CONFIG"]).expanduser()
    xdg = env.get("XDG_CONFIG_HOME", "")
    if xdg and os.path.isabs(xdg):  # the XDG spec says a relative value is to be ignored
        return Path(xdg) / "aq" / "worker.yaml"
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    return home / ".config" / "aq" / "worker.yaml"


def worker_tags(config_file: Path, *, required: bool = False) -> tuple[str, ...]:
    """The `capabilities:` tags of a worker config file; none when it does not exist (unless
    `required`). A file that cannot be used raises ConfigError naming it and what to fix."""
    try:
        text = config_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{config_file}: no such worker config file (named by "
                              f"AQ_WORKER_CONFIG); create it or unset AQ_WORKER_CONFIG") from None
        return ()
    except OSError as err:
        raise ConfigError(f"{config_file}: cannot read: {err.strerror or err}") from None
    # lazily, and only for a file that exists: most machines have none, and a worker's start
    # then loads no YAML parser (11 ms)
    import yaml

    from aq.core.yamltext import load_yaml

    try:
        raw = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{config_file}: not valid YAML: {getattr(err, 'problem', None) or err}; "
                          f"expected 'capabilities: [gpu, has:docker]'") from None
    return _parse_worker_config(raw or {}, str(config_file))


def _parse_worker_config(raw: object, source: str) -> tuple[str, ...]:
    example = "expected 'capabilities: [gpu, has:docker]'"
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {example}")
    for key in raw:
        if key not in WORKER_CONFIG_KEYS:
            close = difflib.get_close_matches(str(key), WORKER_CONFIG_KEYS, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f"; {example}"
            raise ConfigError(f"{source}: unknown key '{key}'{hint}")
    items = raw.get("capabilities") or []
    if not isinstance(items, list):
        raise ConfigError(f"{source}: key 'capabilities': {example}")
    tags = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{source}: key 'capabilities': {item!r} is not a tag; write tags "
                              f"as words such as gpu or has:docker")
        problem = check_tag(item)
        if problem:
            raise ConfigError(f"{source}: key 'capabilities': {problem}")
        tags.append(item.strip())
    return tuple(tags)


def _file_tags(config_file: Path | None) -> tuple[str, ...]:
    if config_file is not None:
        return worker_tags(config_file)
    return worker_tags(worker_config_path(), required=bool(os.environ.get("AQ_WORKER_CONFIG")))


def _probe_commands(found: Mapping[str, str], search: str, os_name: str,
                    wanted: frozenset[str] | None, timeout: float) -> set[str]:
    """Version tags, `gpu` and `has:xcode`, from commands run side by side (a start stays fast)."""
    checks: list[tuple[list[str], tuple[str, ...], str | None]] = []
    caps: set[str] = set()
    for tool, exe in found.items():
        args, names = VERSION_COMMANDS.get(tool, ((), ()))
        if not names or (wanted is not None and wanted.isdisjoint(names)):
            continue
        if tool == "npm" and (version := _npm_version(exe)):
            caps.update(f"{name}={version}" for name in names)
        else:
            checks.append(([exe, *args], names, None))
    if nvidia := shutil.which("nvidia-smi", path=search):
        checks.append(([nvidia], (), "gpu"))
    if os_name == "mac" and (xcodebuild := shutil.which("xcodebuild", path=search)):
        # /usr/bin/xcodebuild is a stub that fails when only the command line tools are installed.
        checks.append(([xcodebuild, "-version"], ("xcode",), "has:xcode"))
    if not checks:
        return caps
    env = proc.clean_env({"PATH": search})
    with ThreadPoolExecutor(max_workers=min(8, len(checks)), thread_name_prefix="probe") as pool:
        outputs = pool.map(lambda check: _answer(check[0], env, timeout), checks)
        for (_, names, tag), output in zip(checks, outputs, strict=True):
            if output is None:
                continue
            if tag:
                caps.add(tag)
            version = version_in(output)
            if version:
                caps.update(f"{name}={version}" for name in names)
    return caps


def _npm_version(exe: str) -> str | None:
    """npm's version from the package.json of the install its command leads to (what `npm
    --version` prints), read rather than asked: npm is a node program, and starting it costs
    about 0.2 s of CPU at every worker's start. None where the command leads to no such file
    (a version manager's shim, npm.cmd): npm is then asked."""
    real = Path(os.path.realpath(exe))  # <prefix>/lib/node_modules/npm/bin/npm-cli.js
    for folder in (real.parent.parent, real.parent):
        try:
            data = json.loads((folder / "package.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("name") == "npm":
            return version_in(str(data.get("version", "")))
    return None


def _answer(argv: list[str], env: Mapping[str, str], timeout: float) -> str | None:
    """What `argv` prints when it exits 0 within `timeout` seconds; None otherwise. (proc.run
    kills the whole process group at the timeout: a hanging version-manager shim leaves no
    child behind.)"""
    try:
        done = proc.run(argv, env=env, timeout=timeout)
    except OSError:
        return None
    return done.stdout + done.stderr if done.returncode == 0 else None


def _os_name() -> str:
    return {"linux": "linux", "darwin": "mac", "win32": "windows"}.get(sys.platform, sys.platform)


def _arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64", "armv8": "arm64"}.get(machine, machine)
