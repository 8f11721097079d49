"""`aq web`'s start: bad options and an address it cannot serve are one line and an exit code,
never a traceback."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from aq.errors import ExitStatus
from tests.helpers.cli import Ran

Aq = Callable[..., Ran]


def test_a_port_in_use_is_one_line_saying_what_to_do(aq: Aq) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        ran = aq("web", "--port", str(port), timeout=60)
    assert ran.returncode == ExitStatus.USAGE
    assert ran.stderr.startswith(f"aq: cannot serve at 127.0.0.1:{port}: ")
    assert "--port" in ran.stderr and ran.stderr.count("\n") == 1 and "Traceback" not in ran.stderr


@pytest.mark.parametrize(("args", "said"), [
    (("--port", "70000"), "--port 70000 is not a port"),
    (("--every", "0"), "--every 0: give more than 0 seconds and at most a day"),
    (("--every", "1e300"), "--every 1e+300: give more than 0 seconds and at most a day"),
    (("--every", "nan"), "--every nan: give more than 0 seconds"),
    (("--token", "short"), "--token is too short"),
])
def test_bad_options_are_one_line(aq: Aq, args: tuple[str, ...], said: str) -> None:
    ran = aq("web", *args, timeout=60)
    assert ran.returncode == ExitStatus.USAGE and said in ran.stderr, ran.stderr
    assert ran.stderr.count("\n") == 1
