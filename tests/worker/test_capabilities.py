"""Worker capabilities: real probing of fake tools on a PATH of our own, and the worker config file."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from aq.errors import ConfigError, UsageError
from aq.infra.probe import describe, probe, worker_config_path, worker_tags
from aq.store.config import QueueConfig, parse_config
from tests.helpers.processes import wait_dead

SLEEP = shutil.which("sleep") or "/bin/sleep"


def tool(bin_dir: Path, name: str, script: str) -> Path:
    """An executable `name` in `bin_dir` running `script` under /bin/sh."""
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)
    return path


def prints(bin_dir: Path, name: str, output: str, code: int = 0) -> Path:
    return tool(bin_dir, name, f"printf '%s\\n' '{output}'\nexit {code}")


def caps_of(bin_dir: Path, tmp_path: Path, **options: object) -> frozenset[str]:
    """`probe` with only `bin_dir` on PATH and no worker config file."""
    options.setdefault("config_file", tmp_path / "no-worker.yaml")
    return probe(QueueConfig().engines, path=str(bin_dir), **options)  # type: ignore[arg-type]


def without_arch(caps: frozenset[str]) -> set[str]:
    assert len([cap for cap in caps if cap.startswith("arch:")]) == 1
    return {cap for cap in caps if not cap.startswith("arch:")}


def test_probes_tools_versions_engines_and_gpu(tmp_path: Path) -> None:
    """Each tool on PATH gives has:<tool> and its version; an installed engine and a working nvidia-smi show."""
    bin_dir = tmp_path / "bin"
    prints(bin_dir, "node", "v20.11.1")
    prints(bin_dir, "git", "git version 2.39.2.windows.1")
    prints(bin_dir, "python3", "Python 3.11.4")
    prints(bin_dir, "cargo", "cargo 1.75.0 (1d8b05cdd 2023-11-20)")
    tool(bin_dir, "go", 'if [ "$1" = version ]; then echo "go version go1.22.1 linux/amd64"; '
                        'else echo "flag provided but not defined: $1" >&2; exit 2; fi')
    prints(bin_dir, "nvidia-smi", "GPU 0: Tesla T4")
    prints(bin_dir, "claude", "")
    caps = caps_of(bin_dir, tmp_path, os_name="linux")
    assert without_arch(caps) == {
        "os:linux", "engine:claude", "gpu",
        "has:node", "node=20.11.1", "has:git", "git=2.39.2",
        "has:python3", "python3=3.11.4", "python=3.11.4",
        "has:cargo", "cargo=1.75.0", "has:go", "go=1.22.1",
    }


def test_npm_s_version_is_read_from_its_install_not_asked(tmp_path: Path) -> None:
    """npm's command leads to its install (a link to lib/node_modules/npm/bin/npm-cli.js): its
    version is read from the package.json there, not asked of npm (a node program, slow to
    start); a command that leads to no npm install (a shim) is asked as any tool is."""
    install = tmp_path / "lib" / "node_modules" / "npm"
    (install / "bin").mkdir(parents=True)
    script = tool(install / "bin", "npm-cli.js", "exit 1")  # asked, it would give no version
    (install / "package.json").write_text('{"name": "npm", "version": "10.8.2"}')
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "npm").symlink_to(script)
    assert {"has:npm", "npm=10.8.2"} <= caps_of(bin_dir, tmp_path)
    (bin_dir / "npm").unlink()
    prints(bin_dir, "npm", "9.1.0")
    assert {"has:npm", "npm=9.1.0"} <= caps_of(bin_dir, tmp_path)


def test_an_empty_path_gives_only_os_and_arch(tmp_path: Path) -> None:
    """With nothing installed a worker reports its os and arch alone."""
    (tmp_path / "bin").mkdir()
    caps = caps_of(tmp_path / "bin", tmp_path, os_name="linux")
    assert without_arch(caps) == {"os:linux"}
    assert "os:linux" in probe(QueueConfig().engines, path="", config_file=tmp_path / "none.yaml",
                               os_name="linux")


def test_a_failing_nvidia_smi_is_no_gpu(tmp_path: Path) -> None:
    """nvidia-smi on PATH that exits non-zero (no driver) does not make a gpu worker."""
    bin_dir = tmp_path / "bin"
    prints(bin_dir, "nvidia-smi", "NVIDIA-SMI has failed because it couldn't communicate", code=9)
    assert "gpu" not in caps_of(bin_dir, tmp_path)


def test_garbage_or_failing_version_output_gives_no_version(tmp_path: Path) -> None:
    """A tool printing no version, or failing, is still present but reports no version."""
    bin_dir = tmp_path / "bin"
    prints(bin_dir, "docker", "lorem ipsum 42 dolor")
    prints(bin_dir, "gh", "gh version 2.40.1 (2023-12-13)", code=3)
    tool(bin_dir, "npm", r"printf '\377\376\001not a version\000'")
    caps = caps_of(bin_dir, tmp_path)
    assert {"has:docker", "has:gh", "has:npm"} <= caps
    assert not [cap for cap in caps if cap.startswith(("docker=", "gh=", "npm="))]


def test_a_hanging_tool_is_given_up_on_with_its_children(tmp_path: Path) -> None:
    """A tool whose --version hangs costs at most the timeout and leaves no process behind."""
    bin_dir = tmp_path / "bin"
    pid_file = tmp_path / "sleep.pid"
    tool(bin_dir, "npm", f"{SLEEP} 30 &\necho $! > {pid_file}\nwait")
    prints(bin_dir, "node", "v22.1.0")
    started = time.monotonic()
    caps = caps_of(bin_dir, tmp_path, timeout=1.0)
    assert time.monotonic() - started < 15  # far under the 30 s the tool would take
    assert {"has:npm", "has:node", "node=22.1.0"} <= caps
    assert not [cap for cap in caps if cap.startswith("npm=")]
    assert wait_dead(int(pid_file.read_text()))


def test_versions_limits_which_versions_are_probed(tmp_path: Path) -> None:
    """Asked for python's version only, probe runs python3 and no other version command."""
    bin_dir = tmp_path / "bin"
    marker = tmp_path / "node-ran"
    tool(bin_dir, "node", f"touch {marker}\necho v20.1.0")
    prints(bin_dir, "python3", "Python 3.12.1")
    caps = caps_of(bin_dir, tmp_path, versions=["python"])
    assert {"has:node", "has:python3", "python=3.12.1", "python3=3.12.1"} <= caps
    assert not marker.exists()
    assert not [cap for cap in caps if cap.startswith("node=")]


def test_engines_from_aq_yaml_are_probed_by_their_command(tmp_path: Path) -> None:
    """An engine defined in aq.yaml shows as engine:<name> when its command is on PATH."""
    bin_dir = tmp_path / "bin"
    prints(bin_dir, "my-agent", "")
    config = parse_config({"engines": {"mine": {"cmd": ["my-agent", "--", "{prompt}"]}}})
    caps = probe(config.engines, path=str(bin_dir), config_file=tmp_path / "none.yaml")
    assert "engine:mine" in caps
    assert not [cap for cap in caps if cap.startswith("engine:") and cap != "engine:mine"]


def test_xcode_is_probed_on_mac_only_and_only_when_it_answers(tmp_path: Path) -> None:
    """has:xcode and xcode=<version> come from a working xcodebuild on a mac, not from its stub."""
    bin_dir = tmp_path / "bin"
    prints(bin_dir, "xcodebuild", "Xcode 15.2\nBuild version 15C500")
    mac = caps_of(bin_dir, tmp_path, os_name="mac")
    assert {"os:mac", "has:xcode", "xcode=15.2"} <= mac
    assert "has:xcode" not in caps_of(bin_dir, tmp_path, os_name="linux")
    prints(bin_dir, "xcodebuild", "xcode-select: error: tool 'xcodebuild' requires Xcode", code=1)
    assert "has:xcode" not in caps_of(bin_dir, tmp_path, os_name="mac")


# --- tags: --cap and the worker config file -------------------------------------------------------


def test_cap_tags_are_added_trimmed_and_empty_ones_skipped(tmp_path: Path) -> None:
    """`aq run --cap TAG` adds each tag as given, without surrounding spaces; an empty one is ignored."""
    caps = caps_of(tmp_path / "bin", tmp_path, tags=["fast-disk", " region=eu ", "", "node=20.0"])
    assert {"fast-disk", "region=eu", "node=20.0"} <= caps
    assert "" not in caps


@pytest.mark.parametrize("tag", ["node>=20", "has docker", "!gpu", "a,b"])
def test_a_malformed_cap_tag_is_a_usage_error(tmp_path: Path, tag: str) -> None:
    """A --cap that is a requirement, a list or a negation is refused with one line naming it."""
    with pytest.raises(UsageError) as caught:
        caps_of(tmp_path / "bin", tmp_path, tags=[tag])
    assert str(caught.value).startswith("--cap: ")
    assert repr(tag) in str(caught.value)


def test_worker_yaml_tags_are_added(tmp_path: Path) -> None:
    """The worker config file's `capabilities:` list joins the probed capabilities."""
    config_file = tmp_path / "worker.yaml"
    config_file.write_text("capabilities: [has:cuda-12, region=eu, node=20.11.1]\n")
    caps = caps_of(tmp_path / "bin", tmp_path, config_file=config_file, tags=["extra"])
    assert {"has:cuda-12", "region=eu", "node=20.11.1", "extra"} <= caps


@pytest.mark.parametrize("text", ["", "capabilities:\n", "capabilities: []\n", "# nothing yet\n"])
def test_an_empty_worker_yaml_adds_nothing(tmp_path: Path, text: str) -> None:
    """An empty worker config file, or one with no tags, adds no tags."""
    config_file = tmp_path / "worker.yaml"
    config_file.write_text(text)
    assert worker_tags(config_file) == ()


def test_a_missing_worker_yaml_adds_nothing(tmp_path: Path) -> None:
    """Without a worker config file a worker has only its probed capabilities."""
    assert worker_tags(tmp_path / "absent.yaml") == ()


@pytest.mark.parametrize(("text", "said"), [
    ("capabilities: [gpu\n", "not valid YAML"),
    ("- gpu\n- has:docker\n", "expected 'capabilities: [gpu, has:docker]'"),
    ("capabilties: [gpu]\n", "unknown key 'capabilties' (did you mean 'capabilities'?)"),
    ("tags: [gpu]\n", "unknown key 'tags'"),
    ("capabilities: gpu\n", "key 'capabilities': expected"),
    ("capabilities: [gpu, 3]\n", "3 is not a tag"),
    ("capabilities: [{gpu: 1}]\n", "is not a tag"),
    ("capabilities: ['node>=20']\n", "is a requirement, not a tag"),
    ("capabilities: ['has docker']\n", "holds a space"),
])
def test_a_malformed_worker_yaml_is_one_config_error_naming_the_file(
        tmp_path: Path, text: str, said: str) -> None:
    """A worker config file that cannot be used stops probing with one line: the file and what to fix."""
    config_file = tmp_path / "worker.yaml"
    config_file.write_text(text)
    with pytest.raises(ConfigError) as caught:
        caps_of(tmp_path / "bin", tmp_path, config_file=config_file)
    message = str(caught.value)
    assert message.startswith(f"{config_file}: ")
    assert said in message
    assert "\n" not in message


def test_the_worker_yaml_path_follows_the_environment(tmp_path: Path) -> None:
    """AQ_WORKER_CONFIG wins, then an absolute XDG_CONFIG_HOME, then ~/.config."""
    home = str(tmp_path)
    assert worker_config_path({"HOME": home}) == tmp_path / ".config/aq/worker.yaml"
    assert worker_config_path({"HOME": home, "XDG_CONFIG_HOME": "/etc/xdg"}) == Path(
        "/etc/xdg/aq/worker.yaml")
    assert worker_config_path({"HOME": home, "XDG_CONFIG_HOME": "relative"}) == (
        tmp_path / ".config/aq/worker.yaml")
    assert worker_config_path({"HOME": home, "XDG_CONFIG_HOME": "/etc/xdg",
                               "AQ_WORKER_CONFIG": "/srv/w.yaml"}) == Path("/srv/w.yaml")
    assert worker_config_path({"HOME": home, "AQ_WORKER_CONFIG": ""}) == (
        tmp_path / ".config/aq/worker.yaml")


def test_probe_reads_the_default_worker_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without config_file, probe reads the worker config file the environment points to."""
    for key in ("AQ_WORKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    default = tmp_path / ".config" / "aq" / "worker.yaml"
    default.parent.mkdir(parents=True)
    default.write_text("capabilities: [from-home]\n")
    assert "from-home" in probe(QueueConfig().engines, path="")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "aq").mkdir(parents=True)
    (tmp_path / "xdg" / "aq" / "worker.yaml").write_text("capabilities: [from-xdg]\n")
    caps = probe(QueueConfig().engines, path="")
    assert "from-xdg" in caps
    assert "from-home" not in caps


def test_a_missing_file_named_by_aq_worker_config_is_an_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker config file named explicitly by AQ_WORKER_CONFIG must exist; a typo is not ignored."""
    monkeypatch.setenv("AQ_WORKER_CONFIG", str(tmp_path / "typo.yaml"))
    with pytest.raises(ConfigError, match=r"typo\.yaml: no such worker config file"):
        probe(QueueConfig().engines, path="")
    (tmp_path / "typo.yaml").write_text("capabilities: [named]\n")
    assert "named" in probe(QueueConfig().engines, path="")


def test_describe_orders_capabilities_for_display() -> None:
    """os and arch come first, then engines, tools, gpu, versions and other tags, each sorted."""
    caps = frozenset({"region=eu", "node=20.1.0", "gpu", "has:node", "has:git", "engine:shell",
                      "arch:arm64", "os:mac", "fast", "engine:claude"})
    assert describe(caps) == ["os:mac", "arch:arm64", "engine:claude", "engine:shell", "has:git",
                              "has:node", "gpu", "node=20.1.0", "region=eu", "fast"]
