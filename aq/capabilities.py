"""What this machine offers: `os:`, `arch:`, `engine:<name>` for each installed engine, `has:<tool>`.

Profiles and capability matching with versions grow from here (issue 4); tags come from
`aq run --cap TAG`.
"""

from __future__ import annotations

import platform
import shutil
import sys
from collections.abc import Iterable

from aq.config import QueueConfig

PROBED_TOOLS = ("git", "docker", "node", "npm", "python3", "gh", "go", "cargo", "make")


def probe(config: QueueConfig, tags: Iterable[str] = ()) -> frozenset[str]:
    os_name = {"linux": "linux", "darwin": "mac", "win32": "windows"}.get(sys.platform, sys.platform)
    arch = platform.machine().lower().replace("amd64", "x86_64").replace("aarch64", "arm64")
    caps = {f"os:{os_name}", f"arch:{arch}"}
    for name, spec in config.engines.items():
        if spec.cmd and shutil.which(spec.cmd[0]):
            caps.add(f"engine:{name}")
    caps.update(f"has:{tool}" for tool in PROBED_TOOLS if shutil.which(tool))
    if shutil.which("nvidia-smi"):
        caps.add("gpu")
    caps.update(tag.strip() for tag in tags if tag.strip())
    return frozenset(caps)
